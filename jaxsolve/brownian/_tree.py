"""The single-seed virtual Brownian tree with space-time and space-time-time Lévy areas."""

import math
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, PyTree

from .._core import bounded_while_loop, check_option, check_positive, is_concrete
from . import _levy, _rng
from ._base import (
    LEVY_AREAS,
    AbstractBrownianPath,
    BrownianIncrement,
    leaf_specs,
    parse_key,
    parse_shape,
)

_NUM_COORDS = {"none": 1, "space-time": 2, "space-time-time": 3}


class VirtualBrownianTree(AbstractBrownianPath):
    r"""Brownian motion on `[t0, t1]`, with its Lévy areas, generated from a single key.

    The path is a binary tree of intervals: the root holds `(W, H, K)` over `[t0, t1]` and each
    node's two halves are drawn from their exact conditional law given the node (Foster's
    Brownian bridge formulas, extended to the space-time-time Lévy area), with the randomness
    for a node derived from its parent's key. The tree is bisected until the leaves are shorter
    than `tol`; a query time inside a leaf is then drawn from the exact conditional law of the
    leaf's two pieces at that time (no interpolation). Memory is constant, the cost of a query
    is `O(log((t1 - t0)/tol))`, and the same key always gives the same path, whichever order
    the queries come in (under `jit`, `vmap` and plain calls alike).

    **Exactness.** Any set of query times whose leaves are pairwise different (in particular
    times at least `tol` apart) gets `(W, H, K)` with exactly the joint law of Brownian
    motion. Two query times in the *same* leaf use the same random numbers for that leaf: each
    on its own is still exact, and the path is continuous in the query time, but the increment
    between them is a deterministic function of the leaf's randomness, with a variance below
    that of Brownian motion. Keep steps above `tol` where their joint law matters.

    **Arguments:**

    - `t0`, `t1`: the interval (`t0 < t1`), concrete numbers.
    - `tol`: the leaf length below which the tree is not bisected further, concrete, `> 0`.
      The depth is `ceil(log2((t1 - t0)/tol))`, fixed when the tree is built.
    - `shape`: the shape of `W`: a tuple of ints, or a pytree of `jax.ShapeDtypeStruct` (each
      leaf with its own shape and dtype).
    - `key`: a `jax.random` key (typed or legacy `uint32[2]`).
    - `levy_area`: `"none"` (`W` only), `"space-time"` (`W`, `H`), `"space-time-time"`
      (`W`, `H`, `K`).
    - `dtype`: the floating dtype of `W` when `shape` is a tuple (default: JAX's default float),
      also the dtype of times. With a pytree `shape`, each leaf's own dtype is used.

    **Example:**

    ```python
    import jax.numpy as jnp
    import jax.random as jr
    import jaxsolve as js

    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-3, (2,), jr.key(0), levy_area="space-time")
    inc = bm.increment(0.25, 0.5)  # inc.dt, inc.W, inc.H (inc.K is None)
    assert inc.W.shape == inc.H.shape == (2,) and inc.K is None
    # the same key gives the same path, whatever the order of the queries
    assert jnp.allclose(inc.W, bm.evaluate(0.5) - bm.evaluate(0.25), atol=1e-6)
    grid = bm.increments(jnp.linspace(0.0, 1.0, 11))  # ten increments at once
    assert grid.W.shape == (10, 2)
    assert jnp.allclose(grid.W.sum(axis=0), bm.evaluate(1.0), atol=1e-5)
    ```

    Querying times outside `[t0, t1]`, or a decreasing grid, raises (eagerly for concrete times,
    at run time via `equinox.error_if` under `jit`). Gradients do not flow through the query
    times into `W`, `H`, `K` (they do through `dt`).

    Reference: Jelinčič, Foster, Kidger et al., "Single-seed generation of Brownian paths and
    integrals for adaptive and high order SDE solvers" (2024).
    """

    t0: Array
    t1: Array
    tol: Array
    key: Array
    shape: Any = eqx.field(static=True)
    levy_area: str = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    time_dtype: Any = eqx.field(static=True)

    def __init__(
        self,
        t0,
        t1,
        tol,
        shape: tuple[int, ...] | PyTree[jax.ShapeDtypeStruct],
        key,
        levy_area: str = "none",
        dtype=None,
    ):
        check_option("levy_area", levy_area, LEVY_AREAS)
        for name, value in (("t0", t0), ("t1", t1), ("tol", tol)):
            if not is_concrete(value):
                raise ValueError(
                    f"`{name}` must be a concrete number, got a traced value: the depth of the "
                    "tree, ceil(log2((t1 - t0)/tol)), is fixed when it is built. Build the tree "
                    "outside `jit` and pass it in as an argument."
                )
            if jnp.shape(value) != ():
                raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}")
        check_positive("tol", tol)
        if not float(t0) < float(t1):
            raise ValueError(f"`t1` must be greater than `t0`, got t0={float(t0)}, t1={float(t1)}")
        if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"`dtype` must be a floating dtype, got {dtype}")

        shape, time_dtype = parse_shape(shape, dtype)
        key = parse_key(key)

        ratio = (float(t1) - float(t0)) / float(tol)
        depth = max(0, math.ceil(math.log2(ratio) - 1e-12)) if ratio > 1 else 0
        mantissa = np.finfo(time_dtype).nmant
        if depth > mantissa - 2:
            raise ValueError(
                f"`tol` is too small for {time_dtype} times: the tree would need depth {depth}, "
                f"more than {mantissa - 2} bisections can resolve. Use a larger `tol` or float64."
            )

        self.t0 = jnp.asarray(t0, time_dtype)
        self.t1 = jnp.asarray(t1, time_dtype)
        self.tol = jnp.asarray(tol, time_dtype)
        self.key = key
        self.shape = shape
        self.levy_area = levy_area
        self.depth = depth
        self.time_dtype = time_dtype

    # ------------------------------------------------------------------------------------------
    # Public queries
    # ------------------------------------------------------------------------------------------

    def increment(self, s, t) -> BrownianIncrement:
        """The increment over `[s, t]` (`t0 <= s <= t <= t1`).

        **Returns:** a `BrownianIncrement` with `dt = t - s`, `W` (a pytree of `shape`), and `H`,
        `K` as the tree's `levy_area` provides (else `None`).
        """
        s = self._as_time("s", s)
        t = self._as_time("t", t)
        if jnp.shape(s) != () or jnp.shape(t) != ():
            raise ValueError(
                f"`s` and `t` must be scalars (use `increments` for a grid), got shapes "
                f"{jnp.shape(s)} and {jnp.shape(t)}"
            )
        out = self._increments(jnp.stack([s, t]), share=False)
        return jax.tree.map(lambda x: x[0], out)

    def increments(self, ts) -> BrownianIncrement:
        """All increments over the consecutive pairs of the non-decreasing 1-D array `ts`.

        Equal to `increment(ts[i], ts[i+1])` for each `i`, but computed in one level-by-level
        descent that shares the upper part of the tree between the query times: the top levels
        are drawn once for all queries, and a query on a dyadic point of the tree stops
        descending at the level where it sits on a node boundary, so a grid aligned with the
        tree costs `O(len(ts))` normal draws in all.

        **Returns:** a `BrownianIncrement` whose fields have a leading axis of length
        `len(ts) - 1`.
        """
        ts = self._as_time("ts", ts)
        if ts.ndim != 1:
            raise ValueError(f"`ts` must be a 1-D array of times, got shape {ts.shape}")
        if ts.shape[0] < 2:
            raise ValueError(f"`ts` must hold at least two times, got {ts.shape[0]}")
        if is_concrete(ts) and bool(np.any(np.diff(np.asarray(ts)) < 0)):
            raise ValueError("`ts` must be non-decreasing")
        return self._increments(ts, share=True)

    def evaluate(self, t) -> PyTree[Array]:
        """`W(t) - W(t0)`, a pytree of arrays of `shape`."""
        return self.increment(self.t0, t).W

    # ------------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------------

    def _as_time(self, name, value):
        value = jnp.asarray(value)
        if not jnp.issubdtype(value.dtype, jnp.floating) and not jnp.issubdtype(
            value.dtype, jnp.integer
        ):
            raise TypeError(f"`{name}` must be real times, got dtype {value.dtype}")
        value = value.astype(self.time_dtype)
        if is_concrete(value) and is_concrete(self.t0) and is_concrete(self.t1):
            lo, hi = float(self.t0), float(self.t1)
            # NumPy, not jnp: under an outer `jit` jnp ops on concrete arrays give tracers.
            slack = 8 * np.finfo(self.time_dtype).eps * (abs(lo) + abs(hi) + 1)
            v = np.asarray(value)
            bad = (v < lo - slack) | (v > hi + slack)
            if bad.any():
                raise ValueError(
                    f"`{name}` must lie in [t0, t1] = [{lo}, {hi}], got {np.asarray(value)[bad]}"
                )
        return value

    def _slack(self):
        # Times computed as t0 + n dt may overshoot t1 by a few ulps; accept (and clip) those.
        return 8 * np.finfo(self.time_dtype).eps * (jnp.abs(self.t0) + jnp.abs(self.t1) + 1)

    def _increments(self, ts, share: bool) -> BrownianIncrement:
        # Eager queries go through a jitted copy, so that they compile once per grid length
        # instead of dispatching the descent op by op. Inside a trace (`jit`, `vmap`, `grad`) the
        # descent is traced directly: a nested `jit` under `vmap` is traced twice (once into a
        # jaxpr, once more by its batching rule), which was a third of the first call's time.
        leaves = [x for x in jax.tree.leaves((self, ts)) if eqx.is_array(x)]
        if all(is_concrete(x) for x in leaves):
            return _jitted_increments(self, ts, share)
        return self._traced_increments(ts, share)

    def _traced_increments(self, ts, share: bool) -> BrownianIncrement:
        dt = ts[1:] - ts[:-1]
        times = lax.stop_gradient(ts)
        span = self.t1 - self.t0
        taus = (times - self.t0) / span
        slack = self._slack() / span
        taus = eqx.error_if(
            taus,
            (taus < -slack) | (taus > 1 + slack),
            "jaxsolve.brownian.VirtualBrownianTree: query time outside [t0, t1]",
        )
        taus = eqx.error_if(
            taus,
            jnp.any(taus[1:] < taus[:-1]),
            "jaxsolve.brownian.VirtualBrownianTree: query times must be non-decreasing",
        )
        taus = jnp.clip(taus, 0, 1)
        lengths = taus[1:] - taus[:-1]
        n = _NUM_COORDS[self.levy_area]

        leaves, treedef = self._leaf_specs()
        keys = [self.key] if len(leaves) == 1 else list(jr.split(self.key, len(leaves)))
        outs = []
        for leaf_key, (leaf_shape, leaf_dtype) in zip(keys, leaves):
            bar = _descend(leaf_key, taus, n, self.depth, leaf_shape, leaf_dtype, share)
            unbar = _levy.from_bar(bar, lengths)
            scale = jnp.sqrt(span).astype(leaf_dtype)
            outs.append(tuple(lax.stop_gradient(x * scale) for x in unbar))
        fields = [jax.tree.unflatten(treedef, [o[c] for o in outs]) for c in range(n)]
        return BrownianIncrement(
            dt=dt,
            W=fields[0],
            H=fields[1] if n >= 2 else None,
            K=fields[2] if n == 3 else None,
        )

    def _leaf_specs(self):
        return leaf_specs(self.shape, self.time_dtype)


