"""Successive over-relaxation (SOR) and its symmetric form (SSOR)."""

from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from .._core import hyperparameter, is_concrete
from ._operator import AbstractLinearOperator
from ._solver import AbstractIterativeLinearSolver, converged_result, tolerance, vector_norm


class SORState(NamedTuple):
    x: jax.Array
    matrix: jax.Array
    r_norm: jax.Array
    threshold: jax.Array
    num_steps: jax.Array


def _check_omega(omega):
    if not is_concrete(omega):
        return
    value = float(omega)
    if not 0.0 < value < 2.0:
        raise ValueError(f"`omega` must lie in (0, 2) for SOR to converge, got {value}")


def _sweep(matrix, vector, x, omega, lower: bool):
    # (D + w L) x_new = w b - (w U + (w - 1) D) x: one Gauss-Seidel sweep with relaxation,
    # written as a triangular solve so it vectorises instead of looping over rows.
    diagonal = jnp.diag(jnp.diagonal(matrix))
    strict = jnp.tril(matrix, -1) if lower else jnp.triu(matrix, 1)
    other = matrix - diagonal - strict
    rhs = omega * vector - (omega * other + (omega - 1) * diagonal) @ x
    return jsl.solve_triangular(diagonal + omega * strict, rhs, lower=lower)


class _AbstractSOR(AbstractIterativeLinearSolver):
    omega: eqx.AbstractVar[jax.Array]
    # SSOR follows each forward sweep with a backward one
    symmetric: eqx.AbstractClassVar[bool]

    def __check_init__(self):
        _check_omega(self.omega)

    def init(self, operator: AbstractLinearOperator, vector: jax.Array) -> SORState:
        matrix = operator.as_matrix()
        return SORState(
            jnp.zeros_like(vector),
            matrix,
            vector_norm(vector),
            tolerance(self, vector),
            jnp.array(0),
        )

    def step(self, operator: AbstractLinearOperator, vector: jax.Array, state: SORState):
        omega = self.omega.astype(vector.dtype)
        b = vector.reshape(-1)
        x = _sweep(state.matrix, b, state.x.reshape(-1), omega, lower=True)
        if self.symmetric:
            x = _sweep(state.matrix, b, x, omega, lower=False)
        r_norm = vector_norm(b - state.matrix @ x)
        x = x.reshape(vector.shape)
        return SORState(x, state.matrix, r_norm, state.threshold, state.num_steps + 1)

    def terminate(self, operator: Any, vector: jax.Array, state: SORState):
        return converged_result(state.r_norm, state.threshold)

    def extract(self, state: SORState):
        return state.x, state.num_steps


class SOR(_AbstractSOR):
    """Successive over-relaxation: Gauss-Seidel sweeps blended with the previous iterate by
    the relaxation factor `omega` (Young, 1950).

    Converges for symmetric positive definite `A` and `0 < omega < 2`; the best `omega`
    depends on the system (for the 2-D Poisson matrix, `2 / (1 + sin(pi h))`), which is what
    `OmegaBandit` learns across a sequence of systems. Materialises the operator; each
    step is one triangular solve and one residual evaluation.

    **Arguments:**

    - `omega`: the relaxation factor in (0, 2) (a field: a new value does not recompile).
    - `rtol`, `atol`, `max_steps`: the residual test `|b - A x| <= atol + rtol |b|` and the
      sweep bound (None: 10 times the size); reaching it is `RESULTS.linear_solve_failed`.

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    sol = js.linear.solve(A, b, js.linear.SOR(omega=1.2, rtol=1e-6, atol=0.0))
    print(sol.value, sol.stats["num_steps"], A @ sol.value - b)
    ```

    Reference: Khodak et al., "Learning to Relax: Setting Solver Parameters Across a Sequence
    of Linear System Instances", ICLR 2024 (for tuning `omega`).
    """

    omega: jax.Array = hyperparameter(1.0)
    rtol: jax.Array = hyperparameter(1e-6)
    atol: jax.Array = hyperparameter(1e-6)
    max_steps: int | None = eqx.field(static=True, default=None)
    symmetric: ClassVar[bool] = False


class SSOR(_AbstractSOR):
    """Symmetric SOR: a forward SOR sweep followed by a backward one, so the iteration is
    symmetric for symmetric `A` (usable as a CG preconditioner shape). Arguments as `SOR`;
    one step is two sweeps.

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    for solver in (js.linear.SOR(omega=1.2, rtol=1e-6, atol=0.0),
                   js.linear.SSOR(omega=1.2, rtol=1e-6, atol=0.0)):  # forward + backward sweep
        print(type(solver).__name__, js.linear.solve(A, jnp.ones(3), solver).stats["num_steps"])
    ```
    """

    omega: jax.Array = hyperparameter(1.0)
    rtol: jax.Array = hyperparameter(1e-6)
    atol: jax.Array = hyperparameter(1e-6)
    max_steps: int | None = eqx.field(static=True, default=None)
    symmetric: ClassVar[bool] = True
