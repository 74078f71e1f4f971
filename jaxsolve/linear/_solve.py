"""`jaxsolve.linear.solve`: the entry point, and how its solution is differentiated."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from .._core import check_floating, check_result
from ._operator import (
    AbstractLinearOperator,
    FunctionOperator,
    MatrixOperator,
    is_symmetric,
)
from ._solver import AbstractLinearSolver, Solution

_WHERE = "jaxsolve.linear.solve"


def as_operator(A: Any, b: Any, tags=()) -> AbstractLinearOperator:
    """Turn what `solve` accepts as `A` into an operator: an operator is kept, a callable
    becomes a `FunctionOperator` on the structure of `b` (a square map), an array a
    `MatrixOperator`."""
    if isinstance(A, AbstractLinearOperator):
        return A
    if callable(A):
        return FunctionOperator(A, b, tags)
    try:
        matrix = jnp.asarray(A)
    except TypeError:
        raise TypeError(
            "`A` must be a matrix, a function v -> A v, or an AbstractLinearOperator; "
            f"got {type(A).__name__}"
        ) from None
    if matrix.ndim != 2:
        raise ValueError(f"`A` must be a 2-D matrix, got an array of shape {matrix.shape}")
    return MatrixOperator(matrix, tags)


def _single_array_operator(operator: AbstractLinearOperator):
    """The operator on single arrays, with functions to and from the structures of b and x.

    An operator on one array whose output has the input's shape is kept as it is (a stencil on
    a 2-D grid stays 2-D: reshaping around every application costs as much as the stencil);
    any other operator is flattened to 1-D vectors.
    """
    in_s, out_s = operator.in_structure(), operator.out_structure()
    single = isinstance(in_s, jax.ShapeDtypeStruct) and isinstance(out_s, jax.ShapeDtypeStruct)
    if isinstance(operator, MatrixOperator) or (single and in_s.shape == out_s.shape):
        return operator, (lambda b: b), (lambda x: x)
    in_zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), in_s)
    in_flat, unravel_in = ravel_pytree(in_zeros)

    def flat_mv(vector):
        return ravel_pytree(operator.mv(unravel_in(vector)))[0]

    flat_op = FunctionOperator(flat_mv, in_flat, operator.tags)
    return flat_op, (lambda b: ravel_pytree(b)[0]), unravel_in


def _validate(operator: AbstractLinearOperator, b: Any, solver: AbstractLinearSolver):
    if not isinstance(solver, AbstractLinearSolver):
        raise TypeError(
            f"`solver` must be a jaxsolve.linear solver (e.g. CG(), LU()), got {type(solver).__name__}"
        )
    check_floating("b", b)
    leaves = jax.tree.leaves(b)
    if not leaves:
        raise ValueError("`b` must contain at least one array")
    out_structure = operator.out_structure()
    if jax.tree.structure(b) != jax.tree.structure(out_structure):
        raise ValueError(
            "`b` must have the pytree structure of the operator's output "
            f"{jax.tree.structure(out_structure)}, got {jax.tree.structure(b)}"
        )
    for leaf, ref in zip(leaves, jax.tree.leaves(out_structure), strict=True):
        if jnp.shape(leaf) != ref.shape:
            raise ValueError(
                f"`b` must have the shape of the operator's output {ref.shape}, "
                f"got {jnp.shape(leaf)}"
            )
    dtypes = {jnp.result_type(x) for x in leaves}
    dtypes |= {s.dtype for s in jax.tree.leaves(operator.in_structure())}
    dtypes |= {s.dtype for s in jax.tree.leaves(out_structure)}
    if len(dtypes) != 1:
        names = ", ".join(sorted(str(d) for d in dtypes))
        raise TypeError(
            f"`A` and `b` must share one floating dtype (no silent casting); got {names}"
        )
    if solver.needs_square() and operator.in_size() != operator.out_size():
        raise ValueError(
            f"`A` must be square for {type(solver).__name__}: it maps {operator.in_size()} "
            f"values to {operator.out_size()}; use QR() for least squares"
        )


def _square_solve(solver, flat_op, b_flat, symmetric: bool, where: str | None = None):
    """`custom_linear_solve` with `solver`. With `where` set, every solve it runs checks its
    own result and raises (under `jit` too) on failure, naming `where`: the primal solve, the
    tangent solves of forward mode (the same function) and the cotangent solves of reverse mode
    (the transpose). Derivative solves run inside JAX's linear-solve rules, where no result
    code can come out, so raising inside them is the only way to report them."""

    def checked(x, result):
        return x if where is None else check_result(x, result, True, where)

    def forward(matvec: Callable, rhs):
        x, result, stats = solver.compute(flat_op, rhs)
        return checked(x, result), (result, stats)

    def backward(vecmat: Callable, rhs):
        x, result, stats = solver.compute(flat_op.transpose(), rhs)
        return checked(x, result), (result, stats)

    # A symmetric operator's transpose solve is the forward solve; pass it explicitly (rather
    # than None) only when it checks, so the unchecked path stays as JAX builds it.
    transpose = backward if not symmetric else (forward if where is not None else None)
    return lax.custom_linear_solve(
        flat_op.mv,
        b_flat,
        forward,
        transpose,
        symmetric=symmetric,
        has_aux=True,
    )


def derivative_solve(A: Any, b: Any, solver: AbstractLinearSolver, where: str) -> Any:
    """Solve the square system `A x = b` as a derivative solve: the value `x` (a pytree like
    `b`), differentiable like `solve`'s, where this solve and every solve its derivatives run
    raise on failure (`linear_solve_failed`, `singular`, `breakdown`, `nonfinite`) with a
    message naming `where`. Used by implicit differentiation, whose tangent and cotangent
    systems are solved inside JAX's differentiation rules, where no result code can be
    returned to the user."""
    operator = as_operator(A, b)
    _validate(operator, b, solver)
    flat_op, to_vector, unravel_in = _single_array_operator(operator)
    x, _ = _square_solve(solver, flat_op, to_vector(b), is_symmetric(operator), where)
    return unravel_in(x)


def _least_squares_solve(solver, flat_op, b_flat):
    # The least-squares solution minimises |A x - b|: it solves the normal equations
    # A^T A x = A^T b, and its derivative is that of those equations (including the
    # residual term dA^T r that a plain square-solve rule would miss). The value itself comes
    # from `solver` on A (no squared condition number); only its tangents use the normal
    # equations, each a solve with the same solver (so never an unrolled loop).
    transposed = flat_op.transpose()
    rows, cols = flat_op.out_size(), flat_op.in_size()
    x_direct, result, stats = solver.compute(flat_op, b_flat)
    if rows >= cols:
        normal = FunctionOperator(lambda v: transposed.mv(flat_op.mv(v)), b_flat[:cols])

        def normal_solve(matvec, rhs):
            # (A^T A)^{-1} c with two solves by the least-squares solver: the minimum-norm
            # y with A^T y = c, then the least-squares x with A x = y.
            y, _, _ = solver.compute(transposed, rhs)
            x, _, _ = solver.compute(flat_op, y)
            return x

        x_tangent = lax.custom_linear_solve(
            normal.mv, transposed.mv(b_flat), normal_solve, symmetric=True
        )
    else:
        gram = FunctionOperator(lambda v: flat_op.mv(transposed.mv(v)), b_flat)

        def gram_solve(matvec, rhs):
            # the minimum-norm y with A y = c, then the least-squares z with A^T z = y.
            y, _, _ = solver.compute(flat_op, rhs)
            z, _, _ = solver.compute(transposed, y)
            return z

        z = lax.custom_linear_solve(gram.mv, b_flat, gram_solve, symmetric=True)
        x_tangent = transposed.mv(z)
    x = lax.stop_gradient(x_direct) + (x_tangent - lax.stop_gradient(x_tangent))
    return x, (result, stats)


def solve(
    A: Any,
    b: Any,
    solver: AbstractLinearSolver | None = None,
    *,
    throw: bool = True,
) -> Solution:
    """Solve the linear system `A x = b` (or least squares `min |A x - b|` with `QR()`).

    The solution is differentiable with respect to `A` (its entries, or the arrays a
    function `A` closes over) and `b`, in forward and reverse mode, as a *solve*: the tangent
    is `A^{-1} (db - dA x)` and the cotangent needs a solve with `A^T`, both with the same
    `solver` (via `jax.lax.custom_linear_solve`). The solver's iterations are never
    differentiated, so gradients cost one extra solve and no memory per iteration. With
    `throw=True` the derivative solves check their own result and raise on failure (a
    cotangent solve with `A^T` that did not converge, a singular `A^T`); with `throw=False`
    nothing is checked.

    **Arguments:**

    - `A`: a 2-D matrix, a linear function `v -> A v` taking pytrees shaped like `b` (a
      square system), or an `AbstractLinearOperator` such as
      `FunctionOperator(fn, input_structure, tags=("positive_definite",))`.
    - `b`: the right-hand side, an array or a pytree of arrays with the operator's output
      structure; one floating dtype shared with `A`.
    - `solver`: an `AbstractLinearSolver`: `LU()`, `Cholesky()`, `QR()`, `CG(...)`,
      `GMRES(...)`, `BiCGStab(...)`, `SOR(omega)`, `SSOR(omega)`, `Auto()`. Default
      `CG(rtol=1e-6, atol=1e-6)`, which requires a symmetric positive definite `A`.
    - `throw`: if True (default), raise (also under `jit`) when the solve fails; if False,
      return the solution with its result code.

    **Returns:** a `Solution` with `value` (shaped like the operator's input), `result`
    (`RESULTS.successful`, `linear_solve_failed` when an iterative solver did not converge
    in `max_steps`, `singular`, `breakdown` or `nonfinite`) and `stats` (`"num_steps"`).

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    x = js.linear.solve(A, b).value  # a matrix
    x = js.linear.solve(lambda v: A @ v, b, js.linear.GMRES(rtol=1e-6, atol=0.0)).value  # a function
    # differentiable in A and b (the tangent and cotangent are solves too)
    print(x, jax.grad(lambda b: js.linear.solve(A, b).value.sum())(b))
    ```
    """
    if solver is None:
        from ._cg import CG

        solver = CG()
    operator = as_operator(A, b)
    _validate(operator, b, solver)
    flat_op, to_vector, unravel_in = _single_array_operator(operator)
    b_flat = to_vector(b)
    if operator.in_size() == operator.out_size():
        where = _WHERE if throw else None
        x, (result, stats) = _square_solve(solver, flat_op, b_flat, is_symmetric(operator), where)
    else:
        x, (result, stats) = _least_squares_solve(solver, flat_op, b_flat)
    solution = Solution(unravel_in(x), result, stats)
    return check_result(solution, result, throw, _WHERE)
