"""Stiff ODEs: jaxsolve Kvaerno5 vs diffrax Kvaerno5 (its default root finder, VeryChord with the
controller's tolerances), same PID controller, tolerances, initial step and dtype (float64),
saving only t1; scipy's Radau as the accuracy reference (rtol=1e-12, atol=1e-14) and as a
steps/accuracy anchor at the same tolerances. Problems: Robertson's chemical kinetics to t = 1e5
and van der Pol with mu = 1000 to t = 3000 (about two relaxation cycles).
Run: `python -m benchmarks.stiff`."""

import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxsolve as js  # noqa: E402

from ._harness import add_note, measure_interleaved, print_table  # noqa: E402

warnings.filterwarnings("ignore")
d = js.diffeq


def robertson(t, y, args):
    a, b, c = y[0], y[1], y[2]
    return jnp.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b**2, 3e7 * b**2])


def robertson_jac(t, y):
    a, b, c = y
    return [[-0.04, 1e4 * c, 1e4 * b], [0.04, -1e4 * c - 6e7 * b, -1e4 * b], [0, 6e7 * b, 0]]


def vdp(t, y, mu):
    return jnp.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def vdp_jac(t, y, mu):
    return [[0.0, 1.0], [-2 * mu * y[0] * y[1] - 1, mu * (1 - y[0] ** 2)]]


# name, vector field, its Jacobian (for scipy), y0, args, t1, rtol, atol, dt0
PROBLEMS = [
    ("Robertson to t=1e5", robertson, robertson_jac, [1.0, 0.0, 0.0], None, 1e5, 1e-6, 1e-10, 1e-6),
    ("van der Pol mu=1000 to t=3000", vdp, vdp_jac, [2.0, 0.0], 1000.0, 3000.0, 1e-6, 1e-9, 1e-6),
]
MAX_STEPS = 16384


def jaxsolve_run(field, y0, args, t1, rtol, atol, dt0):
    solver = d.Kvaerno5(root_finder=d.ModifiedNewton(rtol=rtol, atol=atol))
    sol = d.solve(d.ODETerm(field), solver, 0.0, t1, y0, args=args, dt0=dt0,
                  controller=d.PIDController(rtol=rtol, atol=atol), max_steps=MAX_STEPS)  # fmt: skip
    return sol.ys[-1], sol.stats["num_steps"]


def diffrax_run(field, y0, args, t1, rtol, atol, dt0):
    import diffrax

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Kvaerno5(), 0.0, t1, dt0, y0, args=args,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=MAX_STEPS,
    )  # fmt: skip
    return sol.ys[-1], sol.stats["num_steps"]


def radau(field_jac, field, y0, args, t1, rtol, atol):
    """y(t1), the number of steps and the time of scipy's Radau (NumPy vector field)."""
    from scipy.integrate import solve_ivp

    def f_np(t, y):
        if field is robertson:
            a, b, c = y
            return [-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b**2, 3e7 * b**2]
        return [y[1], args * (1 - y[0] ** 2) * y[1] - y[0]]

    jac = field_jac if args is None else (lambda t, y: field_jac(t, y, args))
    start = time.perf_counter()
    out = solve_ivp(f_np, (0.0, t1), y0, method="Radau", rtol=rtol, atol=atol, jac=jac)
    return out.y[:, -1], len(out.t) - 1, time.perf_counter() - start


def main():
    for name, field, jac, y0, args, t1, rtol, atol, dt0 in PROBLEMS:
        y0 = jnp.asarray(y0)
        a = None if args is None else jnp.asarray(args)
        ours = jax.jit(
            lambda y, a, f=field, t1=t1, r=rtol, at=atol, h=dt0: jaxsolve_run(f, y, a, t1, r, at, h)
        )
        anchor = jax.jit(
            lambda y, a, f=field, t1=t1, r=rtol, at=atol, h=dt0: diffrax_run(f, y, a, t1, r, at, h)
        )
        # The same solver at a tenth of the tolerances: a point further along jaxsolve's
        # work-precision curve, for comparing at the accuracy diffrax reaches.
        tight = jax.jit(
            lambda y, a, f=field, t1=t1, r=rtol / 10, at=atol / 10, h=dt0: jaxsolve_run(
                f, y, a, t1, r, at, h
            )
        )
        timings = measure_interleaved(
            [
                ("jaxsolve Kvaerno5", ours, (y0, a)),
                ("jaxsolve Kvaerno5, tolerances / 10", tight, (y0, a)),
                ("diffrax Kvaerno5", anchor, (y0, a)),
            ],
            repeats=7,
            min_time=0.05,
        )
        exact, ref_steps, ref_time = radau(jac, field, list(map(float, y0)), args, t1, 1e-12, 1e-14)
        same, same_steps, same_time = radau(jac, field, list(map(float, y0)), args, t1, rtol, atol)

        def error(y):
            return float(np.max(np.abs(np.asarray(y) - exact) / np.maximum(np.abs(exact), atol)))

        for timing, fn in zip(timings, (ours, tight, anchor), strict=True):
            y, steps = fn(y0, a)
            timing.note = f"steps {int(steps)}, max rel. error at t1 {error(y):.1e}"
        print_table(
            f"Kvaerno5 + PID (rtol={rtol}, atol={atol}, dt0={dt0}), {name}, float64",
            timings,
            anchor="diffrax Kvaerno5",
        )
        add_note(
            f"scipy Radau, same tolerances: {same_steps} steps, max rel. error {error(same):.1e}, "
            f"{same_time:.3f} s; reference Radau (rtol=1e-12, atol=1e-14): {ref_steps} steps, "
            f"{ref_time:.2f} s"
        )


if __name__ == "__main__":
    main()
