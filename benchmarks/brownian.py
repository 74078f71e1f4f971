"""The Brownian tree vs diffrax's `VirtualBrownianTree`, same tolerance, shape, dtype (float32).

1. Single queries: 20 000 `increment(s, s + 0.01)` with space-time Lévy area (W and H), tol
   1e-3, d = 4, vmapped over the query times, one tree.
2. A grid: the 1000 increments of a uniform 1000-step grid on [0, 1] (W and H, tol 1e-3,
   d = 4), jaxsolve's `increments(ts)` (one shared descent) vs 1000 vmapped diffrax queries.

Both are jitted once; timings are the first call (trace + compile + run) and the median run
(`_harness.measure`), plus the minimum over interleaved single calls, which is steadier on the
shared machine, and for the single queries the first call in fresh processes
(`_harness.fresh_first_calls`: in one process the entry timed first also pays JAX's start-up). Run: `python -m benchmarks.brownian` (from the repo root).
"""

import time
import warnings

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import jaxsolve as js

from ._harness import add_note, fresh_first_calls, measure, print_table

warnings.filterwarnings("ignore")
NUM_QUERIES, DIM, TOL, GRID = 20_000, 4, 1e-3, 1000
F32 = jnp.float32


def _interleaved_min(fns, args, rounds=15):
    best = {name: np.inf for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args[name]))
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _trees():
    key = jr.key(0)
    ours = js.brownian.VirtualBrownianTree(
        0.0, 1.0, TOL, (DIM,), key, levy_area="space-time", dtype=F32
    )
    theirs = diffrax.VirtualBrownianTree(
        0.0, 1.0, TOL, (DIM,), key, levy_area=diffrax.SpaceTimeLevyArea
    )
    return ours, theirs


def single_queries():
    """`({"jaxsolve": fn, "diffrax": fn}, (s, t))`: the vmapped single queries, jitted."""
    ours, theirs = _trees()
    s = jr.uniform(jr.key(1), (NUM_QUERIES,), F32, 0.0, 0.99)
    t = s + F32(0.01)

    def ours_queries(s, t):
        inc = jax.vmap(ours.increment)(s, t)
        return inc.W, inc.H

    def diffrax_queries(s, t):
        inc = jax.vmap(lambda a, b: theirs.evaluate(a, b, use_levy=True))(s, t)
        return inc.W, inc.H

    return {"jaxsolve": jax.jit(ours_queries), "diffrax": jax.jit(diffrax_queries)}, (s, t)


def first_call_case(case):
    """For `_harness.fresh_first_calls`: `case` is "single-jaxsolve" or "single-diffrax"."""
    fns, args = single_queries()
    return fns[case.removeprefix("single-")], args


def main():
    ours, theirs = _trees()
    fns, (s, t) = single_queries()
    timings = [
        measure("jaxsolve increment (vmapped)", fns["jaxsolve"], s, t),
        measure("diffrax evaluate(use_levy=True) (vmapped)", fns["diffrax"], s, t),
    ]
    best = _interleaved_min(fns, {"jaxsolve": (s, t), "diffrax": (s, t)})
    timings[0].note = f"interleaved min {best['jaxsolve']:.3e} s"
    timings[1].note = f"interleaved min {best['diffrax']:.3e} s"
    print_table(
        f"{NUM_QUERIES} single queries W+H, tol {TOL}, d={DIM}, float32",
        timings,
        "diffrax evaluate(use_levy=True) (vmapped)",
    )
    add_note(f"interleaved-min ratio jaxsolve/diffrax: {best['jaxsolve'] / best['diffrax']:.3f}")
    fresh = fresh_first_calls("brownian", ["single-jaxsolve", "single-diffrax"])
    a, b = fresh["single-jaxsolve"], fresh["single-diffrax"]
    add_note(
        f"first call in fresh processes (median of 5, alternating): jaxsolve {a:.3f} s, "
        f"diffrax {b:.3f} s, ratio {a / b:.3f}"
    )

    ts = jnp.linspace(0.0, 1.0, GRID + 1, dtype=F32)

    def ours_grid(ts):
        inc = ours.increments(ts)
        return inc.W, inc.H

    def diffrax_grid(ts):
        inc = jax.vmap(lambda a, b: theirs.evaluate(a, b, use_levy=True))(ts[:-1], ts[1:])
        return inc.W, inc.H

    gfns = {"jaxsolve": jax.jit(ours_grid), "diffrax": jax.jit(diffrax_grid)}
    timings = [
        measure("jaxsolve increments(ts)", gfns["jaxsolve"], ts),
        measure("diffrax 1000 vmapped queries", gfns["diffrax"], ts),
    ]
    best = _interleaved_min(gfns, {"jaxsolve": (ts,), "diffrax": (ts,)})
    timings[0].note = f"interleaved min {best['jaxsolve']:.3e} s"
    timings[1].note = f"interleaved min {best['diffrax']:.3e} s"
    print_table(
        f"{GRID}-step grid W+H, tol {TOL}, d={DIM}, float32",
        timings,
        "diffrax 1000 vmapped queries",
    )
    add_note(f"interleaved-min ratio jaxsolve/diffrax: {best['jaxsolve'] / best['diffrax']:.3f}")


if __name__ == "__main__":
    main()
