"""Least-squares solvers for min 0.5 |r(y)|^2: Gauss-Newton and Levenberg-Marquardt.

Both stop after an accepted step with `|dy| <= atol + rtol |y|` elementwise,
`|f_old - f_new| <= atol + rtol f_new` (f = 0.5 |r|^2) and a gradient that has shrunk,
`max|J'r| <= atol + rtol max|J'r at y0|` (so a heavily damped, tiny step far from a minimum does
not stop the solve); when the gradient J'r is exactly 0; or (Levenberg-Marquardt) when a step is
rejected whose predicted decrease is below the rounding error of f. A non-finite residual ends the
solve with `RESULTS.nonfinite`; f 1e8 times its initial value and growing on three steps in a row
(undamped Gauss-Newton running away) with `RESULTS.divergence`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array

from .._core import RESULTS
from ._base import AbstractLeastSquaresSolver, hyperparameter
from ._termination import GrowthMonitor, failure_result, gradient_converged


def _residual_and_jacobian(fn, y, args):
    residual_fn = lambda y: fn(y, args)
    residual = residual_fn(y)
    # Forward mode costs n passes, reverse mode m passes: pick the cheaper one (shapes are static).
    if residual.size >= y.size:
        jac = jax.jacfwd(residual_fn)(y)
    else:
        jac = jax.jacrev(residual_fn)(y)
    return residual, jac


class LeastSquaresState(NamedTuple):
    residual: Array
    jacobian: Array
    f: Array
    diff: Array
    f_diff: Array
    damping: Array  # Levenberg-Marquardt's lambda (unused by Gauss-Newton)
    growth: Array  # Levenberg-Marquardt's nu
    accepted: Array
    predicted: Array  # the model's predicted decrease of f for the last step
    grad_scale: Array  # max|J'r| at y0
    monitor: GrowthMonitor  # f, for divergence


def _init(fn, y, args, damping):
    residual, jac = _residual_and_jacobian(fn, y, args)
    f = 0.5 * jnp.vdot(residual, residual)
    return LeastSquaresState(
        residual=residual,
        jacobian=jac,
        f=f,
        diff=jnp.full_like(y, jnp.inf),
        f_diff=jnp.asarray(jnp.inf, y.dtype),
        damping=damping,
        growth=jnp.asarray(2.0, y.dtype),
        accepted=jnp.array(False),
        predicted=jnp.asarray(jnp.inf, y.dtype),
        grad_scale=jnp.max(jnp.abs(jac.T @ residual)),
        monitor=GrowthMonitor.start(f),
    )


def _terminate(solver, y, state):
    dtype = y.dtype
    atol, rtol = solver.atol.astype(dtype), solver.rtol.astype(dtype)
    step_small = jnp.all(jnp.abs(state.diff) <= atol + rtol * jnp.abs(y))
    f_small = jnp.abs(state.f_diff) <= atol + rtol * state.f
    grad = state.jacobian.T @ state.residual
    stationary = jnp.all(grad == 0)
    grad_small = gradient_converged(solver, grad, state.grad_scale)
    # A rejected step whose predicted decrease is below the rounding error of f: no further
    # progress is possible in this precision, so y is a minimiser to working accuracy.
    roundoff = 8 * jnp.finfo(dtype).eps * state.f
    stalled = ~state.accepted & (state.predicted <= roundoff)
    nonfinite = ~jnp.all(jnp.isfinite(state.residual))
    diverged = state.monitor.diverged(atol)
    converged = state.accepted & step_small & f_small & grad_small
    done = converged | stationary | stalled | nonfinite | diverged
    return done, failure_result(RESULTS.successful, nonfinite, diverged)


class GaussNewton(AbstractLeastSquaresSolver):
    """Gauss-Newton: dy solves the linear least-squares problem min |J dy + r| (via `lstsq`).

    **Arguments:** `rtol`, `atol`. Fast near a zero- or small-residual solution; undamped, so
    start it close enough (or use `LevenbergMarquardt`).

    **Example:**

    ```python
    t = jnp.linspace(0.0, 1.0, 20)
    data = 2.0 * jnp.exp(-1.5 * t)
    residuals = lambda p, data: p[0] * jnp.exp(-p[1] * t) - data
    sol = js.nonlinear.least_squares(residuals, js.nonlinear.GaussNewton(), jnp.array([1.0, 1.0]), data)
    print(sol.value)  # [2, 1.5]
    ```

    Reference: Nocedal & Wright, *Numerical Optimization*, 2nd ed., §10.3.
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)

    def init(self, fn, y, args, options):
        return _init(fn, y, args, jnp.zeros((), y.dtype))

    def step(self, fn, y, args, options, state):
        diff = jnp.linalg.lstsq(state.jacobian, -state.residual)[0]
        y_new = y + diff
        residual, jac = _residual_and_jacobian(fn, y_new, args)
        f = 0.5 * jnp.vdot(residual, residual)
        return y_new, state._replace(
            residual=residual,
            jacobian=jac,
            f=f,
            diff=diff,
            f_diff=state.f - f,
            accepted=jnp.array(True),
            predicted=jnp.asarray(jnp.inf, y.dtype),
            monitor=state.monitor.update(f),
        )

    def terminate(self, fn, y, args, options, state):
        return _terminate(self, y, state)


