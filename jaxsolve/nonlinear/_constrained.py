"""Constrained minimisers over a convex set: projected gradient and Frank-Wolfe."""

from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._core import RESULTS, bounded_while_loop, check_option
from ._base import AbstractConstrainedMinimiser, hyperparameter
from ._constraints import AbstractConstraint


def _check_constraint(constraint):
    if not isinstance(constraint, AbstractConstraint):
        raise TypeError(
            "`constraint` must be an AbstractConstraint (Simplex, Box, Ball), got "
            f"{type(constraint).__name__}"
        )


class ProjectedGradientState(NamedTuple):
    f: Array
    grad: Array
    step_size: Array
    diff: Array
    grad_scale: Array  # max|grad f(y0)|


class ProjectedGradient(AbstractConstrainedMinimiser):
    """Projected gradient descent y <- P(y - t grad f(y)) with backtracking on t.

    The step starts at `learning_rate` and is halved until the sufficient-decrease condition
    `f(y+) <= f(y) + <g, y+ - y> + |y+ - y|^2 / (2t)` holds (then kept for the next step). Stops
    when the gradient mapping is small relative to the initial gradient,
    `max|y+ - y| / t <= atol + rtol max|grad f(y0)|` (not relative to |f|, which an additive
    constant in f would inflate). A non-finite f ends the solve with `RESULTS.nonfinite`.

    **Arguments:** `constraint` (`Simplex`, `Box`, `Ball`, or any `AbstractConstraint`),
    `learning_rate` (default 1.0), `rtol`, `atol`, `max_backtracks` (Python int, default 30).

    **Example:**

    ```python
    solver = js.nonlinear.ProjectedGradient(js.nonlinear.Box(lower=0.0, upper=1.0))
    fn = lambda y, target: jnp.sum((y - target) ** 2)
    target = jnp.array([-1.0, 0.5, 2.0])
    print(js.nonlinear.minimize(fn, solver, jnp.zeros(3), target).value)  # [0, 0.5, 1]
    # gradients by the implicit function theorem at the projected-gradient fixed point
    print(jax.grad(lambda t: js.nonlinear.minimize(fn, solver, jnp.zeros(3), t).value[1])(target))
    ```

    Reference: Beck & Teboulle, "A fast iterative shrinkage-thresholding algorithm", SIAM J.
    Imaging Sci. 2009 (the backtracking rule); Nesterov, *Introductory Lectures*, §2.2.
    """

    constraint: AbstractConstraint
    learning_rate: Array = hyperparameter(1.0)
    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)
    max_backtracks: int = eqx.field(static=True, default=30)

    def __check_init__(self):
        _check_constraint(self.constraint)

    def init(self, fn, y, args, options):
        f, grad = jax.value_and_grad(fn)(y, args)
        return ProjectedGradientState(
            f,
            grad,
            self.learning_rate.astype(y.dtype),
            jnp.full_like(y, jnp.inf),
            jnp.max(jnp.abs(grad)),
        )

    def step(self, fn, y, args, options, state):
        def trial(t):
            y_new = self.constraint.project(y - t * state.grad)
            diff = y_new - y
            f_new = fn(y_new, args)
            bound = state.f + jnp.vdot(state.grad, diff) + jnp.vdot(diff, diff) / (2 * t)
            ok = (f_new <= bound + 10 * jnp.finfo(y.dtype).eps * jnp.abs(state.f)) & jnp.isfinite(
                f_new
            )
            return t, y_new, ok

        out = bounded_while_loop(
            lambda c: ~c[2],
            lambda c: trial(0.5 * c[0]),
            trial(state.step_size),
            max_steps=self.max_backtracks,
            kind=options.get("loop_kind", "lax"),
        )
        t, y_new, _ = out.value
        f, grad = jax.value_and_grad(fn)(y_new, args)
        return y_new, ProjectedGradientState(f, grad, t, y_new - y, state.grad_scale)

    def terminate(self, fn, y, args, options, state):
        dtype = y.dtype
        tol = self.atol.astype(dtype) + self.rtol.astype(dtype) * state.grad_scale
        converged = jnp.max(jnp.abs(state.diff)) / state.step_size <= tol
        nonfinite = ~jnp.isfinite(state.f) | ~jnp.all(jnp.isfinite(state.grad))
        result = RESULTS.where(nonfinite, RESULTS.nonfinite, RESULTS.successful)
        return converged | nonfinite, result


class FrankWolfeState(NamedTuple):
    f: Array
    grad: Array
    gap: Array
    count: Array
    lipschitz: Array  # the curvature estimate of the line-search step rule
    gap_scale: Array  # the Frank-Wolfe gap at y0


