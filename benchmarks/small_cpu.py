"""Small problems on CPU with and without XLA's whole-loop kernels.

XLA's CPU runtime launches one kernel per fused operation; its small-while-loop pass compiles a
whole loop into one kernel only when the loop touches under 1 KiB of buffers. Raising that limit
to 1 MiB (README "Small problems on CPU"),

    XLA_FLAGS=--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1048576

removes the per-kernel launches of small solves. The flag must be set before JAX starts, so each
setting runs in its own process (`python -m benchmarks.small_cpu --child`), timing the same
problems in the libraries side by side:

- L-BFGS on the 100-dimensional Rosenbrock function from 0, tol 1e-6 (jaxsolve, jaxopt,
  optimistix), float64: the entries of `benchmarks.nonlinear`;
- Tsit5 with a PID controller at rtol = atol = 1e-8 on Lotka-Volterra over [0, 20] (jaxsolve,
  diffrax), float64: the entries of `benchmarks.ode`.

Run: `python -m benchmarks.small_cpu` (from the repo root).
"""

import json
import os
import subprocess
import sys

FLAG = "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1048576"


def _child():
    import jax

    jax.config.update("jax_enable_x64", True)
    from . import nonlinear, ode
    from ._harness import measure_interleaved

    entries, y0 = nonlinear.rosenbrock_entries()
    lbfgs = [(name, fn, (y0,)) for name, fn in entries]
    tsit5 = [
        ("jaxsolve Tsit5", jax.jit(ode.jaxsolve_run), (ode.Y0, ode.PARAMS)),
        ("diffrax Tsit5", jax.jit(ode.diffrax_run), (ode.Y0, ode.PARAMS)),
    ]
    out = {}
    for group in (lbfgs, tsit5):
        for t in measure_interleaved(group):
            out[t.name] = {"first": t.first_call_s, "run": t.run_s}
    return out


def main():
    from ._harness import record_table

    results = {}
    for label, flags in (("default", ""), ("whole-loop kernels", FLAG)):
        env = dict(os.environ)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
        env.pop("JAXSOLVE_BENCHMARK_TABLES", None)  # the child records no tables
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.small_cpu", "--child"],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    default, flagged = results["default"], results["whole-loop kernels"]
    rows = [
        [name, f"{default[name]['run'] * 1e3:.3f}", f"{flagged[name]['run'] * 1e3:.3f}",
         f"{default[name]['run'] / flagged[name]['run']:.1f}x",
         f"{default[name]['first']:.2f}", f"{flagged[name]['first']:.2f}"]
        for name in default
    ]  # fmt: skip
    record_table(
        "Small problems on CPU: default XLA vs whole-loop kernels (float64)",
        ["entry", "run median, default (ms)", "run median, whole-loop (ms)", "speed-up",
         "first call, default (s)", "first call, whole-loop (s)"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(_child()))
    else:
        main()
