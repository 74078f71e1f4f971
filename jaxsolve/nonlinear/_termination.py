"""Stopping and failure tests shared by the nonlinear solvers.

A stopping test must not be met at a point that is not a solution. Tests of the form
`max|grad f| <= atol + rtol * |f|` fail that: adding a constant to f (f = 1e10 + |y - 3|^2) makes
the right-hand side huge, and gradient descent running off to f = 7e18 meets it too. The tests
here are invariant under f -> a f + c and y -> s y:

- `gradient_converged`: the gradient (or residual) has shrunk relative to its value at `y0`,
  `max|g| <= atol + rtol * max|g0|`;
- `cauchy_converged` (and `cauchy_converged_or_unmoved`, which also reports a step that left y
  unchanged): the last step changed both y and f little relative to their size,
  `|dy| <= atol + rtol |y|` elementwise and `|df| <= atol + rtol |f|` (the Cauchy test of
  optimistix's `cauchy_termination`; Dennis & Schnabel, *Numerical Methods for Unconstrained
  Optimization*, §7.2). Alone it is met by a solver that takes tiny steps anywhere, which is why
  minimisers require both;
- `GrowthMonitor`: divergence, a monitored size (residual norm, |f - f0|) that exceeds
  `DIVERGENCE_FACTOR` times its initial scale and has grown for `DIVERGENCE_PATIENCE` steps in
  a row. The patience keeps Newton's first wild step (x^3 = 2 from x0 = 0.01 jumps to 6666 and
  comes back) from reading as divergence.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array

# A solve whose monitored size is 1e8 times its initial scale, and still growing, diverged.
DIVERGENCE_FACTOR = 1e8
DIVERGENCE_PATIENCE = 3


def _tolerances(solver, dtype):
    return solver.atol.astype(dtype), solver.rtol.astype(dtype)


def gradient_converged(solver, grad: Array, grad_scale: Array) -> Array:
    """`max|grad| <= atol + rtol * grad_scale`, with `grad_scale = max|grad(y0)|`."""
    atol, rtol = _tolerances(solver, grad.dtype)
    return jnp.max(jnp.abs(grad)) <= atol + rtol * grad_scale


def _changed_little(diff, value, atol, rtol):
    """`|diff| <= atol + rtol |value|` elementwise."""
    return jnp.all(jnp.abs(diff) <= atol + rtol * jnp.abs(value))


def cauchy_converged(solver, y: Array, y_diff: Array, f: Array, f_diff: Array) -> Array:
    """The last step moved y and f little: `|dy| <= atol + rtol |y|` (elementwise) and
    `|df| <= atol + rtol |f|` (elementwise)."""
    atol, rtol = _tolerances(solver, y.dtype)
    return _changed_little(y_diff, y, atol, rtol) & _changed_little(f_diff, f, atol, rtol)


def cauchy_converged_or_unmoved(solver, y, y_diff, f, f_diff) -> tuple[Array, Array]:
    """`(cauchy_converged(...), unmoved)` in one pass over `y`, where `unmoved` says that the
    last step left every entry of y unchanged: a step below the floating-point resolution of y,
    after which the iteration cannot make progress (in float32 a gradient tolerance below
    roundoff ends there)."""
    atol, rtol = _tolerances(solver, y.dtype)
    excess = jnp.where(y_diff == 0, -jnp.inf, jnp.abs(y_diff) - (atol + rtol * jnp.abs(y)))
    worst = jnp.max(excess)  # -inf exactly when no entry moved; NaN propagates (not small)
    return (worst <= 0) & _changed_little(f_diff, f, atol, rtol), worst == -jnp.inf


class GrowthMonitor(NamedTuple):
    """Tracks a non-negative size (a residual norm, |f - f0|) for divergence.

    `scale` is the initial scale (negative until the first `update` when not known at init),
    `previous` the last size, `growth` the number of consecutive steps on which it grew.
    """

    scale: Array
    previous: Array
    growth: Array

    @classmethod
    def start(cls, scale: Array) -> "GrowthMonitor":
        """A monitor with initial scale `scale` (pass -1 to take the first update's size)."""
        scale = jnp.asarray(scale)
        return cls(scale, jnp.abs(scale), jnp.array(0, jnp.int32))

    def update(self, size: Array) -> "GrowthMonitor":
        scale = jnp.where(self.scale < 0, size, self.scale)
        grew = (size > self.previous) & (self.scale >= 0)
        growth = jnp.where(grew, self.growth + 1, 0).astype(jnp.int32)
        return GrowthMonitor(scale, size, growth)

    def diverged(self, atol: Array) -> Array:
        """True when the size exceeds `DIVERGENCE_FACTOR * (scale + atol)` and has grown on
        each of the last `DIVERGENCE_PATIENCE` steps."""
        bound = DIVERGENCE_FACTOR * (jnp.maximum(self.scale, 0) + atol)
        growing = self.growth >= DIVERGENCE_PATIENCE
        return (self.previous > bound) & growing


def failure_result(converged_result, nonfinite: Array, diverged: Array):
    """`converged_result`, overridden by `nonfinite`, then by `divergence`."""
    from .._core import RESULTS

    result = RESULTS.where(diverged, RESULTS.divergence, converged_result)
    return RESULTS.where(nonfinite, RESULTS.nonfinite, result)