class FrankWolfe(AbstractConstrainedMinimiser):
    """Frank-Wolfe (conditional gradient): s = argmin_{s in C} <grad f(y), s>,
    y <- y + gamma (s - y).

    `step_size="open_loop"` uses gamma_k = 2 / (k + 2); `step_size="line_search"` takes the
    adaptive short step gamma = min(<g, y - s> / (L |s - y|^2), 1), doubling the curvature
    estimate L until `f(y + gamma d) <= f(y) + gamma <g, d> + gamma^2 L |d|^2 / 2` holds
    (exact on quadratics once L is found). Stops when the Frank-Wolfe gap
    `<g, y - s>` (an upper bound on f(y) - f*) is `<= atol + rtol * gap(y0)` (relative to the
    initial gap, not to |f|, which an additive constant in f would inflate). A non-finite f
    ends the solve with `RESULTS.nonfinite`.

    **Arguments:** `constraint` (`Simplex`, `Box`, `Ball`), `step_size`, `rtol`, `atol`,
    `max_backtracks` (Python int, default 30).

    **Example:**

    ```python
    solver = js.nonlinear.FrankWolfe(js.nonlinear.Simplex(), step_size="line_search")
    fn = lambda p, c: jnp.vdot(p, c) + 0.5 * jnp.sum(p**2)
    sol = js.nonlinear.minimize(fn, solver, jnp.full(3, 1 / 3), jnp.array([0.2, 0.0, 0.1]))
    print(sol.value, sol.value.sum())  # a point of the simplex
    ```

    References: Frank & Wolfe, "An algorithm for quadratic programming", Naval Res. Logist. 1956;
    Jaggi, "Revisiting Frank-Wolfe: projection-free sparse convex optimization", ICML 2013;
    Pedregosa, Negiar, Askari & Jaggi, "Linearly convergent Frank-Wolfe with backtracking
    line-search", AISTATS 2020.
    """

    constraint: AbstractConstraint
    step_size: Literal["open_loop", "line_search"] = eqx.field(static=True, default="open_loop")
    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)
    max_backtracks: int = eqx.field(static=True, default=30)

    def __check_init__(self):
        _check_constraint(self.constraint)
        check_option("step_size", self.step_size, ("open_loop", "line_search"))

    def init(self, fn, y, args, options):
        f, grad = jax.value_and_grad(fn)(y, args)
        gap0 = jnp.vdot(grad, y - self.constraint.linear_minimizer(grad))
        return FrankWolfeState(
            f,
            grad,
            jnp.asarray(jnp.inf, y.dtype),
            jnp.array(0, jnp.int32),
            jnp.ones((), y.dtype),
            jnp.abs(gap0),
        )

    def step(self, fn, y, args, options, state):
        vertex = self.constraint.linear_minimizer(state.grad)
        direction = vertex - y
        slope = jnp.vdot(state.grad, direction)
        lipschitz = state.lipschitz
        if self.step_size == "open_loop":
            gamma = 2.0 / (state.count.astype(y.dtype) + 2.0)
        else:
            # Adaptive short step (Pedregosa et al. 2020): gamma = min(gap / (L |d|^2), 1), with
            # the curvature estimate L doubled until the quadratic upper bound holds, and
            # shrunk by 0.9 before the next step.
            d2 = jnp.vdot(direction, direction)
            safe_d2 = jnp.where(d2 > 0, d2, 1.0)

            def trial(lipschitz):
                gamma = jnp.clip(-slope / (lipschitz * safe_d2), 0.0, 1.0)
                f_new = fn(y + gamma * direction, args)
                bound = state.f + gamma * slope + 0.5 * gamma**2 * lipschitz * d2
                slack = 8 * jnp.finfo(y.dtype).eps * jnp.abs(state.f)
                return lipschitz, gamma, (f_new <= bound + slack) & jnp.isfinite(f_new)

            out = bounded_while_loop(
                lambda c: ~c[2],
                lambda c: trial(2.0 * c[0]),
                trial(0.9 * state.lipschitz),
                max_steps=self.max_backtracks,
                kind=options.get("loop_kind", "lax"),
            )
            lipschitz, gamma, ok = out.value
            gamma = jnp.where(ok, gamma, 0.0)
        # Do not move once the gap at y already meets the tolerance: y is the answer.
        gap = -slope
        tol = self.atol.astype(y.dtype) + self.rtol.astype(y.dtype) * state.gap_scale
        gamma = jnp.where(gap <= tol, 0.0, gamma)
        y_new = y + gamma * direction
        f, grad = jax.value_and_grad(fn)(y_new, args)
        return y_new, FrankWolfeState(f, grad, gap, state.count + 1, lipschitz, state.gap_scale)

    def terminate(self, fn, y, args, options, state):
        dtype = y.dtype
        tol = self.atol.astype(dtype) + self.rtol.astype(dtype) * state.gap_scale
        nonfinite = ~jnp.isfinite(state.f) | ~jnp.all(jnp.isfinite(state.grad))
        result = RESULTS.where(nonfinite, RESULTS.nonfinite, RESULTS.successful)
        return (state.gap <= tol) | nonfinite, result
