"""Unconstrained minimisers: gradient descent, and line-search minimisers composed of a descent
(which way) and a line search (how far): nonlinear CG, BFGS and L-BFGS.

All stop when two tests hold after a step (see `_termination`): the gradient has shrunk,
`max|grad f(y)| <= atol + rtol * max|grad f(y0)|`, and the step was small in y and in f,
`|dy| <= atol + rtol |y|` and `|df| <= atol + rtol |f|`. The gradient test does not depend on
an additive constant in f and both must hold, so f = 1e10 + |y - 3|^2 is solved to y = 3. A non-finite f or
gradient ends the solve with `RESULTS.nonfinite`; |f - f(y0)| beyond 1e8 times
`|f(y0)| + max|grad f(y0)|` and still growing (f running off to +inf, or unbounded below) with
`RESULTS.divergence`. A line search that finds no acceptable step ends the solve with
`RESULTS.nonconvergence` (unless the gradient test already holds: no progress is possible in
this precision at a point that meets it).
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._core import RESULTS
from ._base import AbstractMinimiser, hyperparameter
from ._descent import (
    AbstractDescent,
    BFGSDescent,
    LBFGSDescent,
    NonlinearCGDescent,
    SteepestDescent,
)
from ._line_search import AbstractLineSearch, StrongWolfe
from ._termination import (
    GrowthMonitor,
    cauchy_converged_or_unmoved,
    failure_result,
    gradient_converged,
)


class MinimiserState(NamedTuple):
    """The state of the gradient-based minimisers: value and gradient at the current point,
    the descent's state, the last accepted step size and slope, and counters."""

    f: Array
    grad: Array
    descent_state: Any
    step_size: Array
    slope: Array
    search_ok: Array
    num_fn_evals: Array
    y_diff: Array
    f_diff: Array
    f_initial: Array
    grad_scale: Array  # max|grad f(y0)|: the gradient test is relative to it
    monitor: GrowthMonitor  # |f - f(y0)|, for divergence


def _value_and_grad(fn, args):
    return jax.value_and_grad(lambda y: fn(y, args))


def _init(descent, fn, y, args):
    f, grad = _value_and_grad(fn, args)(y)
    grad_scale = jnp.max(jnp.abs(grad))
    return MinimiserState(
        f=f,
        grad=grad,
        descent_state=descent.init(y, grad),
        step_size=jnp.zeros((), y.dtype),
        slope=jnp.zeros((), y.dtype),
        search_ok=jnp.array(True),
        num_fn_evals=jnp.array(1, jnp.int32),
        y_diff=jnp.full_like(y, jnp.inf),
        f_diff=jnp.asarray(jnp.inf, f.dtype),
        f_initial=f,
        grad_scale=grad_scale,
        monitor=GrowthMonitor.start(jnp.abs(f) + grad_scale),
    )


def _moved(state, y_old, y_new, f_new):
    """The step's y- and f-differences and the divergence monitor after a step."""
    f_new = jnp.asarray(f_new)
    return dict(
        y_diff=y_new - y_old,
        f_diff=f_new - state.f,
        monitor=state.monitor.update(jnp.abs(f_new - state.f_initial)),
    )


def _line_search_step(descent, search, unit_step, fn, y, args, options, state):
    direction, descent_state = descent.direction(state.grad, state.descent_state)
    slope = jnp.vdot(state.grad, direction)
    first = state.step_size == 0
    # Quasi-Newton directions are scaled: try t = 1. Otherwise (and on the first step) reuse the
    # last step's first-order change, t0 = t_prev * slope_prev / slope (Nocedal & Wright 3.5).
    # Used on the first step only, where grad = grad f(y0) and max|grad| is `grad_scale`.
    g_scale = jnp.maximum(state.grad_scale, 1.0)
    if unit_step:
        initial = jnp.where(first, 1.0 / g_scale, 1.0)
    else:
        ratio = state.step_size * state.slope / jnp.where(slope != 0, slope, 1.0)
        initial = jnp.where(first, 1.0 / g_scale, jnp.minimum(1.01 * 2 * ratio, 1e10))
        initial = jnp.where(initial > 0, initial, 1.0)
    ls = search.search(
        _value_and_grad(fn, args), y, state.f, state.grad, direction, initial, options
    )
    s = ls.y - y
    descent_state = descent.update(s, ls.grad - state.grad, ls.grad, descent_state)
    new_state = state._replace(
        f=ls.f,
        grad=ls.grad,
        descent_state=descent_state,
        step_size=jnp.where(ls.ok, ls.step_size, state.step_size).astype(y.dtype),
        slope=slope,
        search_ok=ls.ok,
        num_fn_evals=state.num_fn_evals + ls.num_evals.astype(jnp.int32),
        **_moved(state, y, ls.y, ls.f),
    )
    return ls.y, new_state


