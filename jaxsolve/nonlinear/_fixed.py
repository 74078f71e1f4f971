"""Fixed-point solvers: plain iteration and Anderson acceleration.

Both stop when `|f(y) - y| <= atol + rtol |y|` elementwise. A non-finite `f(y)` ends the solve
with `RESULTS.nonfinite`; a residual `max|f(y) - y|` 1e8 times its first value that grew on three
steps in a row (an expanding map) with `RESULTS.divergence`.
"""

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._core import RESULTS
from ._base import AbstractFixedPointSolver, hyperparameter
from ._termination import GrowthMonitor, failure_result


class FixedPointState(NamedTuple):
    diff: Array  # f(y) - y at the last evaluated point
    monitor: GrowthMonitor  # max|f(y) - y|, for divergence


def _fixed_terminate(solver, y, diff, monitor):
    dtype = y.dtype
    atol = solver.atol.astype(dtype)
    tol = atol + solver.rtol.astype(dtype) * jnp.abs(y)
    converged = jnp.all(jnp.abs(diff) <= tol)
    nonfinite = ~jnp.all(jnp.isfinite(diff))
    diverged = monitor.diverged(atol)
    done = converged | nonfinite | diverged
    return done, failure_result(RESULTS.successful, nonfinite, diverged)


def _start_monitor(y):
    # The initial residual is first known after the first step.
    return GrowthMonitor.start(-jnp.ones((), y.dtype))


class FixedPointIteration(AbstractFixedPointSolver):
    """Plain (Picard) iteration y <- f(y), optionally damped: y <- (1 - damping) y + damping f(y).

    **Arguments:** `rtol`, `atol`, `damping` (default 1.0). Converges when f is a contraction.

    **Example:**

    ```python
    solver = js.nonlinear.FixedPointIteration(damping=0.5)
    sol = js.nonlinear.fixed_point(lambda x, t: jnp.cos(x) + t, solver, jnp.array(0.0), 0.1)
    print(sol.value, jax.grad(lambda t: js.nonlinear.fixed_point(
        lambda x, t: jnp.cos(x) + t, solver, jnp.array(0.0), t).value)(0.1))
    ```
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)
    damping: Array = hyperparameter(1.0)

    def init(self, fn, y, args, options):
        return FixedPointState(jnp.full_like(y, jnp.inf), _start_monitor(y))

    def step(self, fn, y, args, options, state):
        diff = fn(y, args) - y
        monitor = state.monitor.update(jnp.max(jnp.abs(diff)))
        return y + self.damping.astype(y.dtype) * diff, FixedPointState(diff, monitor)

    def terminate(self, fn, y, args, options, state):
        return _fixed_terminate(self, y, state.diff, state.monitor)


class AndersonState(NamedTuple):
    iterates: Array  # (history_size, n) past y
    images: Array  # (history_size, n) past f(y)
    count: Array
    diff: Array  # f(y) - y at the last evaluated point
    monitor: GrowthMonitor


class Anderson(AbstractFixedPointSolver):
    """Anderson acceleration (type II) of the fixed-point iteration y <- f(y).

    Keeps the last `history_size` pairs (y_i, f(y_i)), finds weights alpha (summing to one) that
    minimise |sum alpha_i (f(y_i) - y_i)| with a small ridge `regularisation`, and steps to
    `mixing * sum alpha_i f(y_i) + (1 - mixing) * sum alpha_i y_i`.

    **Arguments:** `rtol`, `atol`, `history_size` (Python int, default 5), `mixing` (default
    1.0), `regularisation` (default 1e-10, relative to the residuals' scale).

    **Example:**

    ```python
    W = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (8, 8)) / jnp.sqrt(8.0)
    cell = lambda z, x: jnp.tanh(W @ z + x)  # a contraction in z
    solver = js.nonlinear.Anderson(history_size=5)
    sol = js.nonlinear.fixed_point(cell, solver, jnp.zeros(8), jnp.ones(8))
    print(sol.stats["num_steps"], jnp.max(jnp.abs(cell(sol.value, jnp.ones(8)) - sol.value)))
    ```

    References: Anderson, "Iterative procedures for nonlinear integral equations", JACM 1965;
    Walker & Ni, "Anderson acceleration for fixed-point iterations", SINUM 2011.
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)
    history_size: int = eqx.field(static=True, default=5)
    mixing: Array = hyperparameter(1.0)
    regularisation: Array = hyperparameter(1e-10)

    def __check_init__(self):
        if not isinstance(self.history_size, int) or self.history_size < 1:
            raise ValueError(f"`history_size` must be a positive int, got {self.history_size!r}")

    def init(self, fn, y, args, options):
        zeros = jnp.zeros((self.history_size, y.size), y.dtype)
        return AndersonState(
            zeros, zeros, jnp.array(0, jnp.int32), jnp.full_like(y, jnp.inf), _start_monitor(y)
        )

    def step(self, fn, y, args, options, state):
        m = self.history_size
        image = fn(y, args)
        slot = state.count % m
        iterates = state.iterates.at[slot].set(y)
        images = state.images.at[slot].set(image)
        filled = jnp.arange(m, dtype=jnp.int32) < jnp.minimum(state.count + 1, m)
        residuals = jnp.where(filled[:, None], images - iterates, 0.0)
        gram = residuals @ residuals.T
        scale = jnp.max(jnp.diag(gram))
        ridge = self.regularisation.astype(y.dtype) * jnp.where(scale > 0, scale, 1.0)
        # Unused slots get an identity row and a zero right-hand side, so their weight is 0.
        gram = jnp.where(filled[:, None] & filled[None, :], gram, 0.0)
        gram = gram + jnp.diag(jnp.where(filled, ridge, 1.0))
        mask = filled.astype(y.dtype)
        weights = jnp.linalg.solve(gram, mask)
        total = jnp.sum(weights)
        # A degenerate system falls back to the plain average of the history.
        average = mask / jnp.sum(mask)
        ok = (jnp.abs(total) > 0) & jnp.all(jnp.isfinite(weights))
        weights = jnp.where(ok, weights / jnp.where(ok, total, 1.0), average)
        mixing = self.mixing.astype(y.dtype)
        y_new = mixing * (weights @ images) + (1 - mixing) * (weights @ iterates)
        diff = image - y
        monitor = state.monitor.update(jnp.max(jnp.abs(diff)))
        new_state = AndersonState(iterates, images, state.count + 1, diff, monitor)
        return y_new, new_state

    def terminate(self, fn, y, args, options, state):
        return _fixed_terminate(self, y, state.diff, state.monitor)