@eqx.filter_jit
def _jitted_increments(tree, ts, share):
    return tree._traced_increments(ts, share)


# ----------------------------------------------------------------------------------------------
# The descent
# ----------------------------------------------------------------------------------------------


def _bisect(nodes, keys, level, shape, dtype, maps, child=None):
    """Split every node (unbarred, length 2^-level) into its two children (unbarred); with
    `child` (0/1 per node) also return that child's key, from the same hash call."""
    n = len(nodes)
    drawn = _rng.normals(keys, n, shape, dtype, stacked=True, child=child)
    child_keys, normals = drawn if child is not None else (None, drawn)
    mean_map, noise_map = maps
    scale = jnp.sqrt(jnp.ldexp(jnp.ones((), dtype), -level))
    mean = _levy.apply_constant(mean_map, nodes)
    # A matrix product, not elementwise code: XLA does not fuse its operand into it, so each
    # normal (an inverse error function) is computed once rather than once per consumer.
    noise = jnp.einsum(
        "ij,bj...->ib...",
        jnp.asarray(noise_map, dtype),
        normals,
        precision=lax.Precision.HIGHEST,
    )
    children = tuple(m + scale * noise[i] for i, m in enumerate(mean))
    return children[:n], children[n:], child_keys


class _Pairs(eqx.Module):
    """Per-pair accumulators: suffix S of the left member, prefix P of the right member."""

    suffix: tuple  # barred, [s, mid of the pair's common ancestor]
    suffix_len: Array
    prefix: tuple  # barred, [mid of the common ancestor, t]
    prefix_len: Array
    result: tuple  # barred increment over [s, t], valid where `finished`
    finished: Array