def minimiser_terminate(solver, y, f, grad, state, search_ok=True, memoryless=True):
    """`(done, result)` of an unconstrained minimiser (module docstring): `state` carries
    `y_diff`, `f_diff`, `grad_scale` and `monitor`.

    `memoryless`: the next step is a function of y and of state that a step leaving y unchanged
    does not change either (line-search methods: the rejected curvature pair is skipped), so
    such a step repeats forever and ends the iteration as stalled. Optax transformations carry
    momenta and step counts (a schedule may start at a zero learning rate): not for them."""
    grad_small = gradient_converged(solver, grad, state.grad_scale)
    cauchy, unmoved = cauchy_converged_or_unmoved(solver, y, state.y_diff, f, state.f_diff)
    converged = grad_small & cauchy
    # max|grad| is NaN or inf exactly when grad is not finite, and it is the reduction
    # `gradient_converged` computes: one pass over grad instead of two.
    nonfinite = ~jnp.isfinite(f) | ~jnp.isfinite(jnp.max(jnp.abs(grad)))
    diverged = state.monitor.diverged(solver.atol.astype(y.dtype))
    # A failed line search, or a step too small to change y: no further progress is possible.
    stalled = ~jnp.asarray(search_ok) | (unmoved & memoryless)
    done = converged | stalled | nonfinite | diverged
    failed = RESULTS.where(unmoved & memoryless, RESULTS.stalled, RESULTS.nonconvergence)
    result = RESULTS.where(converged | grad_small, RESULTS.successful, failed)
    return done, failure_result(result, nonfinite, diverged)


def _terminate(solver, y, state):
    return minimiser_terminate(solver, y, state.f, state.grad, state, state.search_ok)


class GradientDescent(AbstractMinimiser):
    """Gradient descent with a constant step: y <- y - learning_rate * grad f(y).

    **Arguments:** `learning_rate` (default 1e-2), `rtol`, `atol` (the stopping tests of the
    module docstring). All three are array fields: new values do not recompile.

    **Example:**

    ```python
    fn = lambda y, c: 0.5 * jnp.sum((y - c) ** 2)
    solver = js.nonlinear.GradientDescent(learning_rate=0.5)
    print(js.nonlinear.minimize(fn, solver, jnp.zeros(3), jnp.arange(3.0)).value)  # [0, 1, 2]
    ```

    Reference: Cauchy, "Méthode générale pour la résolution des systèmes d'équations
    simultanées", 1847.
    """

    learning_rate: Array = hyperparameter(1e-2)
    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)

    def init(self, fn, y, args, options):
        return _init(SteepestDescent(), fn, y, args)

    def step(self, fn, y, args, options, state):
        y_new = y - self.learning_rate.astype(y.dtype) * state.grad
        f, grad = _value_and_grad(fn, args)(y_new)
        moved = _moved(state, y, y_new, f)
        return y_new, state._replace(f=f, grad=grad, num_fn_evals=state.num_fn_evals + 1, **moved)

    def terminate(self, fn, y, args, options, state):
        return _terminate(self, y, state)


