"""Unconstrained minimisers: gradient descent, and line-search minimisers composed of a descent
(which way) and a line search (how far): nonlinear CG, BFGS and L-BFGS.

All stop when the gradient is small relative to the objective:
`max|grad f(y)| <= atol + rtol * |f(y)|`. A line search that finds no acceptable step ends the
solve with `RESULTS.nonconvergence` (unless the gradient test already holds).
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


def _value_and_grad(fn, args):
    return jax.value_and_grad(lambda y: fn(y, args))


def _gradient_converged(solver, state):
    dtype = state.grad.dtype
    tol = solver.atol.astype(dtype) + solver.rtol.astype(dtype) * jnp.abs(state.f)
    return jnp.max(jnp.abs(state.grad)) <= tol


def _init(descent, fn, y, args):
    f, grad = _value_and_grad(fn, args)(y)
    return MinimiserState(
        f=f,
        grad=grad,
        descent_state=descent.init(y, grad),
        step_size=jnp.zeros((), y.dtype),
        slope=jnp.zeros((), y.dtype),
        search_ok=jnp.array(True),
        num_fn_evals=jnp.array(1, jnp.int32),
    )


def _line_search_step(descent, search, unit_step, fn, y, args, options, state):
    direction, descent_state = descent.direction(state.grad, state.descent_state)
    slope = jnp.vdot(state.grad, direction)
    first = state.step_size == 0
    # Quasi-Newton directions are scaled: try t = 1. Otherwise (and on the first step) reuse the
    # last step's first-order change, t0 = t_prev * slope_prev / slope (Nocedal & Wright 3.5).
    g_scale = jnp.maximum(jnp.max(jnp.abs(state.grad)), 1.0)
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
    new_state = MinimiserState(
        f=ls.f,
        grad=ls.grad,
        descent_state=descent_state,
        step_size=jnp.where(ls.ok, ls.step_size, state.step_size).astype(y.dtype),
        slope=slope,
        search_ok=ls.ok,
        num_fn_evals=state.num_fn_evals + ls.num_evals.astype(jnp.int32),
    )
    return ls.y, new_state


def _terminate(solver, state):
    converged = _gradient_converged(solver, state)
    done = converged | ~state.search_ok
    result = RESULTS.where(converged, RESULTS.successful, RESULTS.nonconvergence)
    return done, result


class GradientDescent(AbstractMinimiser):
    """Gradient descent with a constant step: y <- y - learning_rate * grad f(y).

    **Arguments:** `learning_rate` (default 1e-2), `rtol`, `atol` (stop when
    `max|grad| <= atol + rtol |f|`). All three are array fields: new values do not recompile.

    **Example:** `js.nonlinear.minimize(f, js.nonlinear.GradientDescent(learning_rate=0.1), y0)`.

    Reference: Cauchy, "Méthode générale pour la résolution des systèmes d'équations
    simultanées", 1847.
    """

    learning_rate: Array = hyperparameter(1e-2)
    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)

    def init(self, fn, y, args, options):
        return _init(SteepestDescent(), fn, y, args)

    def step(self, fn, y, args, options, state):
        y = y - self.learning_rate.astype(y.dtype) * state.grad
        f, grad = _value_and_grad(fn, args)(y)
        return y, state._replace(f=f, grad=grad, num_fn_evals=state.num_fn_evals + 1)

    def terminate(self, fn, y, args, options, state):
        return _terminate(self, state)


class NonlinearCG(AbstractMinimiser):
    """Nonlinear conjugate gradients with a strong-Wolfe line search (c2 = 0.1 by default).

    **Arguments:** `rtol`, `atol`, `method` (`"polak_ribiere"` default, `"fletcher_reeves"`,
    `"hestenes_stiefel"`, `"dai_yuan"`), `search` (an `AbstractLineSearch`).

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
        return _terminate(self, state)


class BFGS(AbstractMinimiser):
    """BFGS with a dense inverse-Hessian approximation and a strong-Wolfe line search.

    **Arguments:** `rtol`, `atol`, `search` (default `StrongWolfe()`; `BacktrackingArmijo()`
    also works).

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
        return _terminate(self, state)


class LBFGS(AbstractMinimiser):
    """Limited-memory BFGS (two-loop recursion) with a strong-Wolfe line search.

    **Arguments:** `rtol`, `atol`, `history_size` (a Python int, default 10), `search`
    (default `StrongWolfe()`).

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
        return _terminate(self, state)