def _head(x):
    return tuple(a[:-1] for a in x)


def _tail(x):
    return tuple(a[1:] for a in x)


def _accumulate(pairs, idx, go_right, left_bar, right_bar, half):
    """Record the siblings the queries pass at one bisection, for pairs already split apart.

    Below the common ancestor of a pair `(s, t)`, `s` collects the right siblings it passes (its
    suffix up to the ancestor's midpoint) and `t` the left siblings (its prefix from there), so
    that `[s, t]` is assembled from pieces of its own scale, without cancellation.
    """
    active = (idx[:-1] != idx[1:]) & ~pairs.finished
    half_v = jnp.full(active.shape, half)
    upd_p = active & go_right[1:]
    new_p = _levy.combine(pairs.prefix, pairs.prefix_len, _tail(left_bar), half_v)
    upd_s = active & ~go_right[:-1]
    new_s = _levy.combine(_head(right_bar), half_v, pairs.suffix, pairs.suffix_len)
    return _Pairs(
        suffix=_levy.where(upd_s, new_s, pairs.suffix),
        suffix_len=pairs.suffix_len + jnp.where(upd_s, half, 0),
        prefix=_levy.where(upd_p, new_p, pairs.prefix),
        prefix_len=pairs.prefix_len + jnp.where(upd_p, half, 0),
        result=pairs.result,
        finished=pairs.finished,
    )


