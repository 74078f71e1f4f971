"""Linear operators: what `jaxsolve.linear.solve` inverts.

An operator is a linear map between two pytrees of arrays. A dense matrix is one
(`MatrixOperator`), a matrix-free function `v -> A v` is another (`FunctionOperator`), and a
diagonal is a third (`DiagonalOperator`, handy as a preconditioner). Tags record structure that a
solver may rely on but that is too expensive to check: `"symmetric"` and `"positive_definite"`.
"""

import abc
from collections.abc import Callable, Iterable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

SYMMETRIC = "symmetric"
POSITIVE_DEFINITE = "positive_definite"
_KNOWN_TAGS = (SYMMETRIC, POSITIVE_DEFINITE)


def _check_tags(tags: Iterable[str]) -> frozenset:
    if isinstance(tags, str):
        tags = (tags,)
    tags = frozenset(tags)
    for tag in tags:
        if tag not in _KNOWN_TAGS:
            known = ", ".join(repr(t) for t in _KNOWN_TAGS)
            raise ValueError(f"`tags` may contain only {known}; got {tag!r}")
    if POSITIVE_DEFINITE in tags:
        # Every solver that relies on positive definiteness also relies on symmetry.
        tags = tags | {SYMMETRIC}
    return tags


def _structure(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def _size(structure: Any) -> int:
    return int(sum(np.prod(leaf.shape, dtype=int) for leaf in jax.tree.leaves(structure)))


class AbstractLinearOperator(eqx.Module):
    """A linear map from a pytree of arrays (its *input structure*) to another (its *output
    structure*).

    Subclasses implement `mv`, `in_structure`, `out_structure`, `as_matrix` and `transpose`,
    and carry a `tags` frozenset (a subset of `{"symmetric", "positive_definite"}`) that
    solvers such as `CG` and `Cholesky` rely on without checking.

    **Example:**

    ```python
    class Scaled(js.linear.AbstractLinearOperator):
        scale: jax.Array
        size: int = 3
        tags: frozenset = frozenset({"symmetric", "positive_definite"})

        def mv(self, vector):
            return self.scale * vector

        def in_structure(self):
            return jax.ShapeDtypeStruct((self.size,), self.scale.dtype)

        def out_structure(self):
            return self.in_structure()

        def as_matrix(self):
            return self.scale * jnp.eye(self.size)

        def transpose(self):
            return self


    print(js.linear.solve(Scaled(jnp.array(2.0)), jnp.ones(3), js.linear.CG()).value)  # [0.5]*3
    ```
    """

    tags: eqx.AbstractVar[frozenset]

    @abc.abstractmethod
    def mv(self, vector: Any) -> Any:
        """Apply the operator: `A @ vector`."""

    @abc.abstractmethod
    def in_structure(self) -> Any:
        """The pytree of `jax.ShapeDtypeStruct` that `mv` accepts."""

    @abc.abstractmethod
    def out_structure(self) -> Any:
        """The pytree of `jax.ShapeDtypeStruct` that `mv` returns."""

    @abc.abstractmethod
    def as_matrix(self) -> jax.Array:
        """The dense `(out_size, in_size)` matrix acting on the flattened pytrees."""

    @abc.abstractmethod
    def transpose(self) -> "AbstractLinearOperator":
        """The transposed operator (maps the output structure back to the input one)."""

    def in_size(self) -> int:
        """The number of scalars in the input structure."""
        return _size(self.in_structure())

    def out_size(self) -> int:
        """The number of scalars in the output structure."""
        return _size(self.out_structure())


class MatrixOperator(AbstractLinearOperator):
    """A dense matrix `A` of shape `(m, n)`, acting on 1-D vectors of length `n`.

    **Arguments:**

    - `matrix`: a 2-D floating-point array.
    - `tags`: structure the solver may assume, e.g. `("symmetric", "positive_definite")`.

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    op = js.linear.MatrixOperator(A, tags=("symmetric", "positive_definite"))
    print(op.mv(b), op.in_size())
    print(js.linear.solve(op, b, js.linear.Cholesky()).value)
    ```
    """

    matrix: jax.Array
    tags: frozenset = eqx.field(static=True)

    def __init__(self, matrix: Any, tags: Iterable[str] = ()):
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"`matrix` must be a 2-D array, got shape {matrix.shape}")
        self.matrix = matrix
        self.tags = _check_tags(tags)

    def mv(self, vector):
        return self.matrix @ vector

    def in_structure(self):
        return jax.ShapeDtypeStruct((self.matrix.shape[1],), self.matrix.dtype)

    def out_structure(self):
        return jax.ShapeDtypeStruct((self.matrix.shape[0],), self.matrix.dtype)

    def as_matrix(self):
        return self.matrix

    def transpose(self):
        return MatrixOperator(self.matrix.T, self.tags)