class LevenbergMarquardt(AbstractLeastSquaresSolver):
    """Levenberg-Marquardt: dy = -(J'J + lambda I)^-1 J'r, accepted when the actual decrease of
    0.5|r|^2 is positive; lambda follows Nielsen's gain-ratio rule.

    **Arguments:** `rtol`, `atol`, `initial_damping` (tau: lambda_0 = tau * max diag(J'J),
    default 1e-3).

    **Example:**

    ```python
    rosenbrock = lambda y, _: jnp.stack([10 * (y[1] - y[0] ** 2), 1 - y[0]])
    solver = js.nonlinear.LevenbergMarquardt(initial_damping=1e-3)
    print(js.nonlinear.least_squares(rosenbrock, solver, jnp.array([-1.2, 1.0])).value)  # [1, 1]
    ```

    References: Levenberg 1944; Marquardt 1963; Nielsen, "Damping parameter in Marquardt's
    method", IMM DTU report 1999; Madsen, Nielsen & Tingleff, *Methods for Non-Linear Least
    Squares Problems*, 2004, §3.2.
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)
    initial_damping: Array = hyperparameter(1e-3)

    def init(self, fn, y, args, options):
        state = _init(fn, y, args, jnp.zeros((), y.dtype))
        diag_max = jnp.max(jnp.sum(state.jacobian**2, axis=0))
        damping = self.initial_damping.astype(y.dtype) * jnp.where(diag_max > 0, diag_max, 1.0)
        return state._replace(damping=damping)

    def step(self, fn, y, args, options, state):
        jac, residual = state.jacobian, state.residual
        gram = jac.T @ jac
        grad = jac.T @ residual
        lam = state.damping
        factor = jsl.cho_factor(gram + lam * jnp.eye(y.size, dtype=y.dtype))
        diff = jsl.cho_solve(factor, -grad)
        y_try = y + diff
        residual_try, jac_try = _residual_and_jacobian(fn, y_try, args)
        f_try = 0.5 * jnp.vdot(residual_try, residual_try)
        predicted = 0.5 * jnp.vdot(diff, lam * diff - grad)
        gain = (state.f - f_try) / jnp.where(predicted > 0, predicted, 1.0)
        accept = (gain > 0) & jnp.isfinite(f_try) & jnp.all(jnp.isfinite(diff))
        shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
        new_lam = jnp.where(accept, lam * shrink, lam * state.growth)
        new_growth = jnp.where(accept, 2.0, 2.0 * state.growth)
        pick = lambda a, b: jnp.where(accept, a, b)
        new_state = state._replace(
            residual=pick(residual_try, residual),
            jacobian=pick(jac_try, jac),
            f=pick(f_try, state.f),
            diff=pick(diff, jnp.zeros_like(diff)),
            f_diff=pick(state.f - f_try, jnp.zeros_like(state.f)),
            damping=new_lam,
            growth=new_growth.astype(y.dtype),
            accepted=accept,
            predicted=predicted,
            # f never grows here (only decreases are accepted); a non-finite trial is rejected,
            # so a Levenberg-Marquardt solve cannot diverge: the monitor stays at its start.
        )
        return pick(y_try, y), new_state

    def terminate(self, fn, y, args, options, state):
        return _terminate(self, y, state)
