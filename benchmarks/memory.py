"""Memory at scale: 2^20 Euler-Maruyama paths sharded over 8 devices.

Each path has its own Virtual Brownian Tree (its key); the paths are sharded along the batch
axis with `NamedSharding`, so each device holds and solves 1/8 of them. The table gives XLA's
compiled memory per device (`memory_analysis()`: arguments, outputs, temporaries) for the
solve of all 2^20 paths on 8 devices, next to 2^17 paths on one device (what each device of
the sharded run does): the per-device figures must agree (no gather, no replicated batch).
Then the sharded solve is run once and timed. On a CPU machine the 8 devices are simulated
(`--xla_force_host_platform_device_count=8`, set here before JAX starts); on a machine with
several accelerators the real devices are used.

Run: `python -m benchmarks.memory`.
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

import jaxsolve as js  # noqa: E402

from ._harness import add_note, record_table  # noqa: E402

NUM_PATHS, NUM_STEPS = 2**20, 100
F32 = jnp.float32


def solve_paths(keys):
    def one(key):
        bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 0.5 / NUM_STEPS, (), key, dtype=F32)
        term = js.diffeq.SDETerm(lambda t, y, a: 0.05 * y, lambda t, y, a: 0.2 * y, bm)
        return js.diffeq.solve(
            term, js.diffeq.EulerMaruyama(), 0.0, 1.0, jnp.ones((), F32), dt0=1.0 / NUM_STEPS
        ).ys[-1]

    return jax.vmap(one)(keys)


def mib(x: float) -> str:
    return f"{x / 2**20:.1f}"


def main():
    devices = jax.devices()[:8]
    n = len(devices)
    mesh = Mesh(np.array(devices), ("paths",))
    sharding = NamedSharding(mesh, PartitionSpec("paths"))
    keys = jax.random.split(jax.random.key(0), NUM_PATHS)
    rows = []
    run = jax.jit(solve_paths, out_shardings=sharding)
    for label, args in [
        (f"{NUM_PATHS} paths sharded over {n} devices", jax.device_put(keys, sharding)),
        (f"{NUM_PATHS // n} paths on one device", keys[: NUM_PATHS // n]),
    ]:
        fn = run if "sharded" in label else jax.jit(solve_paths)
        start = time.perf_counter()
        compiled = fn.lower(args).compile()
        compile_s = time.perf_counter() - start
        m = compiled.memory_analysis()
        peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
        rows.append(
            [
                label,
                mib(m.argument_size_in_bytes),
                mib(m.output_size_in_bytes),
                mib(m.temp_size_in_bytes),
                mib(peak),
                f"{compile_s:.1f}",
            ]
        )
    sharded_keys = jax.device_put(keys, sharding)
    out = jax.block_until_ready(run(sharded_keys))
    start = time.perf_counter()
    out = jax.block_until_ready(run(sharded_keys))
    run_s = time.perf_counter() - start
    assert out.sharding.is_equivalent_to(sharding, 1), out.sharding
    mean = float(jnp.mean(out))
    record_table(
        f"Euler-Maruyama, {NUM_PATHS} paths x {NUM_STEPS} steps (own tree per path), float32: "
        "compiled memory per device (MiB)",
        ["computation", "arguments", "outputs", "temporaries", "sum", "compile (s)"],
        rows,
    )
    print(
        f"sharded run: {run_s:.2f} s; E[y(1)] = {mean:.4f} (exact e^0.05 = {np.exp(0.05):.4f}); "
        f"output sharding {out.sharding.spec}"
    )
    add_note(
        f"Sharded run of all {NUM_PATHS} paths: {run_s:.2f} s on {n} {devices[0].device_kind} "
        f"devices; mean y(1) = {mean:.4f} (exact e^0.05 = {np.exp(0.05):.4f}); the output stays "
        f"sharded ({out.sharding.spec})."
    )


if __name__ == "__main__":
    main()
