"""Restarted GMRES: classical Gram-Schmidt (optional DGKS reorthogonalisation), Givens rotations."""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import lax

from .._core import bounded_while_loop, hyperparameter
from ._operator import AbstractLinearOperator
from ._solver import AbstractIterativeLinearSolver, converged_result, tolerance, vector_norm

_DGKS = 0.7071067811865476  # reorthogonalise when the norm drops below 1/sqrt(2) of itself


class GMRESState(NamedTuple):
    x: jax.Array
    r: jax.Array  # the true residual b - A x, recomputed after every restart cycle
    r_norm: jax.Array
    threshold: jax.Array
    num_steps: jax.Array  # Arnoldi iterations (matrix-vector products) so far
    num_restarts: jax.Array
    estimate: jax.Array  # the last cycle's own residual estimate |g_k|


def _givens(a, b):
    """(c, s, rho) with [c s; -s c] [a; b] = [rho; 0]."""
    rho = jnp.hypot(a, b)
    safe = jnp.where(rho == 0, 1, rho)
    c = jnp.where(rho == 0, 1, a / safe)
    s = jnp.where(rho == 0, 0, b / safe)
    return c, s, rho


class GMRES(AbstractIterativeLinearSolver):
    """Restarted GMRES for general square systems (Saad & Schultz, 1986).

    Each restart cycle builds an orthonormal Krylov basis of at most `restart` vectors by
    classical Gram-Schmidt (vectorised; with `reorthogonalise=True` a second pass runs
    whenever the DGKS test detects cancellation, which is as stable as modified Gram-Schmidt
    and costs up to twice as much), keeps the Hessenberg least-squares problem triangular with Givens rotations,
    and leaves the cycle early as soon as the residual estimate meets the tolerance.
    GMRES works on `A` itself, so its accuracy degrades with cond(A), not cond(A)^2 as
    normal-equation methods do.

    **Arguments:**

    - `rtol`, `atol`: tolerances on the residual norm `|b - A x| <= atol + rtol |b|` (the
      recomputed residual, or the cycle's residual estimate when rounding keeps the
      recomputed one above a tolerance below the attainable accuracy).
    - `max_steps`: the bound on the total number of Arnoldi iterations (matrix-vector
      products; None means 10 times the size). Reaching it is
      `RESULTS.linear_solve_failed`.
    - `restart`: the Krylov dimension per cycle (a Python int; memory is `restart + 1`
      vectors).
    - `reorthogonalise`: reorthogonalise on detected cancellation (a Python bool; default
      False, as jax.scipy and lineax; turn on for ill-conditioned problems that stagnate).

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [-1.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    sol = js.linear.solve(A, b, js.linear.GMRES(rtol=1e-6, atol=0.0, restart=2))  # not symmetric
    print(sol.value, sol.stats["num_steps"])
    ```
    """

    rtol: jax.Array = hyperparameter(1e-6)
    atol: jax.Array = hyperparameter(1e-6)
    max_steps: int | None = eqx.field(static=True, default=None)
    restart: int = eqx.field(static=True, default=20)
    reorthogonalise: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if not isinstance(self.restart, int) or self.restart < 1:
            raise ValueError(f"`restart` must be a positive Python int, got {self.restart!r}")

    def init(self, operator: AbstractLinearOperator, vector: jax.Array) -> GMRESState:
        x = jnp.zeros_like(vector)
        zero = jnp.array(0)
        threshold = tolerance(self, vector)
        b_norm = vector_norm(vector)
        return GMRESState(x, vector, b_norm, threshold, zero, zero, b_norm)

    def step(self, operator: AbstractLinearOperator, vector: jax.Array, state: GMRESState):
        size = vector.size
        m = min(self.restart, size)
        dtype = vector.dtype
        limit = self.step_limit(operator)
        budget = jnp.minimum(m, limit - state.num_steps)
        beta = state.r_norm
        basis = jnp.zeros((m + 1, *vector.shape), dtype)
        basis = basis.at[0].set(state.r / jnp.where(beta == 0, 1, beta))
        axes = vector.ndim
        rotated = jnp.zeros((m + 1, m), dtype)  # R: the Hessenberg matrix after the rotations
        # The product of the Givens rotations so far, kept as a dense (m+1) x (m+1) matrix:
        # rotating a new column is then one small matvec rather than k sequential updates,
        # and the rotated right-hand side is beta * rotations[:, 0].
        rotations = jnp.eye(m + 1, dtype=dtype)

        def keep_going(carry):
            k, _, _, rotations = carry
            return (k < budget) & (jnp.abs(beta * rotations[k, 0]) > state.threshold)

        def body(carry):
            k, basis, rotated, rotations = carry
            w = operator.mv(basis[k])
            # Rows of `basis` beyond k are still zero, so full products orthogonalise against
            # exactly the first k + 1 vectors without dynamic shapes.
            w_norm = vector_norm(w) if self.reorthogonalise else None
            h = jnp.tensordot(basis, w, axes=axes)
            w = w - jnp.tensordot(h, basis, axes=1)
            h_next = vector_norm(w)

            # Optionally reorthogonalise when cancellation was severe (the DGKS criterion):
            # a second classical Gram-Schmidt pass is then enough ("twice is enough").
            def again(operand):
                w, h, _ = operand
                h2 = jnp.tensordot(basis, w, axes=axes)
                w = w - jnp.tensordot(h2, basis, axes=1)
                return w, h + h2, vector_norm(w)

            if self.reorthogonalise:
                w, h, h_next = lax.cond(
                    h_next < _DGKS * w_norm, again, lambda operand: operand, (w, h, h_next)
                )
            basis = basis.at[k + 1].set(
                jnp.where(h_next > 0, w / jnp.where(h_next > 0, h_next, 1), 0)
            )
            column = rotations @ h.at[k + 1].set(h_next)
            c, s, rho = _givens(column[k], column[k + 1])
            column = column.at[k].set(rho).at[k + 1].set(0)
            row_k, row_next = rotations[k], rotations[k + 1]
            rotations = rotations.at[k].set(c * row_k + s * row_next)
            rotations = rotations.at[k + 1].set(-s * row_k + c * row_next)
            return k + 1, basis, rotated.at[:, k].set(column), rotations

        k, basis, rotated, rotations = bounded_while_loop(
            keep_going, body, (jnp.array(0), basis, rotated, rotations), max_steps=m, kind="lax"
        ).value
        g = beta * rotations[:, 0]
        # Solve the k x k triangular system; unused rows/columns become the identity.
        index = jnp.arange(m)
        used = index < k
        upper = rotated[:m, :m]
        upper = jnp.where(used[:, None] & used[None, :], upper, jnp.eye(m, dtype=dtype))
        y = jsl.solve_triangular(upper, jnp.where(used, g[:m], 0), lower=False)
        x = state.x + jnp.tensordot(y, basis[:m], axes=1)
        r = vector - operator.mv(x)
        return GMRESState(
            x,
            r,
            vector_norm(r),
            state.threshold,
            state.num_steps + k,
            state.num_restarts + 1,
            jnp.abs(g[k]),
        )

    def terminate(self, operator: Any, vector: jax.Array, state: GMRESState):
        # Also stop when a cycle's own estimate met the tolerance: the recomputed residual can
        # sit above it at the attainable accuracy (~ eps * cond(A)), and more cycles would not
        # improve x (as CG's recurrence residual, which likewise runs below that floor).
        done, result = converged_result(state.r_norm, state.threshold)
        return done | (state.estimate <= state.threshold), result

    def extract(self, state: GMRESState):
        return state.x, state.num_steps
