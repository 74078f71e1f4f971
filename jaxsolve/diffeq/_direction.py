"""Integration backwards in time (`t1 < t0`), by a change of variable.

`solve` always steps forwards in `tau = d * t`, with `d = sign(t1 - t0)` (a Python int when the
times are known before tracing, a traced scalar otherwise). In `tau` the ODE `dy/dt = f(t, y)`
reads `dy/dtau = d f(d tau, y)`, and the SDE `dy = f dt + g dW` reads
`dy = d f(d tau, y) dtau + g(d tau, y) dB` with `B(tau) = W(d tau)`, again a Brownian motion.
Over `[a, b]` in `tau` (so `[-b, -a]` in `t` when `d = -1`), `B`'s increment is `-W_{-b,-a}`;
its bridge at `a + u` is `W`'s bridge at `-a - u`, so the space-time Lévy area is unchanged, and
the space-time-time area, odd in time, changes sign. Solvers see an ordinary forward problem.

The wrappers are equinox modules that hold the user's callables as fields, so a jitted solve
sees the same static structure on every call (a closure made per call would recompile).
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ..brownian import BrownianIncrement
from ._term import ODETerm, SDETerm


def _scale(direction, tree):
    return jax.tree.map(lambda x: jnp.asarray(direction).astype(x.dtype) * x, tree)


def _time(direction, t):
    return jnp.asarray(direction).astype(jnp.result_type(t)) * t


class _ReversedField(eqx.Module):
    """`(t, y, args) -> sign * fn(d t, y, args)`: `sign = d` for drifts, `1` for diffusions."""

    fn: Callable
    direction: Any
    scale_output: bool = eqx.field(static=True)

    def __call__(self, t, y, args):
        out = self.fn(_time(self.direction, t), y, args)
        return _scale(self.direction, out) if self.scale_output else out


class _ReversedBrownian(eqx.Module):
    """The Brownian motion `B(tau) = W(d tau)` of a path `W` (see the module docstring)."""

    path: Any
    direction: Any

    @property
    def levy_area(self):
        return self.path.levy_area

    @property
    def shape(self):
        return self.path.shape

    def _flip(self, inc: BrownianIncrement, dt) -> BrownianIncrement:
        d = self.direction
        k = None if inc.K is None else _scale(d, inc.K)
        return BrownianIncrement(dt, _scale(d, inc.W), inc.H, k)

    def increment(self, s, t) -> BrownianIncrement:
        forward = jnp.asarray(self.direction) > 0
        a = jnp.where(forward, s, -t)
        b = jnp.where(forward, t, -s)
        return self._flip(self.path.increment(a, b), t - s)

    def increments(self, ts) -> BrownianIncrement:
        # Only used on grids known before tracing, where the direction is a Python int.
        if self.direction > 0:
            return self.path.increments(ts)
        inc = self.path.increments(-ts[::-1])
        inc = jax.tree.map(lambda x: x[::-1], inc)
        return self._flip(inc, ts[1:] - ts[:-1])

    def evaluate(self, t):
        return _scale(self.direction, self.path.evaluate(_time(self.direction, t)))


def reverse_terms(terms, direction):
    """`terms` seen in `tau = direction * t` (see the module docstring).

    **Arguments:** `terms`, an `ODETerm` or `SDETerm`; `direction`, -1 or a traced sign.

    **Returns:** a term of the same class, integrated forwards in `tau`.
    """
    if isinstance(terms, ODETerm):
        return ODETerm(_ReversedField(terms.vector_field, direction, True))
    if isinstance(terms, SDETerm):
        return SDETerm(
            _ReversedField(terms.drift, direction, True),
            _ReversedField(terms.diffusion, direction, False),
            _ReversedBrownian(terms.brownian, direction),
            noise=terms.noise,
        )
    raise ValueError(
        f"integrating backwards in time (t1 < t0) is supported for ODETerm and SDETerm, not "
        f"{type(terms).__name__}"
    )
