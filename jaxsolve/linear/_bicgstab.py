"""BiCGStab: the stabilised bi-conjugate gradient method."""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core import RESULTS, hyperparameter
from ._operator import AbstractLinearOperator
from ._solver import AbstractIterativeLinearSolver, converged_result, tolerance, vector_norm


class BiCGStabState(NamedTuple):
    x: jax.Array
    r: jax.Array
    r_hat: jax.Array
    p: jax.Array
    v: jax.Array
    rho: jax.Array
    alpha: jax.Array
    omega: jax.Array
    r_norm: jax.Array
    threshold: jax.Array
    breakdown: jax.Array
    num_steps: jax.Array


def _safe_div(a, b):
    zero = b == 0
    return jnp.where(zero, 0, a / jnp.where(zero, 1, b)), zero


class BiCGStab(AbstractIterativeLinearSolver):
    """BiCGStab for general square systems (van der Vorst, 1992): short recurrences, two
    matrix-vector products per step, constant memory.

    **Arguments:**

    - `rtol`, `atol`: tolerances on the residual norm `|b - A x| <= atol + rtol |b|`.
    - `max_steps`: the iteration bound (None means 10 times the size); reaching it is
      `RESULTS.linear_solve_failed`. A zero denominator in the recurrence before
      convergence is `RESULTS.breakdown`.

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [-1.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    sol = js.linear.solve(A, b, js.linear.BiCGStab(rtol=1e-6, atol=0.0))
    print(sol.value, sol.stats["num_steps"])
    ```
    """

    rtol: jax.Array = hyperparameter(1e-6)
    atol: jax.Array = hyperparameter(1e-6)
    max_steps: int | None = eqx.field(static=True, default=None)

    def init(self, operator: AbstractLinearOperator, vector: jax.Array) -> BiCGStabState:
        zeros = jnp.zeros_like(vector)
        one = jnp.ones((), vector.dtype)
        return BiCGStabState(
            x=zeros,
            r=vector,
            r_hat=vector,
            p=zeros,
            v=zeros,
            rho=one,
            alpha=one,
            omega=one,
            r_norm=vector_norm(vector),
            threshold=tolerance(self, vector),
            breakdown=jnp.array(False),
            num_steps=jnp.array(0),
        )

    def step(self, operator: AbstractLinearOperator, vector: jax.Array, state: BiCGStabState):
        rho_new = jnp.vdot(state.r_hat, state.r)
        ratio, zero_rho = _safe_div(rho_new, state.rho)
        scale, zero_omega = _safe_div(state.alpha, state.omega)
        beta = ratio * scale
        p = state.r + beta * (state.p - state.omega * state.v)
        v = operator.mv(p)
        alpha, zero_rv = _safe_div(rho_new, jnp.vdot(state.r_hat, v))
        s = state.r - alpha * v
        t = operator.mv(s)
        omega, zero_tt = _safe_div(jnp.vdot(t, s), jnp.vdot(t, t))
        x = state.x + alpha * p + omega * s
        r = s - omega * t
        breakdown = zero_rho | zero_omega | zero_rv | (zero_tt & (vector_norm(s) > 0))
        return BiCGStabState(
            x=x,
            r=r,
            r_hat=state.r_hat,
            p=p,
            v=v,
            rho=rho_new,
            alpha=alpha,
            omega=omega,
            r_norm=vector_norm(r),
            threshold=state.threshold,
            breakdown=breakdown,
            num_steps=state.num_steps + 1,
        )

    def terminate(self, operator: Any, vector: jax.Array, state: BiCGStabState):
        done, result = converged_result(state.r_norm, state.threshold)
        broke = state.breakdown & ~(state.r_norm <= state.threshold)
        return done | broke, RESULTS.where(broke, RESULTS.breakdown, result)

    def extract(self, state: BiCGStabState):
        return state.x, state.num_steps
