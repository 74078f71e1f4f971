"""Line searches: given a point, its value and gradient and a descent direction, choose a step.

Two searches, each a small final module with its constants as fields:

- `BacktrackingArmijo`: shrink the step until the sufficient-decrease (Armijo) condition holds.
- `StrongWolfe`: bracket-and-zoom search for a step satisfying the strong Wolfe conditions
  (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithms 3.5 and 3.6), with safeguarded
  quadratic interpolation inside the bracket.

Both run their trials in `bounded_while_loop`, so they are differentiable when the outer solver is
unrolled (`RecursiveCheckpointAdjoint`).
"""

import abc
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int

from .._core import bounded_while_loop
from ._base import hyperparameter


class LineSearchResult(NamedTuple):
    """The accepted step: its size, the new point, its value and gradient, whether the search
    succeeded, and how many function evaluations it used.

    **Example:**

    ```python
    vg = jax.value_and_grad(lambda y: jnp.sum(y**2))
    y = jnp.ones(2)
    out = js.nonlinear.StrongWolfe().search(vg, y, *vg(y), -y, jnp.array(1.0), {"loop_kind": "lax"})
    print(out.step_size, out.y, out.ok, out.num_evals)
    ```
    """

    step_size: Array
    y: Array
    f: Array
    grad: Array
    ok: Bool[Array, ""]
    num_evals: Int[Array, ""]


class AbstractLineSearch(eqx.Module):
    """A line search. Subclasses implement `search`.

    `search(value_and_grad, y, f, grad, direction, initial_step, options)` gets
    `value_and_grad(y) -> (f, grad)` on 1-D arrays, the current point with its value and
    gradient, a descent direction and the first trial step, and returns a `LineSearchResult`.

    **Example:**

    ```python
    value_and_grad = jax.value_and_grad(lambda y: jnp.sum(y**2))
    y = jnp.array([1.0, -2.0])
    f, grad = value_and_grad(y)
    search = js.nonlinear.BacktrackingArmijo()
    out = search.search(value_and_grad, y, f, grad, -grad, jnp.array(1.0), {"loop_kind": "lax"})
    print(out.step_size, out.y, out.ok)  # a search returns a LineSearchResult
    ```
    """

    @abc.abstractmethod
    def search(
        self, value_and_grad, y, f, grad, direction, initial_step, options
    ) -> LineSearchResult:
        """Choose the step size along `direction`."""


def _roundoff_slack(f):
    # Near a minimum, decreases of f fall below its rounding error and a strict Armijo test
    # rejects every step; allow a few ulps of |f| (as Hager & Zhang's approximate Wolfe
    # conditions do, with a much smaller margin), so the gradient test can still be reached.
    return 8 * jnp.finfo(f.dtype).eps * jnp.abs(f)


class BacktrackingArmijo(AbstractLineSearch):
    """Backtracking: try `initial_step`, then multiply by `shrink` until
    `f(y + t d) <= f(y) + decrease * t * <grad, d>`.

    **Arguments:** `decrease` (the Armijo constant c1, default 1e-4), `shrink` (default 0.5),
    `max_steps` (a Python int, default 40).

    **Example:**

    ```python
    rosenbrock = lambda y, _: (1 - y[0]) ** 2 + 100 * (y[1] - y[0] ** 2) ** 2
    solver = js.nonlinear.LBFGS(search=js.nonlinear.BacktrackingArmijo(decrease=1e-4, shrink=0.5))
    print(js.nonlinear.minimize(rosenbrock, solver, jnp.zeros(2)).value)  # ~[1, 1]
    ```

    Reference: Armijo, "Minimization of functions having Lipschitz continuous first partial
    derivatives", Pacific J. Math. 1966.
    """

    decrease: Array = hyperparameter(1e-4)
    shrink: Array = hyperparameter(0.5)
    max_steps: int = eqx.field(static=True, default=40)

    def search(self, value_and_grad, y, f, grad, direction, initial_step, options):
        slope = jnp.vdot(grad, direction)
        initial_step = jnp.asarray(initial_step, y.dtype)
        slack = _roundoff_slack(f)

        def evaluate(t):
            f_new, g_new = value_and_grad(y + t * direction)
            ok = (f_new <= f + self.decrease * t * slope + slack) & jnp.isfinite(f_new)
            return t, f_new, g_new, ok

        def cond(carry):
            return ~carry[3]

        def body(carry):
            return evaluate(carry[0] * self.shrink.astype(y.dtype))

        out = bounded_while_loop(
            cond,
            body,
            evaluate(initial_step),
            max_steps=self.max_steps,
            kind=options.get("loop_kind", "lax"),
        )
        t, f_new, g_new, ok = out.value
        return LineSearchResult(t, y + t * direction, f_new, g_new, ok, out.num_steps + 1)


class _WolfeCarry(NamedTuple):
    t: Array  # the next trial step
    lo: Array  # the best step so far satisfying sufficient decrease (0 at first)
    f_lo: Array
    dphi_lo: Array
    g_lo: Array
    hi: Array  # the other end of the bracket (inf until a bracket is found)
    f_hi: Array
    done: Bool[Array, ""]