def _finish(pairs, idx, pre, pre_len, suf, suf_len, ready):
    """Complete the pairs whose members are both `ready`: their pieces `pre = [a, τ]` and
    `suf = [τ, b]` within their node `[a, b]` are known."""
    new = ready[:-1] & ready[1:] & ~pairs.finished
    same = idx[:-1] == idx[1:]
    # Same node: [s, t] from [a, s] and [a, t] by Chen's relation.
    same_res = _levy.right_part(_tail(pre), _head(pre), pre_len[:-1], pre_len[1:] - pre_len[:-1])
    # Different nodes: [s, end of s's node] + S + P + [start of t's node, t].
    left = _levy.combine(_head(suf), suf_len[:-1], pairs.suffix, pairs.suffix_len)
    right = _levy.combine(pairs.prefix, pairs.prefix_len, _tail(pre), pre_len[1:])
    split_res = _levy.combine(
        left, suf_len[:-1] + pairs.suffix_len, right, pairs.prefix_len + pre_len[1:]
    )
    res = _levy.where(same, same_res, split_res)
    return _Pairs(
        suffix=pairs.suffix,
        suffix_len=pairs.suffix_len,
        prefix=pairs.prefix,
        prefix_len=pairs.prefix_len,
        result=_levy.where(new, res, pairs.result),
        finished=pairs.finished | new,
    )


