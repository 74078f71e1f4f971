"""Direct (factorisation) solvers: LU, Cholesky and QR (least squares)."""

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from .._core import RESULTS
from ._operator import AbstractLinearOperator
from ._solver import AbstractDirectLinearSolver


def _pivots_singular(diagonal: jax.Array) -> jax.Array:
    """Numerically singular: a pivot below `n * eps` times the largest one (or non-finite)."""
    magnitude = jnp.abs(diagonal)
    eps = jnp.finfo(diagonal.dtype).eps
    threshold = diagonal.shape[0] * eps * jnp.max(magnitude)
    return jnp.any(magnitude <= threshold) | ~jnp.all(jnp.isfinite(diagonal))


def _finish(x: jax.Array, singular: jax.Array):
    singular = singular | ~jnp.all(jnp.isfinite(x))
    result = RESULTS.where(singular, RESULTS.singular, RESULTS.successful)
    return x, result, {"num_steps": jnp.array(0)}


class LU(AbstractDirectLinearSolver):
    """Gaussian elimination with partial pivoting, for square systems.

    Materialises the operator (for a `FunctionOperator`, by one batched application to the
    identity), so it suits small and medium dense problems. A zero or tiny pivot (below
    `n * eps * max|pivot|`) is reported as `RESULTS.singular`.

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    sol = js.linear.solve(A, b, js.linear.LU())
    print(sol.value, sol.stats["num_steps"], A @ sol.value - b)
    ```
    """

    def compute(self, operator: AbstractLinearOperator, vector: jax.Array):
        matrix = operator.as_matrix()
        lu, pivots = jsl.lu_factor(matrix)
        x = jsl.lu_solve((lu, pivots), vector.reshape(-1)).reshape(vector.shape)
        return _finish(x, _pivots_singular(jnp.diagonal(lu)))

    def needs_square(self) -> bool:
        return True


class Cholesky(AbstractDirectLinearSolver):
    """The Cholesky factorisation `A = L L^T`, for symmetric positive definite systems.

    Uses only the lower triangle of `A`. A matrix that is not positive definite (a non-finite
    factor) or is numerically singular is reported as `RESULTS.singular`.

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    op = js.linear.MatrixOperator(A, tags=("symmetric", "positive_definite"))  # Cholesky trusts it
    print(js.linear.solve(op, b, js.linear.Cholesky()).value)
    ```
    """

    def compute(self, operator: AbstractLinearOperator, vector: jax.Array):
        matrix = operator.as_matrix()
        factor = jsl.cholesky(matrix, lower=True)
        x = jsl.cho_solve((factor, True), vector.reshape(-1)).reshape(vector.shape)
        return _finish(x, _pivots_singular(jnp.diagonal(factor) ** 2))

    def needs_square(self) -> bool:
        return True


class QR(AbstractDirectLinearSolver):
    """Householder QR: the least-squares solution `argmin |A x - b|` for tall or square `A`,
    and the minimum-norm solution for wide `A`.

    A rank-deficient matrix (a tiny diagonal entry of R) is reported as `RESULTS.singular`.

    **Example:**

    ```python
    A = jnp.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])  # 3 equations, 2 unknowns
    b = jnp.array([1.0, 2.0, 2.0])
    print(js.linear.solve(A, b, js.linear.QR()).value)  # least squares: [1.1667, 0.5]
    ```
    """

    def compute(self, operator: AbstractLinearOperator, vector: jax.Array):
        matrix = operator.as_matrix()
        rows, cols = matrix.shape
        shape = vector.shape if rows == cols else (cols,)
        vector = vector.reshape(-1)
        if rows >= cols:
            q, r = jnp.linalg.qr(matrix, mode="reduced")
            x = jsl.solve_triangular(r, q.T @ vector, lower=False)
        else:
            # Minimum-norm solution of an under-determined system: x = Q R^{-T} b with A^T = QR.
            q, r = jnp.linalg.qr(matrix.T, mode="reduced")
            x = q @ jsl.solve_triangular(r, vector, lower=False, trans="T")
        return _finish(x.reshape(shape), _pivots_singular(jnp.diagonal(r)))

    def needs_square(self) -> bool:
        return False