class NonlinearCG(AbstractMinimiser):
    """Nonlinear conjugate gradients with a strong-Wolfe line search (c2 = 0.1 by default).

    **Arguments:** `rtol`, `atol`, `method` (`"polak_ribiere"` default, `"fletcher_reeves"`,
    `"hestenes_stiefel"`, `"dai_yuan"`), `search` (an `AbstractLineSearch`).

    **Example:**

    ```python
    rosenbrock = lambda y, _: jnp.sum(100 * (y[1:] - y[:-1] ** 2) ** 2 + (1 - y[:-1]) ** 2)
    sol = js.nonlinear.minimize(rosenbrock, js.nonlinear.NonlinearCG(rtol=1e-5, atol=1e-5, method="polak_ribiere"), jnp.zeros(4), max_steps=1000)
    print(sol.value, sol.stats["num_steps"])  # ~[1, 1, 1, 1]
    ```

    Reference: Polak & Ribière 1969; Fletcher & Reeves, "Function minimization by conjugate
    gradients", Comput. J. 1964.
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)
    method: str = eqx.field(static=True, default="polak_ribiere")
    search: AbstractLineSearch = StrongWolfe(c2=0.1)

    def __check_init__(self):
        NonlinearCGDescent(self.method)

    def _descent(self) -> AbstractDescent:
        return NonlinearCGDescent(self.method)

    def init(self, fn, y, args, options):
        return _init(self._descent(), fn, y, args)

    def step(self, fn, y, args, options, state):
        return _line_search_step(self._descent(), self.search, False, fn, y, args, options, state)

    def terminate(self, fn, y, args, options, state):
        return _terminate(self, y, state)


class BFGS(AbstractMinimiser):
    """BFGS with a dense inverse-Hessian approximation and a strong-Wolfe line search.

    **Arguments:** `rtol`, `atol`, `search` (default `StrongWolfe()`; `BacktrackingArmijo()`
    also works).

    **Example:**

    ```python
    rosenbrock = lambda y, _: jnp.sum(100 * (y[1:] - y[:-1] ** 2) ** 2 + (1 - y[:-1]) ** 2)
    sol = js.nonlinear.minimize(rosenbrock, js.nonlinear.BFGS(rtol=1e-5, atol=1e-5), jnp.zeros(4), max_steps=256)
    print(sol.value, sol.stats["num_steps"])  # ~[1, 1, 1, 1]
    ```

    Reference: Broyden, Fletcher, Goldfarb, Shanno (1970); Nocedal & Wright, Algorithm 6.1.
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)
    search: AbstractLineSearch = StrongWolfe()

    def init(self, fn, y, args, options):
        return _init(BFGSDescent(), fn, y, args)

    def step(self, fn, y, args, options, state):
        return _line_search_step(BFGSDescent(), self.search, True, fn, y, args, options, state)

    def terminate(self, fn, y, args, options, state):
        return _terminate(self, y, state)


class LBFGS(AbstractMinimiser):
    """Limited-memory BFGS (two-loop recursion) with a strong-Wolfe line search.

    **Arguments:** `rtol`, `atol`, `history_size` (a Python int, default 10), `search`
    (default `StrongWolfe()`).

    **Example:**

    ```python
    rosenbrock = lambda y, _: jnp.sum(100 * (y[1:] - y[:-1] ** 2) ** 2 + (1 - y[:-1]) ** 2)
    sol = js.nonlinear.minimize(rosenbrock, js.nonlinear.LBFGS(rtol=1e-5, atol=1e-5, history_size=5), jnp.zeros(4), max_steps=256)
    print(sol.value, sol.stats["num_steps"])  # ~[1, 1, 1, 1]
    ```

    Reference: Liu & Nocedal, "On the limited memory BFGS method for large scale optimization",
    Math. Programming 1989.
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)
    history_size: int = eqx.field(static=True, default=10)
    search: AbstractLineSearch = StrongWolfe()

    def __check_init__(self):
        LBFGSDescent(self.history_size)

    def init(self, fn, y, args, options):
        return _init(LBFGSDescent(self.history_size), fn, y, args)

    def step(self, fn, y, args, options, state):
        descent = LBFGSDescent(self.history_size)
        return _line_search_step(descent, self.search, True, fn, y, args, options, state)

    def terminate(self, fn, y, args, options, state):
        return _terminate(self, y, state)