def _boundary_finish(pairs, taus, idx, level, node_bar):
    """Finish the pairs whose members both sit on a boundary of their node at `level`."""
    h = jnp.ldexp(jnp.ones((), taus.dtype), -level)
    start = idx.astype(taus.dtype) * h
    at_start = taus == start
    at_end = taus == start + h
    zero = _levy.zeros_like(node_bar)
    pre = _levy.where(at_end, node_bar, zero)
    suf = _levy.where(at_start, node_bar, zero)
    return _finish(
        pairs,
        idx,
        pre,
        jnp.where(at_end, h, 0),
        suf,
        jnp.where(at_start, h, 0),
        at_start | at_end,
    )


def _descend(key, taus, n, depth, shape, dtype, share: bool):
    """Barred increments of one Brownian leaf over the consecutive pairs of `taus` in [0, 1].

    Each query time carries its own node as it descends; consecutive queries assemble their
    increment from the siblings they pass below their common ancestor (`_accumulate`) and the
    exact split of their leaves (`_levy.split_at`). With `share`, the top levels of the tree are
    drawn once for all queries, and the descent stops as soon as every pair has both ends on
    node boundaries (aligned grids); otherwise the trip count is static (cheapest under `vmap`
    of single queries, where a data-dependent exit would mask every operation).
    """
    num = taus.shape[0]
    tdtype = taus.dtype
    maps = _levy.bisection_maps(n)

    root = _rng.root_key(key)[None]
    # The root's values and the root node's key come from two counters of the root key.
    node_keys = _rng.child_keys(root, jnp.zeros((1,), jnp.uint32))
    root_normals = _rng.normals(root, n, shape, dtype)
    nodes = tuple(_levy.STD[i] * z for i, z in enumerate(root_normals))

    # The per-query state starts as constants; a no-op select on the query times makes it
    # depend on them, so that under `vmap` it is batched from the start and the loop's batching
    # rule batches the body once instead of twice (its second pass was ~15% of the trace).
    tied = taus[0] == taus[0]
    zeros = tuple(jnp.where(tied, jnp.zeros((num - 1, *shape), dtype), 0) for _ in range(n))
    zlen = jnp.where(tied, jnp.zeros((num - 1,), tdtype), 0)
    pairs = _Pairs(zeros, zlen, zeros, zlen, zeros, jnp.zeros((num - 1,), bool) & tied)
    idx = jnp.where(tied, jnp.zeros((num,), jnp.int32), 0)

    # Top of the tree (with `share`): every node of a level at once, drawn once for all queries.
    # A point on a node boundary stays on one at every deeper level, so boundary pairs are
    # finished once the dense part is done.
    dense_levels = min(depth, int(math.floor(math.log2(num)))) if share else 0
    for level in range(dense_levels):
        half = jnp.ldexp(jnp.ones((), tdtype), -(level + 1))
        left, right, _ = _bisect(nodes, node_keys, level, shape, dtype, maps)
        k_left, k_right = _rng.both_child_keys(node_keys)
        go_right = taus >= (idx.astype(tdtype) * 2 + 1) * half
        half_v = jnp.full((num,), half)
        left_bar = _levy.to_bar(tuple(x[idx] for x in left), half_v)
        right_bar = _levy.to_bar(tuple(x[idx] for x in right), half_v)
        pairs = _accumulate(pairs, idx, go_right, left_bar, right_bar, half)
        nodes = tuple(
            jnp.stack([lft, rgt], axis=1).reshape((-1, *shape)) for lft, rgt in zip(left, right)
        )
        node_keys = jnp.stack([k_left, k_right], axis=1).reshape((-1, 2))
        idx = 2 * idx + go_right.astype(jnp.int32)

    # Below: each query descends on its own.
    slot_nodes = tuple(x[idx] for x in nodes)
    slot_keys = node_keys[idx]
    if share:
        h = jnp.ldexp(jnp.ones((), tdtype), -dense_levels)
        pairs = _boundary_finish(
            pairs, taus, idx, dense_levels, _levy.to_bar(slot_nodes, jnp.full((num,), h))
        )

    # Without `share` no pair finishes before the leaves, so `result` and `finished` stay out
    # of the loop carry (smaller carry, less copying per level).
    fixed = (pairs.result, pairs.finished)

    def pack(pairs):
        accumulators = (pairs.suffix, pairs.suffix_len, pairs.prefix, pairs.prefix_len)
        return accumulators + ((pairs.result, pairs.finished) if share else ())

    def unpack(packed):
        rest = packed[4:] if share else fixed
        return _Pairs(*packed[:4], *rest)

    def body(carry):
        level, idx, slot_nodes, slot_keys, packed = carry
        pairs = unpack(packed)
        half = jnp.ldexp(jnp.ones((), tdtype), -(level + 1))
        go_right = taus >= (idx.astype(tdtype) * 2 + 1) * half
        left, right, next_keys = _bisect(
            slot_nodes, slot_keys, level, shape, dtype, maps, child=go_right
        )
        half_v = jnp.full((num,), half)
        left_bar, right_bar = _levy.to_bar(left, half_v), _levy.to_bar(right, half_v)
        pairs = _accumulate(pairs, idx, go_right, left_bar, right_bar, half)
        slot_nodes = _levy.where(go_right, right, left)
        slot_keys = next_keys
        idx = 2 * idx + go_right.astype(jnp.int32)
        if share:
            pairs = _boundary_finish(
                pairs, taus, idx, level + 1, _levy.where(go_right, right_bar, left_bar)
            )
        return level + 1, idx, slot_nodes, slot_keys, pack(pairs)

    if share:

        def cond(carry):
            return ~jnp.all(carry[4][5])

    else:

        def cond(carry):
            return jnp.array(True)

    carry = (jnp.asarray(dense_levels, jnp.int32), idx, slot_nodes, slot_keys, pack(pairs))
    if depth > dense_levels:
        # The tree's values are not differentiated (only its query times are, elsewhere), so
        # the plain forward loop of the shared driver does.
        carry = bounded_while_loop(
            cond, body, carry, max_steps=depth - dense_levels, kind="lax"
        ).value
    level, idx, slot_nodes, slot_keys, packed = carry
    pairs = unpack(packed)

    # At the leaves: the exact conditional law of the two pieces at the query time.
    def leaf(pairs):
        h = jnp.ldexp(jnp.ones((), tdtype), -level)
        start = idx.astype(tdtype) * h
        alpha = jnp.clip((taus - start) / h, 0, 1)
        # A leaf is never bisected: its key's randomness goes to the split at the query time.
        count = _levy.leaf_normals_needed(n)
        normals = _rng.normals(slot_keys, count, shape, dtype, stacked=True)
        hv = jnp.full((num,), h)
        pre, suf = _levy.split_at(slot_nodes, hv, alpha, normals)
        pre_len = alpha * h
        return _finish(pairs, idx, pre, pre_len, suf, h - pre_len, jnp.ones((num,), bool))

    if share:
        pairs = lax.cond(jnp.all(pairs.finished), lambda p: p, leaf, pairs)
    else:
        pairs = leaf(pairs)
    return pairs.result