class StrongWolfe(AbstractLineSearch):
    """A line search for the strong Wolfe conditions
    `f(y + t d) <= f(y) + c1 t <g, d>` and `|<g(y + t d), d>| <= c2 |<g, d>|`.

    Expands the trial step by `expand` until a bracket is found, then zooms with safeguarded
    quadratic interpolation. If `max_steps` trials do not satisfy both conditions, the best
    point found with sufficient decrease is returned (`ok` is False only if there is none).

    **Arguments:** `c1` (default 1e-4), `c2` (default 0.9; use 0.1 for nonlinear CG),
    `expand` (default 2.0), `max_steps` (a Python int, default 30).

    **Example:**

    ```python
    solver = js.nonlinear.BFGS(search=js.nonlinear.StrongWolfe(c1=1e-4, c2=0.5))
    print(js.nonlinear.minimize(lambda y, _: jnp.sum((y - 1.0) ** 2), solver, jnp.zeros(3)).value)
    ```

    Reference: Nocedal & Wright, *Numerical Optimization*, 2nd ed., 2006, Algorithms 3.5-3.6.
    """

    c1: Array = hyperparameter(1e-4)
    c2: Array = hyperparameter(0.9)
    expand: Array = hyperparameter(2.0)
    max_steps: int = eqx.field(static=True, default=30)

    def search(self, value_and_grad, y, f, grad, direction, initial_step, options):
        dtype = y.dtype
        c1, c2, expand = (x.astype(dtype) for x in (self.c1, self.c2, self.expand))
        slope = jnp.vdot(grad, direction)
        slack = _roundoff_slack(f)
        zero = jnp.zeros((), dtype)
        init = _WolfeCarry(
            t=jnp.asarray(initial_step, dtype),
            lo=zero,
            f_lo=f,
            dphi_lo=slope,
            g_lo=grad,
            hi=jnp.asarray(jnp.inf, dtype),
            f_hi=jnp.asarray(jnp.inf, dtype),
            done=jnp.array(False),
        )

        def body(c: _WolfeCarry) -> _WolfeCarry:
            t = c.t
            f_t, g_t = value_and_grad(y + t * direction)
            dphi_t = jnp.vdot(g_t, direction)
            # <g_t, d> is NaN or inf when g_t has a NaN or inf entry (inf * 0 is NaN): one
            # reduction less than checking g_t itself.
            finite = jnp.isfinite(f_t) & jnp.isfinite(dphi_t)
            to_hi = (f_t > f + c1 * t * slope + slack) | (f_t > c.f_lo + slack) | ~finite
            curvature = jnp.abs(dphi_t) <= -c2 * slope
            done = ~to_hi & curvature
            move_lo = ~to_hi & ~curvature
            swap = move_lo & (dphi_t * jnp.sign(c.hi - c.lo) >= 0)
            hi = jnp.where(to_hi, t, jnp.where(swap, c.lo, c.hi))
            f_hi = jnp.where(to_hi, f_t, jnp.where(swap, c.f_lo, c.f_hi))
            take = move_lo | done
            lo = jnp.where(take, t, c.lo)
            f_lo = jnp.where(take, f_t, c.f_lo)
            dphi_lo = jnp.where(take, dphi_t, c.dphi_lo)
            g_lo = jnp.where(take, g_t, c.g_lo)
            bracketed = jnp.isfinite(hi)
            # Safeguarded minimiser of the quadratic through (lo, f_lo, dphi_lo) and (hi, f_hi).
            width = hi - lo
            safe_width = jnp.where(bracketed, width, 1.0)
            denom = 2.0 * (f_hi - f_lo - dphi_lo * safe_width)
            quad = lo - dphi_lo * safe_width**2 / jnp.where(denom == 0, 1.0, denom)
            a, b = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
            margin = 0.1 * jnp.abs(safe_width)
            inside = (quad >= a + margin) & (quad <= b - margin) & (denom > 0)
            inside = inside & jnp.isfinite(quad)
            zoom_t = jnp.where(inside, quad, 0.5 * (lo + jnp.where(bracketed, hi, lo)))
            next_t = jnp.where(bracketed, zoom_t, expand * t)
            return _WolfeCarry(next_t, lo, f_lo, dphi_lo, g_lo, hi, f_hi, done)

        # The first trial usually succeeds (quasi-Newton steps): run it outside the loop so
        # that the loop is entered only when the step must be expanded or zoomed.
        first = body(init)
        if self.max_steps > 1:
            out = bounded_while_loop(
                lambda c: ~c.done,
                body,
                first,
                max_steps=self.max_steps - 1,
                kind=options.get("loop_kind", "lax"),
            )
            c, num_evals = out.value, out.num_steps + 1
        else:
            c, num_evals = first, jnp.array(1)
        ok = c.done | (c.lo > 0)
        return LineSearchResult(c.lo, y + c.lo * direction, c.f_lo, c.g_lo, ok, num_evals)
