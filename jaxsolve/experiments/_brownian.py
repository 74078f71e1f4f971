"""The `brownian` quickstart section: the law of the tree's increments, checked empirically."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxsolve as js

from ._plot import line_plot
from ._registry import RunContext, check_row, quickstart_section


@quickstart_section("brownian", order=1)
def _brownian_section(ctx: RunContext):
    """Variances of W, H, K over [0.3, 0.55] across 4000 single-key trees (h, h/12, h/720),
    and a sample path with its increments on a 256-step grid."""
    dtype = jnp.result_type(float)
    s, t, num = 0.3, 0.55, 4000
    h = t - s

    def one(key):
        bm = js.brownian.VirtualBrownianTree(
            0.0, 1.0, 1e-3, (), key, levy_area="space-time-time", dtype=dtype
        )
        inc = bm.increment(jnp.asarray(s, dtype), jnp.asarray(t, dtype))
        return inc.W, inc.H, inc.K

    w, hh, kk = (np.asarray(x, np.float64) for x in jax.jit(jax.vmap(one))(
        jax.random.split(jax.random.key(0), num)
    ))  # fmt: skip
    rows = []
    for name, values, ref in (("W", w, h), ("H", hh, h / 12), ("K", kk, h / 720)):
        var = float(values.var())
        sd = ref * np.sqrt(2 / num)
        rows.append(
            check_row(
                "brownian",
                f"Var {name}(0.3, 0.55) over {num} keys (sd of estimate {sd:.2g})",
                var,
                ref,
                tolerance=4 * sd,
            )
        )
    corr = float(np.corrcoef(w, hh)[0, 1])
    rows.append(
        check_row(
            "brownian",
            f"corr(W, H) over {num} keys (sd {1 / np.sqrt(num):.2g})",
            corr,
            0.0,
            tolerance=4 / np.sqrt(num),
        )
    )
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-3, (), jax.random.key(1), dtype=dtype)
    grid = jnp.linspace(0.0, 1.0, 257, dtype=dtype)
    path = np.concatenate([[0.0], np.cumsum(np.asarray(bm.increments(grid).W, np.float64))])
    direct = float(bm.evaluate(jnp.asarray(1.0, dtype)))
    rows.append(
        check_row(
            "brownian",
            "sum of grid increments = W(1) queried directly",
            path[-1],
            direct,
            tolerance=1e-5,
        )
    )
    plot = line_plot(
        ctx.path("quickstart_brownian.png"),
        {"W(t), one key": (np.asarray(grid), path)},
        title="A Brownian path from VirtualBrownianTree.increments",
        xlabel="t",
        ylabel="W(t)",
    )
    return rows, {"num_keys": num}, [plot]
