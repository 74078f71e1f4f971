"""Restarted GMRES with classical Gram-Schmidt (twice) and Givens rotations."""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import lax

from ._operator import AbstractLinearOperator
from ._solver import AbstractIterativeLinearSolver, converged_result, tolerance


class GMRESState(NamedTuple):
    x: jax.Array
    r: jax.Array  # the true residual b - A x, recomputed after every restart cycle
    r_norm: jax.Array
    threshold: jax.Array
    num_steps: jax.Array  # Arnoldi iterations (matrix-vector products) so far
    num_restarts: jax.Array


def _givens(a, b):
    """(c, s, rho) with [c s; -s c] [a; b] = [rho; 0]."""
    rho = jnp.hypot(a, b)
    safe = jnp.where(rho == 0, 1, rho)
    c = jnp.where(rho == 0, 1, a / safe)
    s = jnp.where(rho == 0, 0, b / safe)
    return c, s, rho


class GMRES(AbstractIterativeLinearSolver):
    """Restarted GMRES for general square systems (Saad & Schultz, 1986).

    Each restart cycle builds an orthonormal Krylov basis of at most `restart` vectors
    (classical Gram-Schmidt applied twice, which is as stable as modified Gram-Schmidt and
    vectorises), keeps the Hessenberg least-squares problem triangular with Givens rotations,
    and leaves the cycle early as soon as the residual estimate meets the tolerance.
    GMRES works on `A` itself, so its accuracy degrades with cond(A), not cond(A)^2 as
    normal-equation methods do.

    **Arguments:**

    - `rtol`, `atol`: tolerances on the residual norm `|b - A x| <= atol + rtol |b|`.
    - `max_steps`: the bound on the total number of Arnoldi iterations (matrix-vector
      products; None means 10 times the size). Reaching it is
      `RESULTS.linear_solve_failed`.
    - `restart`: the Krylov dimension per cycle (a Python int; memory is `restart + 1`
      vectors).

    **Example:** `js.linear.solve(matvec, b, js.linear.GMRES(rtol=1e-8, atol=1e-8, restart=30))`.
    """

    rtol: jax.Array = eqx.field(converter=jnp.asarray, default=1e-6)
    atol: jax.Array = eqx.field(converter=jnp.asarray, default=1e-6)
    max_steps: int | None = eqx.field(static=True, default=None)
    restart: int = eqx.field(static=True, default=20)

    def __check_init__(self):
        if not isinstance(self.restart, int) or self.restart < 1:
            raise ValueError(f"`restart` must be a positive Python int, got {self.restart!r}")

    def init(self, operator: AbstractLinearOperator, vector: jax.Array) -> GMRESState:
        x = jnp.zeros_like(vector)
        zero = jnp.array(0)
        threshold = tolerance(self, vector)
        return GMRESState(x, vector, jnp.linalg.norm(vector), threshold, zero, zero)

    def step(self, operator: AbstractLinearOperator, vector: jax.Array, state: GMRESState):
        size = vector.shape[0]
        m = min(self.restart, size)
        dtype = vector.dtype
        limit = self.step_limit(operator)
        budget = jnp.minimum(m, limit - state.num_steps)
        beta = state.r_norm
        basis = jnp.zeros((m + 1, size), dtype).at[0].set(state.r / jnp.where(beta == 0, 1, beta))
        rotated = jnp.zeros((m + 1, m), dtype)  # the Hessenberg matrix after the rotations
        g = jnp.zeros((m + 1,), dtype).at[0].set(beta)
        cs = jnp.zeros((m,), dtype)
        sn = jnp.zeros((m,), dtype)

        def cond(carry):
            k, _, _, g, _, _ = carry
            return (k < budget) & (jnp.abs(g[k]) > state.threshold)

        def body(carry):
            k, basis, rotated, g, cs, sn = carry
            w = operator.mv(basis[k])
            # Rows of `basis` beyond k are still zero, so full products orthogonalise against
            # exactly the first k + 1 vectors without dynamic shapes.
            h = basis @ w
            w = w - h @ basis
            h2 = basis @ w
            w = w - h2 @ basis
            h = h + h2
            h_next = jnp.linalg.norm(w)
            basis = basis.at[k + 1].set(
                jnp.where(h_next > 0, w / jnp.where(h_next > 0, h_next, 1), 0)
            )
            column = h.at[k + 1].set(h_next)

            def rotate(i, col):
                a, b = col[i], col[i + 1]
                return col.at[i].set(cs[i] * a + sn[i] * b).at[i + 1].set(-sn[i] * a + cs[i] * b)

            column = lax.fori_loop(0, k, rotate, column)
            c, s, rho = _givens(column[k], column[k + 1])
            column = column.at[k].set(rho).at[k + 1].set(0)
            g = g.at[k + 1].set(-s * g[k]).at[k].set(c * g[k])
            return k + 1, basis, rotated.at[:, k].set(column), g, cs.at[k].set(c), sn.at[k].set(s)

        k, basis, rotated, g, _, _ = lax.while_loop(
            cond, body, (jnp.array(0), basis, rotated, g, cs, sn)
        )
        # Solve the k x k triangular system; unused rows/columns become the identity.
        index = jnp.arange(m)
        used = index < k
        upper = rotated[:m, :m]
        upper = jnp.where(used[:, None] & used[None, :], upper, jnp.eye(m, dtype=dtype))
        y = jsl.solve_triangular(upper, jnp.where(used, g[:m], 0), lower=False)
        x = state.x + y @ basis[:m]
        r = vector - operator.mv(x)
        return GMRESState(
            x,
            r,
            jnp.linalg.norm(r),
            state.threshold,
            state.num_steps + k,
            state.num_restarts + 1,
        )

    def terminate(self, operator: Any, vector: jax.Array, state: GMRESState):
        return converged_result(state.r_norm, state.threshold, state.x)

    def extract(self, state: GMRESState):
        return state.x, state.num_steps
