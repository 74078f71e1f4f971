"""DPM-Solver++(2M), 10 steps, a small equinox MLP denoiser, batch 1024, float32.

`jaxsolve.diffusion.sample` against the physical limit: a hand-written `lax.scan` of the same
update with every schedule coefficient precomputed in NumPy (what one would write for a single
fixed grid). Also `init`/`step` driven by the user's own `lax.scan`. All use `eqx.filter_jit`; the table
reports compile+first-call time and the median run time.

Run: `python -m benchmarks.diffusion`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxsolve as js

from ._harness import measure, print_table

BATCH, DIM, WIDTH, DEPTH, STEPS = 1024, 2, 128, 3, 10
D = js.diffusion


class Denoiser(eqx.Module):
    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(DIM + 1, DIM, WIDTH, DEPTH, activation=jax.nn.silu, key=key)

    def __call__(self, x, t):
        inp = jnp.concatenate([x, jnp.broadcast_to(t, x.shape[:-1] + (1,))], axis=-1)
        return jax.vmap(self.mlp)(inp)


def coefficient_table(sched, ts):
    """Per-step coefficients of DPM-Solver++(2M) with lower-order first and final steps."""
    ts = np.asarray(ts, np.float64)
    alpha = np.asarray(sched.alpha(jnp.asarray(ts)), np.float64)
    sigma = np.asarray(sched.sigma(jnp.asarray(ts)), np.float64)
    lam = np.log(alpha / sigma)
    rows = []
    for i in range(len(ts) - 1):
        h = lam[i + 1] - lam[i]
        phi1 = np.expm1(-h)
        order = min(2, i + 1, STEPS - i)  # lower order first and (fewer than 15 steps) last
        if order == 2:
            r = (lam[i] - lam[i - 1]) / h
            c_prev = -0.5 * alpha[i + 1] * phi1 / r  # coefficient of (m0 - m1)
        else:
            c_prev = 0.0
        rows.append((ts[i], sigma[i + 1] / sigma[i], -alpha[i + 1] * phi1, c_prev))
    return np.asarray(rows, np.float32)


def hand_written(net, x_T, table):
    def body(carry, row):
        x, m_prev = carry
        t, ratio, c0, c1 = row[0], row[1], row[2], row[3]
        m0 = net(x, t)  # the network predicts x0
        x = ratio * x + c0 * m0 + c1 * (m0 - m_prev)
        return (x, m0), None

    return lax.scan(body, (x_T, jnp.zeros_like(x_T)), table)[0][0]


def main():
    net = Denoiser(jax.random.key(0))
    sched = D.VPLinear()
    model = D.Model(net, sched, prediction="x0")
    ts = D.timesteps(sched, STEPS, dtype=jnp.float32)
    x_T = jax.random.normal(jax.random.key(1), (BATCH, DIM), jnp.float32)
    sampler = D.DPMSolverPP(order=2)
    table = jnp.asarray(coefficient_table(sched, ts))

    lib = eqx.filter_jit(lambda model, x, ts: D.sample(sampler, model, x, ts))
    lib_nothrow = eqx.filter_jit(lambda model, x, ts: D.sample(sampler, model, x, ts, throw=False))
    hand = eqx.filter_jit(lambda net, x, table: hand_written(net, x, table))

    @eqx.filter_jit
    def own_loop(model, x, ts):
        state = sampler.init(model, x, ts, None)
        body = lambda st, i: (sampler.step(model, ts, i, st), None)
        return sampler.output(lax.scan(body, state, jnp.arange(STEPS))[0])

    timings = [
        measure("hand-written lax.scan (precomputed)", hand, net, x_T, table),
        measure("js.diffusion.sample", lib, model, x_T, ts),
        measure("js.diffusion.sample(throw=False)", lib_nothrow, model, x_T, ts),
        measure("init/step in own lax.scan", own_loop, model, x_T, ts),
    ]
    a, b = lib(model, x_T, ts), hand(net, x_T, table)
    err = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
    timings[1].note = f"same samples: max rel diff {err:.1e}"
    print_table(
        f"DPM-Solver++(2M), {STEPS} steps, MLP {WIDTH}x{DEPTH}, batch {BATCH}, float32",
        timings,
        anchor="hand-written lax.scan (precomputed)",
    )


if __name__ == "__main__":
    main()
