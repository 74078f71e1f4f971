"""The public abstract Brownian path and the increment object it returns."""

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, PyTree

LEVY_AREAS = ("none", "space-time", "space-time-time")


class BrownianIncrement(eqx.Module):
    """The increment of a Brownian path over `[s, t]` and its Lévy areas.

    **Fields:**

    - `dt`: `t - s` (a scalar, or a leading batch axis for `increments`).
    - `W`: `W(t) - W(s)`, a pytree of arrays of the path's `shape`; variance `dt`.
    - `H`: the space-time Lévy area `(1/h) ∫_s^t (W_{s,r} - (r-s)/h W_{s,t}) dr`, `h = t - s`,
      with variance `h/12`, independent of `W`; `None` unless the path has
      `levy_area="space-time"` or `"space-time-time"`.
    - `K`: the space-time-time Lévy area
      `(1/h²) ∫_s^t (W_{s,r} - (r-s)/h W_{s,t}) (h/2 - (r-s)) dr`, variance `h/720`,
      independent of `W` and `H`; `None` unless `levy_area="space-time-time"`.
    """

    dt: Array
    W: PyTree[Array]
    H: PyTree[Array] | None = None
    K: PyTree[Array] | None = None


class AbstractBrownianPath(eqx.Module):
    """A Brownian motion that can be queried over any interval of `[t0, t1]`.

    Subclasses set the attributes below and implement `increment`, `increments` and `evaluate`.
    SDE solvers in `jaxsolve.diffeq` only use this interface, so any subclass (for example a
    path built from pre-drawn noise) can drive them.

    **Attributes:**

    - `t0`, `t1`: the interval on which the path is defined.
    - `shape`: the shape of `W` (a tuple of ints, or a pytree of `jax.ShapeDtypeStruct`).
    - `levy_area`: `"none"`, `"space-time"` or `"space-time-time"`: which of `H`, `K` the
      increments carry.

    **Example** (a path with no noise at all, which turns an SDE solver into its drift-only
    ODE method: a quick check of a new SDE model):

    ```python
    class NoNoise(js.brownian.AbstractBrownianPath):
        t0: float = 0.0
        t1: float = 1.0
        shape: tuple = eqx.field(static=True, default=(2,))
        levy_area: str = eqx.field(static=True, default="none")

        def increment(self, s, t):
            return js.brownian.BrownianIncrement(dt=t - s, W=jnp.zeros(self.shape))

        def increments(self, ts):
            zeros = jnp.zeros((len(ts) - 1, *self.shape))
            return js.brownian.BrownianIncrement(dt=jnp.diff(ts), W=zeros)

        def evaluate(self, t):
            return jnp.zeros(self.shape)

    term = js.diffeq.SDETerm(lambda t, y, a: -y, lambda t, y, a: y, NoNoise())
    sol = js.diffeq.solve(term, js.diffeq.EulerMaruyama(), 0.0, 1.0, jnp.ones(2), dt0=0.1)
    assert jnp.allclose(sol.ys[-1], 0.9**10)  # Euler's method on dy/dt = -y
    ```
    """

    t0: eqx.AbstractVar[Any]
    t1: eqx.AbstractVar[Any]
    shape: eqx.AbstractVar[Any]
    levy_area: eqx.AbstractVar[str]

    @abc.abstractmethod
    def increment(self, s: Any, t: Any) -> BrownianIncrement:
        """The `BrownianIncrement` over `[s, t]`, `t0 <= s <= t <= t1`."""

    @abc.abstractmethod
    def increments(self, ts: Any) -> BrownianIncrement:
        """The increments over consecutive pairs of the 1-D array `ts` (leading axis `len(ts)-1`)."""

    @abc.abstractmethod
    def evaluate(self, t: Any) -> PyTree[Array]:
        """`W(t) - W(t0)`."""


def parse_shape(shape, dtype) -> tuple[Any, np.dtype]:
    """Check a path's `shape` (a tuple of ints, or a pytree of `jax.ShapeDtypeStruct`) and
    `dtype`; **returns** `(shape, time dtype)`."""
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}")
    if isinstance(shape, tuple) and all(isinstance(s, (int, np.integer)) for s in shape):
        shape = tuple(int(s) for s in shape)
        time_dtype = jax.dtypes.canonicalize_dtype(dtype if dtype is not None else float)
        return shape, np.dtype(time_dtype)
    leaves = jax.tree.leaves(shape)
    if not leaves or not all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves):
        raise TypeError(
            f"`shape` must be a tuple of ints or a pytree of jax.ShapeDtypeStruct, got {shape!r}"
        )
    for leaf in leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"`shape` leaves must have a real floating dtype, got {leaf.dtype}")
    if dtype is not None:
        return shape, np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    return shape, np.dtype(np.result_type(*[np.dtype(leaf.dtype) for leaf in leaves]))


def parse_key(key) -> Array:
    """A single typed `jax.random` key from a typed or legacy `uint32[2]` key."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jnp.uint32:
            raise TypeError(f"`key` must be a jax.random key, got dtype {key.dtype}")
        key = jr.wrap_key_data(key)
    if key.shape != ():
        raise ValueError(f"`key` must be a single key, got a batch of shape {key.shape}")
    return key


def leaf_specs(shape, time_dtype) -> tuple[list, Any]:
    """`([(leaf shape, leaf dtype), ...], treedef)` of a parsed `shape`."""
    if isinstance(shape, tuple) and all(isinstance(s, int) for s in shape):
        return [(shape, time_dtype)], jax.tree.structure(0)
    leaves, treedef = jax.tree.flatten(shape)
    return [(tuple(x.shape), np.dtype(x.dtype)) for x in leaves], treedef
