r"""Step sizes set by the state, not by an error estimate.

Some SDEs say themselves how large a step may be: for the CIR process `sqrt(y)` is
Lipschitz away from 0 with constant `~ 1/sqrt(y)`, so a step of size `(c y)^{2/3}` keeps the
local error of a high-order method uniform along the path (Jelinčič, Foster, Kidger et al.,
2024, §5). `StateDependentStep` takes such a rule from the user and runs it in `solve`'s
adaptive loop: the step is tried, the rule is evaluated at both ends, and the step is kept if
it was not much larger than the rule allows at either end.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._core import check_positive, hyperparameter
from ._controller import AbstractStepSizeController


class StateDependentStep(AbstractStepSizeController):
    r"""Step sizes given by a function of the state: `h = step_size(t, y)`.

    After a step from `(t0, y0)` to `(t1, y1)` the target is

        target = clip(min(step_size(t0, y0), step_size(t1, y1)), dtmin, dtmax),

    the step is accepted when `t1 - t0 <= factor * target`, and the next step is
    `clip(step_size(t1, y1), dtmin, dtmax)` after an acceptance, `target` after a rejection (the
    same step retried shorter, on the same Brownian path). For a `step_size` increasing in `y`,
    such as the CIR rule `(c y)^{2/3}`, the target is `step_size(min(y0, y1))`: the rule of
    Jelinčič, Foster, Kidger et al. (2024) with `factor = 1.1`.

    **Arguments:**

    - `step_size`: `step_size(t, y) -> scalar`, the desired step at `(t, y)` (non-negative).
      To vary a constant in it without recompiling, make it an `eqx.Module` with array fields.
      `t` is the time in the direction of integration.
    - `factor`: accept a step up to `factor` times the target (default 1.1; >= 1 avoids
      rejecting the step the rule itself proposed).
    - `dtmin`, `dtmax`: clip the target (default: none). Without `dtmin` a target of 0 (a state
      where the rule allows no step) stops the solve with `RESULTS.dt_underflow`.

    The solver's error estimate is not used, but `solve` only runs adaptive loops with solvers
    that declare one (`solver.adaptive`). The first step is `dt0` (pass the rule's value at
    `y0`, or `dtmax`: a too-large first step is rejected and retried at the target). A step
    whose end is not finite is rejected and retried at half its size.

    **Example** (steps proportional to `|y|` for `dy/dt = -y`: each step shrinks `y` by a
    constant factor, so the solve takes about `log(y0/y1)/log(1 + 0.1)` steps):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -y)
    controller = js.diffeq.StateDependentStep(lambda t, y: 0.1 * jnp.abs(y[0]), dtmax=1.0)
    sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 5.0, jnp.ones(1), dt0=0.1,
                          controller=controller, saveat=js.diffeq.SaveAt(steps=True))
    n = int(sol.stats["num_accepted_steps"])
    ratios = jnp.diff(sol.ts[:n]) / (0.1 * sol.ys[: n - 1, 0])
    assert jnp.allclose(ratios[:-1], 1.0, rtol=1e-2)  # every step is the rule's (not the last)
    assert jnp.allclose(sol.ys[n - 1, 0], jnp.exp(-5.0), rtol=1e-6)
    ```

    Reference: Jelinčič, Foster, Kidger et al., "Single-seed generation of Brownian paths and
    integrals for adaptive and high order SDE solvers" (2024), §5 (the CIR experiment).
    """

    step_size: Callable
    factor: Any = hyperparameter(1.1)
    dtmin: Any = hyperparameter(None)
    dtmax: Any = hyperparameter(None)

    def __check_init__(self):
        if not callable(self.step_size):
            raise TypeError(
                f"`step_size` must be callable as step_size(t, y), got "
                f"{type(self.step_size).__name__}"
            )
        check_positive("factor", self.factor)
        for name in ("dtmin", "dtmax"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        if (
            self.dtmin is not None
            and self.dtmax is not None
            and not isinstance(self.dtmin, jax.core.Tracer)
            and not isinstance(self.dtmax, jax.core.Tracer)
            and float(self.dtmin) > float(self.dtmax)
        ):
            raise ValueError(
                f"`dtmin` must be at most `dtmax`, got dtmin={float(self.dtmin)}, "
                f"dtmax={float(self.dtmax)}"
            )

    def init(self, dtype):
        return None

    def _target(self, t, y, dtype):
        value = self.step_size(t, y)
        if jnp.shape(value) != ():
            raise ValueError(
                "`step_size(t, y)` must return a scalar (reduce over the state, e.g. with "
                f"jnp.min), got shape {jnp.shape(value)}"
            )
        value = jnp.asarray(value).astype(dtype)
        if self.dtmax is not None:
            value = jnp.minimum(value, jnp.asarray(self.dtmax).astype(dtype))
        if self.dtmin is not None:
            value = jnp.maximum(value, jnp.asarray(self.dtmin).astype(dtype))
        return value

    def adapt(self, t0, t1, y0, y1, y_error, error_order, state):
        dt = t1 - t0
        dtype = dt.dtype
        start = self._target(t0, y0, dtype)
        end = self._target(t1, y1, dtype)
        target = jnp.minimum(start, end)
        finite = jnp.isfinite(target) & jnp.isfinite(end)
        for leaf in jax.tree.leaves(y1):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        factor = jnp.asarray(self.factor).astype(dtype)
        accept = finite & (dt <= factor * target)
        dt_next = jnp.where(accept, end, target)
        dt_next = jnp.where(finite, dt_next, 0.5 * dt)
        # Without dtmin the rule may allow no step at all (a CIR path at 0): say so.
        underflow = finite & ~(dt_next > 0)
        return accept, dt_next, state, underflow
