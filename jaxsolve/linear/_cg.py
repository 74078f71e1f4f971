"""Preconditioned conjugate gradients."""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core import RESULTS, hyperparameter
from ._operator import AbstractLinearOperator
from ._solver import AbstractIterativeLinearSolver, converged_result, tolerance, vector_norm


class CGState(NamedTuple):
    x: jax.Array
    r: jax.Array
    p: jax.Array
    rz: jax.Array  # r . (M^{-1} r)
    r_norm: jax.Array
    threshold: jax.Array
    breakdown: jax.Array
    num_steps: jax.Array


class CG(AbstractIterativeLinearSolver):
    """Conjugate gradients for symmetric positive definite systems (Hestenes & Stiefel, 1952).

    Stops when `|b - A x| <= atol + rtol * |b|`. Declare the operator
    `tags=("positive_definite",)`; CG does not check it, but a non-positive curvature
    `p^T A p <= 0` is reported as `RESULTS.breakdown`.

    **Arguments:**

    - `rtol`, `atol`: relative and absolute tolerances on the residual norm (fields: a new
      value does not recompile).
    - `max_steps`: the iteration bound (a Python int; None means 10 times the size).
      Reaching it is `RESULTS.linear_solve_failed`.
    - `preconditioner`: None, or an `AbstractLinearOperator` applying `M^{-1} ~ A^{-1}`
      (symmetric positive definite), e.g. `DiagonalOperator(1 / jnp.diag(A))`.

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    op = js.linear.MatrixOperator(A, tags=("positive_definite",))  # CG trusts the tag
    sol = js.linear.solve(op, jnp.array([1.0, 2.0]), js.linear.CG(rtol=1e-6, atol=0.0))
    print(sol.value, sol.stats["num_steps"])  # at most 2 steps for a 2 x 2 system
    ```
    """

    rtol: jax.Array = hyperparameter(1e-6)
    atol: jax.Array = hyperparameter(1e-6)
    max_steps: int | None = eqx.field(static=True, default=None)
    preconditioner: AbstractLinearOperator | None = None

    def _precondition(self, r):
        return r if self.preconditioner is None else self.preconditioner.mv(r)

    def init(self, operator: AbstractLinearOperator, vector: jax.Array) -> CGState:
        x = jnp.zeros_like(vector)
        r = vector
        z = self._precondition(r)
        rz = jnp.vdot(r, z)
        r_norm = vector_norm(r)
        return CGState(x, r, z, rz, r_norm, tolerance(self, vector), jnp.array(False), jnp.array(0))

    def step(self, operator: AbstractLinearOperator, vector: jax.Array, state: CGState):
        x, r, p, rz = state.x, state.r, state.p, state.rz
        ap = operator.mv(p)
        curvature = jnp.vdot(p, ap)
        breakdown = curvature <= 0
        alpha = rz / jnp.where(breakdown, 1, curvature)
        x = x + alpha * p
        r = r - alpha * ap
        z = self._precondition(r)
        rz_new = jnp.vdot(r, z)
        beta = rz_new / jnp.where(rz == 0, 1, rz)
        p = z + beta * p
        # Without a preconditioner r.z = |r|^2: save a reduction per step.
        r_norm = jnp.sqrt(rz_new) if self.preconditioner is None else vector_norm(r)
        return CGState(x, r, p, rz_new, r_norm, state.threshold, breakdown, state.num_steps + 1)

    def terminate(self, operator: Any, vector: jax.Array, state: CGState):
        done, result = converged_result(state.r_norm, state.threshold)
        broke = state.breakdown & ~(state.r_norm <= state.threshold)
        result = RESULTS.where(broke, RESULTS.breakdown, result)
        return done | broke, result

    def extract(self, state: CGState):
        return state.x, state.num_steps
