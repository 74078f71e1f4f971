"""Brownian motion on a fixed grid: independent increments, the fast path of fixed-step solves."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, PyTree

from .._core import check_option, is_concrete
from ._base import (
    LEVY_AREAS,
    AbstractBrownianPath,
    BrownianIncrement,
    leaf_specs,
    parse_key,
    parse_shape,
)

# Variances of (W, H, K) over a step of length h, as multiples of h: independent Gaussians.
_VARIANCE = (1.0, 1.0 / 12.0, 1.0 / 720.0)
_NUM_COORDS = {"none": 1, "space-time": 2, "space-time-time": 3}


class GridBrownianPath(AbstractBrownianPath):
    r"""Brownian motion known only on the grid `t0 + i (t1 - t0)/num_steps`, `i = 0..num_steps`.

    Each step's `(W, H, K)` is drawn directly from its exact law (independent Gaussians with
    variances `h`, `h/12`, `h/720`), all steps at once from one key: no tree to descend, so a
    fixed-step solve on this grid costs what a hand-written scan over pre-drawn normals costs
    (`benchmarks/RESULTS.md`, "EM"). This is the fast path for fixed-step SDE solves whose
    noise never needs to be refined; use `VirtualBrownianTree` for adaptive steps, for
    convergence studies that compare step sizes on one path, and for queries between grid
    points.

    Queries must lie on the grid: `increments(ts)` takes the grid itself, and
    `increment(s, t)` / `evaluate(t)` take grid points (`W` over several steps is their sum;
    `H`, `K` are given over single steps only, as Lévy areas over longer intervals would need
    the steps' joint bridge). Anything else raises, eagerly for concrete times and at run time
    via `equinox.error_if` under `jit`, so an adaptive solver driven by this path stops with an
    error rather than sampling the wrong law. Single queries cost `O(num_steps)` (the whole
    draw is regenerated from the key); the grid query is the one to use.

    **Arguments:**

    - `t0`, `t1`: the interval (`t0 < t1`), concrete numbers.
    - `num_steps`: the number of grid steps (a positive int).
    - `shape`: the shape of `W`: a tuple of ints, or a pytree of `jax.ShapeDtypeStruct`.
    - `key`: a `jax.random` key (typed or legacy `uint32[2]`).
    - `levy_area`: `"none"`, `"space-time"` or `"space-time-time"`.
    - `dtype`: the dtype of `W` and the times when `shape` is a tuple (default: JAX's float).

    **Example:**

    ```python
    import jax.numpy as jnp
    import jax.random as jr
    import jaxsolve as js

    bm = js.brownian.GridBrownianPath(0.0, 1.0, 100, (2,), jr.key(0))
    drift = lambda t, y, args: -y
    diffusion = lambda t, y, args: 0.5 * y
    term = js.diffeq.SDETerm(drift, diffusion, bm)
    sol = js.diffeq.solve(term, js.diffeq.EulerMaruyama(), 0.0, 1.0, jnp.ones(2), dt0=0.01)
    # the same increments, drawn once for the grid, drive a hand-written Euler-Maruyama scan
    dW = bm.increments(jnp.linspace(0.0, 1.0, 101)).W
    y = jnp.ones(2)
    for w in dW:
        y = y - 0.01 * y + 0.5 * y * w
    assert jnp.allclose(sol.ys[-1], y, rtol=1e-5)
    ```
    """

    t0: Array
    t1: Array
    key: Array
    num_steps: int = eqx.field(static=True)
    interval: tuple[float, float] = eqx.field(static=True)
    shape: Any = eqx.field(static=True)
    levy_area: str = eqx.field(static=True)
    time_dtype: Any = eqx.field(static=True)

    def __init__(
        self,
        t0,
        t1,
        num_steps: int,
        shape: tuple[int, ...] | PyTree[jax.ShapeDtypeStruct],
        key,
        levy_area: str = "none",
        dtype=None,
    ):
        check_option("levy_area", levy_area, LEVY_AREAS)
        for name, value in (("t0", t0), ("t1", t1)):
            if not is_concrete(value) or jnp.shape(value) != ():
                raise ValueError(f"`{name}` must be a concrete scalar (the grid is fixed)")
        if not float(t0) < float(t1):
            raise ValueError(f"`t1` must be greater than `t0`, got t0={float(t0)}, t1={float(t1)}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
            raise TypeError(f"`num_steps` must be a positive int, got {num_steps!r}")
        if num_steps < 1:
            raise ValueError(f"`num_steps` must be a positive int, got {num_steps}")
        shape, time_dtype = parse_shape(shape, dtype)
        self.t0 = jnp.asarray(t0, time_dtype)
        self.t1 = jnp.asarray(t1, time_dtype)
        self.key = parse_key(key)
        self.num_steps = int(num_steps)
        self.interval = (float(t0), float(t1))
        self.shape = shape
        self.levy_area = levy_area
        self.time_dtype = time_dtype

    @property
    def grid(self) -> Array:
        """The grid times, `num_steps + 1` of them."""
        return jnp.linspace(self.t0, self.t1, self.num_steps + 1, dtype=self.time_dtype)

    # ------------------------------------------------------------------------------------------

    def _draw(self) -> BrownianIncrement:
        """Every step's increment (leading axis `num_steps`)."""
        h = (self.t1 - self.t0) / self.num_steps
        leaves, treedef = leaf_specs(self.shape, self.time_dtype)
        keys = [self.key] if len(leaves) == 1 else list(jr.split(self.key, len(leaves)))
        count = _NUM_COORDS[self.levy_area]
        fields = [[] for _ in range(count)]
        for leaf_key, (leaf_shape, leaf_dtype) in zip(keys, leaves):
            z = jr.normal(leaf_key, (count, self.num_steps, *leaf_shape), leaf_dtype)
            for c in range(count):
                fields[c].append(jnp.sqrt(_VARIANCE[c] * h).astype(leaf_dtype) * z[c])
        fields = [jax.tree.unflatten(treedef, f) for f in fields]
        return BrownianIncrement(
            dt=jnp.full((self.num_steps,), h, self.time_dtype),
            W=fields[0],
            H=fields[1] if count >= 2 else None,
            K=fields[2] if count == 3 else None,
        )

    def _index(self, name, t):
        """The grid index of the time `t` (raising if `t` is not a grid point)."""
        t = jnp.asarray(t).astype(self.time_dtype)
        if jnp.shape(t) != ():
            raise ValueError(f"`{name}` must be a scalar time, got shape {jnp.shape(t)}")
        h = (self.t1 - self.t0) / self.num_steps
        position = (t - self.t0) / h
        index = jnp.round(position)
        slack = 64 * np.finfo(self.time_dtype).eps * (self.num_steps + 1)
        bad = (jnp.abs(position - index) > slack) | (index < 0) | (index > self.num_steps)
        message = (
            f"jaxsolve.brownian.GridBrownianPath: `{name}` is not a point of the path's grid "
            "(use VirtualBrownianTree for queries between grid points or adaptive steps)"
        )
        eager = message + (f", got {float(t)}" if is_concrete(t) else "")
        return _checked(index.astype(jnp.int32), bad, message, eager)

    def increments(self, ts) -> BrownianIncrement:
        """The increments over the steps of the grid `ts` (which must be this path's grid).

        **Returns:** a `BrownianIncrement` with a leading axis of length `num_steps`.
        """
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] != self.num_steps + 1:
            raise ValueError(
                f"`ts` must be this path's grid of {self.num_steps + 1} times, got shape "
                f"{ts.shape}; GridBrownianPath answers queries on its grid only"
            )
        message = (
            "jaxsolve.brownian.GridBrownianPath: `ts` is not the path's grid "
            f"linspace(t0, t1, {self.num_steps + 1})"
        )
        lo, hi = self.interval
        slack = 64 * np.finfo(self.time_dtype).eps * (abs(lo) + abs(hi) + 1)
        slack = slack + 1e-6 * (hi - lo) / self.num_steps
        grid = np.linspace(lo, hi, self.num_steps + 1)
        if is_concrete(ts):  # checked here once (in float64), not in the compiled program
            bad = bool(np.any(np.abs(np.asarray(ts, np.float64) - grid) > slack))
        else:
            bad = jnp.any(jnp.abs(ts - grid.astype(self.time_dtype)) > slack)
        ts = ts.astype(self.time_dtype)
        draw = self._draw()
        dt = _checked(ts[1:] - ts[:-1], bad, message)
        return BrownianIncrement(dt=dt, W=draw.W, H=draw.H, K=draw.K)

    def increment(self, s, t) -> BrownianIncrement:
        """The increment over `[s, t]`, both grid points (`s <= t`); `H`, `K` (if the path has
        them) only over a single step or an empty interval.

        **Returns:** a `BrownianIncrement` with `dt = t - s`.
        """
        i, j = self._index("s", s), self._index("t", t)
        # `j` carries the checks into every output, so that none is dropped under `jit`
        j = _checked(j, j < i, "jaxsolve.brownian.GridBrownianPath: need `s <= t`")
        draw = self._draw()
        if draw.H is not None:
            message = (
                "jaxsolve.brownian.GridBrownianPath: Lévy areas are given over single grid "
                "steps only"
            )
            j = _checked(j, j - i > 1, message)
        W = self._window(draw.W, i, j)

        def one_step(x):
            value = x[jnp.clip(i, 0, self.num_steps - 1)]
            return jnp.where(j - i == 1, value, jnp.zeros_like(value))

        dt = jnp.asarray(t, self.time_dtype) - jnp.asarray(s, self.time_dtype)
        return BrownianIncrement(
            dt=dt,
            W=W,
            H=None if draw.H is None else jax.tree.map(one_step, draw.H),
            K=None if draw.K is None else jax.tree.map(one_step, draw.K),
        )

    def evaluate(self, t) -> PyTree[Array]:
        """`W(t) - W(t0)` at a grid point `t`."""
        return self._window(self._draw().W, 0, self._index("t", t))

    def _window(self, W, i, j):
        """The sum of the steps `i .. j-1` of `W`."""
        steps = jnp.arange(self.num_steps, dtype=jnp.int32)
        inside = (steps >= i) & (steps < j)

        def window(x):
            mask = inside.reshape((-1,) + (1,) * (x.ndim - 1))
            return jnp.sum(jnp.where(mask, x, 0), axis=0)

        return jax.tree.map(window, W)


def _checked(value, bad, message, eager_message=None):
    """`value`, raising `ValueError` at once where `bad` is concrete and true, or at run time
    (`equinox.error_if`) where it is traced."""
    if is_concrete(bad):
        if bool(bad):
            raise ValueError(eager_message or message)
        return value
    return eqx.error_if(value, bad, message)
