"""Small problems on CPU with and without XLA's whole-loop kernels.

XLA's CPU runtime launches one kernel per fused operation; its small-while-loop pass compiles a
whole loop into one kernel only when the loop touches under 1 KiB of buffers. Raising that limit
to 1 MiB (README "Small problems on CPU"),

    XLA_FLAGS=--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1048576

removes the per-kernel launches of small solves. The flag must be set before JAX starts, so each
setting runs in its own process (`python -m benchmarks.small_cpu --child`), timing the same
problems in the libraries side by side:

- L-BFGS on the 100-dimensional Rosenbrock function from 0, tol 1e-6 (jaxsolve, jaxopt,
  optimistix), float64;
- Tsit5 with a PID controller at rtol = atol = 1e-8 on Lotka-Volterra over [0, 50] (jaxsolve,
  diffrax), float64.

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
    import diffrax
    import jax.numpy as jnp
    import jaxopt
    import optimistix as optx

    import jaxsolve as js

    from ._harness import measure_interleaved

    def rosenbrock(y, args=None):
        return jnp.sum(100.0 * (y[1:] - y[:-1] ** 2) ** 2 + (1.0 - y[:-1]) ** 2)

    tol, y0 = 1e-6, jnp.zeros(100)
    lbfgs = [
        ("jaxsolve LBFGS", jax.jit(lambda y: js.nonlinear.minimize(
            rosenbrock, js.nonlinear.LBFGS(rtol=0.0, atol=tol), y, max_steps=2000).value), (y0,)),
        ("jaxopt LBFGS", jax.jit(lambda y: jaxopt.LBFGS(
            fun=rosenbrock, tol=tol, maxiter=2000).run(y).params), (y0,)),
        ("optimistix LBFGS", jax.jit(lambda y: optx.minimise(
            rosenbrock, optx.LBFGS(rtol=tol, atol=tol), y, max_steps=2000).value), (y0,)),
    ]  # fmt: skip

    def lotka_volterra(t, y, args):
        return jnp.stack([y[0] - y[0] * y[1], -y[1] + y[0] * y[1]])

    u0 = jnp.array([2.0, 1.0])
    ours_term = js.diffeq.ODETerm(lotka_volterra)
    ours_ctrl = js.diffeq.PIDController(rtol=1e-8, atol=1e-8)
    their_ctrl = diffrax.PIDController(rtol=1e-8, atol=1e-8)
    ode = [
        ("jaxsolve Tsit5", jax.jit(lambda u: js.diffeq.solve(
            ours_term, js.diffeq.Tsit5(), 0.0, 50.0, u, dt0=0.01, controller=ours_ctrl,
            max_steps=100_000).ys), (u0,)),
        ("diffrax Tsit5", jax.jit(lambda u: diffrax.diffeqsolve(
            diffrax.ODETerm(lotka_volterra), diffrax.Tsit5(), 0.0, 50.0, 0.01, u,
            stepsize_controller=their_ctrl, max_steps=100_000).ys), (u0,)),
    ]  # fmt: skip
    out = {}
    for entries in (lbfgs, ode):
        for t in measure_interleaved(entries):
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
