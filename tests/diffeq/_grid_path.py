"""A cheap Brownian path for solver-order tests: exact (W, H) on a fixed uniform grid.

`W` and the running time integral `∫ W dr` are accumulated on a grid of `num_cells` cells, with
exact Gaussian `(W, H)` per cell; queries must fall on grid points (checked). Any increment
between grid points then has exactly the joint law of Brownian motion and its space-time Lévy
area. It compiles in a fraction of the time of the virtual tree, so the per-solver order tests
stay fast; the solvers are also tested on `VirtualBrownianTree` itself in `test_sde.py`.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxsolve.brownian import AbstractBrownianPath, BrownianIncrement


class GridBrownianPath(AbstractBrownianPath):
    t0: Any
    t1: Any
    cum_w: Any
    cum_int: Any
    num_cells: int = eqx.field(static=True)
    shape: Any = eqx.field(static=True)
    levy_area: str = eqx.field(static=True)

    def __init__(self, t0, t1, num_cells, shape, key, levy_area="space-time", dtype=jnp.float64):
        self.t0, self.t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
        self.num_cells, self.shape, self.levy_area = num_cells, shape, levy_area
        h = (t1 - t0) / num_cells
        key_w, key_h = jax.random.split(key)
        dw = jax.random.normal(key_w, (num_cells, *shape), dtype) * jnp.sqrt(h)
        dh = jax.random.normal(key_h, (num_cells, *shape), dtype) * jnp.sqrt(h / 12)
        zero = jnp.zeros((1, *shape), dtype)
        w = jnp.concatenate([zero, jnp.cumsum(dw, 0)])
        # ∫ over cell k of W(r) - W(t0) dr = h W_k + h (dW_k / 2 + H_k)
        cell_int = h * w[:-1] + h * (dw / 2 + dh)
        self.cum_w = w
        self.cum_int = jnp.concatenate([zero, jnp.cumsum(cell_int, 0)])

    def _index(self, t):
        t = jnp.asarray(t).astype(self.t0.dtype)
        x = (t - self.t0) / (self.t1 - self.t0) * self.num_cells
        index = jnp.round(x)
        index = eqx.error_if(index, jnp.abs(x - index) > 1e-6, "query off the grid")
        return index.astype(jnp.int32)

    def increment(self, s, t):
        i, j = self._index(s), self._index(t)
        w = self.cum_w[j] - self.cum_w[i]
        h = (jnp.asarray(t) - jnp.asarray(s)).astype(self.t0.dtype)
        integral = self.cum_int[j] - self.cum_int[i] - h * self.cum_w[i]
        safe_h = jnp.where(h > 0, h, 1)
        hh = jnp.where(h > 0, integral / safe_h - w / 2, jnp.zeros_like(w))
        return BrownianIncrement(h, w, hh if self.levy_area != "none" else None)

    def increments(self, ts):
        return jax.vmap(self.increment)(ts[:-1], ts[1:])

    def evaluate(self, t):
        return self.increment(self.t0, t).W
