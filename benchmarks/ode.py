"""Tsit5 with a PID controller on Lotka–Volterra vs diffrax: same tolerances, dtype (float64),
saving only t1. Compile (first call) and run time. Run: `python -m benchmarks.ode`."""

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import jaxsolve as js  # noqa: E402

from ._harness import measure, print_table  # noqa: E402

warnings.filterwarnings("ignore")
d = js.diffeq
Y0 = jnp.array([10.0, 5.0])
PARAMS = jnp.array([1.5, 1.0, 3.0, 1.0])
T1, RTOL, ATOL = 20.0, 1e-8, 1e-8


def lotka_volterra(t, y, p):
    prey, predator = y[0], y[1]
    return jnp.stack(
        [p[0] * prey - p[1] * prey * predator, -p[2] * predator + p[3] * prey * predator]
    )


def jaxsolve_run(y0, params, adjoint=None):
    sol = d.solve(d.ODETerm(lotka_volterra), d.Tsit5(), 0.0, T1, y0, args=params, dt0=0.01,
                  controller=d.PIDController(rtol=RTOL, atol=ATOL), adjoint=adjoint)  # fmt: skip
    return sol.ys[-1], sol.stats["num_steps"]


def diffrax_run(y0, params):
    import diffrax

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lotka_volterra), diffrax.Tsit5(), 0.0, T1, 0.01, y0, args=params,
        stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL), max_steps=4096,
    )  # fmt: skip
    return sol.ys[-1], sol.stats["num_steps"]


def reference_solution():
    """y(T) from scipy's DOP853 at rtol = atol = 1e-13 (an independent reference; the rows'
    errors are measured against it)."""
    import numpy as np
    from scipy.integrate import solve_ivp

    p = np.asarray(PARAMS)
    out = solve_ivp(
        lambda t, y: np.asarray(lotka_volterra(t, y, p)), (0.0, T1), np.asarray(Y0),
        method="DOP853", rtol=1e-13, atol=1e-13,
    )  # fmt: skip
    return jnp.asarray(out.y[:, -1])


def main():
    ours = jax.jit(jaxsolve_run)
    fwd = jax.jit(lambda y, p: jaxsolve_run(y, p, d.ForwardMode()))
    anchor = jax.jit(diffrax_run)
    # Measured first, so that the first call includes tracing and compilation.
    timings = [
        measure("jaxsolve Tsit5 (default adjoint)", ours, Y0, PARAMS),
        measure("jaxsolve Tsit5 (ForwardMode)", fwd, Y0, PARAMS),
        measure("diffrax Tsit5", anchor, Y0, PARAMS),
    ]
    exact = reference_solution()
    for timing, fn in zip(timings, (ours, fwd, anchor), strict=True):
        y, steps = fn(Y0, PARAMS)
        error = float(jnp.max(jnp.abs(y - exact) / jnp.abs(exact)))
        timing.note = f"steps {int(steps)}, max rel. error at T {error:.1e}"
    print_table(f"Tsit5 + PID (rtol=atol={RTOL}), Lotka-Volterra to t={T1}, float64", timings,
                anchor="diffrax Tsit5")  # fmt: skip
    grads = [
        measure(
            "jaxsolve grad wrt params",
            jax.jit(jax.grad(lambda p: jaxsolve_run(Y0, p)[0][0])),
            PARAMS,
        ),  # fmt: skip
        measure(
            "diffrax grad wrt params", jax.jit(jax.grad(lambda p: diffrax_run(Y0, p)[0][0])), PARAMS
        ),  # fmt: skip
    ]
    print_table("Reverse-mode gradient of y(T)[0] wrt the 4 parameters", grads,
                anchor="diffrax grad wrt params")  # fmt: skip


if __name__ == "__main__":
    main()
