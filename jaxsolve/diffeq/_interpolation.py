"""The dense output of a whole solve: `Solution.evaluate(t)` (asked for with `SaveAt(dense=True)`).

Every accepted step leaves its `DenseInfo` (the stages of a Runge–Kutta step, or the end values
and derivatives for a Hermite interpolant); `evaluate` finds the step that covers `t` and
evaluates that step's interpolant, the same one `SaveAt.ts` uses. It is differentiable in `t`
(the interpolant is a polynomial in `t`) and in everything the solve was differentiated in (the
stored stages are functions of `y0` and `args`); which step covers `t` is a discrete choice, not
differentiated.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._solver import interpolate


def _as_tuples(weights):
    if weights is None or isinstance(weights, tuple):
        return weights
    return tuple(tuple(float(w) for w in row) for row in np.asarray(weights))


class DenseInterpolation(eqx.Module):
    """The dense output of a solve, as stored on `Solution.interpolation`.

    - `starts`, `ends`: the accepted steps' intervals in integration time `tau = sign * t`,
      shape `(num_slots,)`; unused slots have `ends == inf` (so `ends` stays sorted).
    - `infos`: the steps' `DenseInfo`s stacked on a leading axis of the same length.
    - `num_accepted`: how many slots hold a step.
    - `sign`: `+1` for `t1 >= t0`, `-1` for backwards integration.
    - `weights`: the solver's `dense_weights` (static), or `None`.

    Use it through `Solution.evaluate`.
    """

    starts: Any
    ends: Any
    infos: Any
    num_accepted: Any
    sign: Any
    last: Any
    # The solver's `dense_weights` as nested tuples (hashable static data), or None.
    weights: Any = eqx.field(static=True, default=None, converter=_as_tuples)

    def evaluate(self, t):
        """The solution at the time(s) `t` (any shape); leaves of shape `(*t.shape, *y.shape)`."""
        t = jnp.asarray(t, self.starts.dtype)
        tau = self.sign * t
        count = jnp.maximum(self.num_accepted, 1)
        first = self.starts[0]
        slack = (
            64
            * jnp.finfo(tau.dtype).eps
            * jnp.maximum(
                jnp.maximum(jnp.abs(first), jnp.abs(self.last)), jnp.abs(self.last - first)
            )
        )
        inside = jnp.all((tau >= first - slack) & (tau <= self.last + slack))
        tau = eqx.error_if(
            tau,
            ~inside,
            "`Solution.evaluate`: t lies outside the interval the solve covered (from t0 to t1, "
            "or to the event time)",
        )

        weights = None if self.weights is None else np.asarray(self.weights)

        def one(s):
            index = jnp.searchsorted(self.ends, s, side="left").astype(count.dtype)
            index = jnp.clip(index, 0, count - 1)
            info = jax.tree.map(lambda x: x[index], self.infos)
            return interpolate(self.starts[index], self.ends[index], info, s, weights)

        flat = tau.reshape(-1)
        values = jax.vmap(one)(flat)
        return jax.tree.map(lambda v: v.reshape(tau.shape + v.shape[1:]), values)