class DiagonalOperator(AbstractLinearOperator):
    """A diagonal matrix, stored as its 1-D diagonal (e.g. a Jacobi preconditioner).

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    jacobi = js.linear.DiagonalOperator(1.0 / jnp.diag(A))  # M^{-1} ~ A^{-1}
    op = js.linear.MatrixOperator(A, tags=("positive_definite",))
    solver = js.linear.CG(rtol=1e-6, atol=0.0, preconditioner=jacobi)
    print(js.linear.solve(op, b, solver).value)
    ```
    """

    diagonal: jax.Array
    tags: frozenset = eqx.field(static=True)

    def __init__(self, diagonal: Any, tags: Iterable[str] = (SYMMETRIC,)):
        diagonal = jnp.asarray(diagonal)
        if diagonal.ndim != 1:
            raise ValueError(f"`diagonal` must be a 1-D array, got shape {diagonal.shape}")
        self.diagonal = diagonal
        self.tags = _check_tags(tags) | {SYMMETRIC}

    def mv(self, vector):
        return self.diagonal * vector

    def in_structure(self):
        return jax.ShapeDtypeStruct(self.diagonal.shape, self.diagonal.dtype)

    def out_structure(self):
        return self.in_structure()

    def as_matrix(self):
        return jnp.diag(self.diagonal)

    def transpose(self):
        return self


class FunctionOperator(AbstractLinearOperator):
    """A matrix-free operator given by a linear function `fn(v) -> A v` on pytrees.

    **Arguments:**

    - `fn`: a linear function of one pytree argument.
    - `input_structure`: an example input (arrays) or a pytree of `jax.ShapeDtypeStruct`.
    - `tags`: structure the solver may assume, e.g. `("symmetric", "positive_definite")`.

    The function's closed-over arrays are part of the operator: `jaxsolve.linear.solve`
    differentiates through them (as a solve, never by unrolling the solver).

    **Example:**

    ```python
    def laplacian(u):  # 1-D Dirichlet Laplacian, matrix-free
        padded = jnp.pad(u, 1)
        return 2 * u - padded[:-2] - padded[2:]


    u0 = jnp.zeros(50)
    op = js.linear.FunctionOperator(laplacian, u0, tags=("symmetric", "positive_definite"))
    sol = js.linear.solve(op, jnp.ones(50), js.linear.CG(rtol=1e-6, atol=0.0))
    print(sol.stats["num_steps"], jnp.max(jnp.abs(laplacian(sol.value) - 1.0)))
    ```
    """

    fn: Callable
    input_structure: Any = eqx.field(static=True)
    tags: frozenset = eqx.field(static=True)

    def __init__(self, fn: Callable, input_structure: Any, tags: Iterable[str] = ()):
        if not callable(fn):
            raise TypeError(f"`fn` must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.input_structure = _structure(input_structure)
        self.tags = _check_tags(tags)

    def mv(self, vector):
        return self.fn(vector)

    def in_structure(self):
        return self.input_structure

    def out_structure(self):
        return jax.eval_shape(self.fn, self.input_structure)

    def as_matrix(self):
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self.input_structure)
        flat, unravel = ravel_pytree(zeros)

        def column(basis_vector):
            return ravel_pytree(self.fn(unravel(basis_vector)))[0]

        # vmap over the identity: one batched application instead of n separate ones.
        eye = jnp.eye(flat.size, dtype=flat.dtype)
        return jax.vmap(column, out_axes=1)(eye)

    def transpose(self):
        out_structure = self.out_structure()
        transposed = jax.linear_transpose(self.fn, self.input_structure)
        return FunctionOperator(lambda v: transposed(v)[0], out_structure, self.tags)


def is_symmetric(operator: AbstractLinearOperator) -> bool:
    """Whether the operator carries the `"symmetric"` tag."""
    return SYMMETRIC in operator.tags


def is_positive_definite(operator: AbstractLinearOperator) -> bool:
    """Whether the operator carries the `"positive_definite"` tag."""
    return POSITIVE_DEFINITE in operator.tags
