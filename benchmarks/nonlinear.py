"""Nonlinear solvers vs jaxopt and optimistix, same problem, tolerance and dtype, one process.

1. Ridge hypergradient (n=2000, d=200, float64): d L_val(w*(lam)) / d lam, with w* from
   L-BFGS/BFGS and implicit differentiation; relative error against the closed form.
2. Rosenbrock n=100 by L-BFGS (float64): compile and run time.
3. Levenberg-Marquardt on a 200-residual exponential-sum fit vs optimistix.

Run: `python -m benchmarks.nonlinear` (from the repository root).
"""

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxsolve as js  # noqa: E402

from ._harness import add_note, measure, print_table  # noqa: E402

warnings.filterwarnings("ignore")


def interleaved_minimum(title, entries, *args, rounds=30):
    """Minimum over `rounds` single calls, the entries interleaved call by call: robust to the
    load swings of a shared machine, which move back-to-back medians by up to 2x. Prints one
    line per entry with its ratio to the second entry (the anchor)."""
    import time

    best = {name: float("inf") for name, _ in entries}
    for _, fn in entries:
        jax.block_until_ready(fn(*args))
    for _ in range(rounds):
        for name, fn in entries:
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - start)
    anchor = entries[1][0]
    add_note(
        f"\n{title}, minimum of {rounds} interleaved calls: "
        + "; ".join(
            f"{name} {best[name] * 1e3:.3f} ms ({best[name] / best[anchor]:.3f}x)"
            for name, _ in entries
        )
    )
    return best


nl = js.nonlinear
TOL = 1e-10


def ridge_data(n=2000, d=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w_true = rng.normal(size=d)
    y = X @ w_true + 0.5 * rng.normal(size=n)
    Xv = rng.normal(size=(500, d))
    yv = Xv @ w_true + 0.5 * rng.normal(size=500)
    return [jnp.asarray(a) for a in (X, y, Xv, yv)]


def ridge_loss(w, args):
    lam, X, y = args
    r = X @ w - y
    return 0.5 * jnp.vdot(r, r) / X.shape[0] + 0.5 * lam * jnp.vdot(w, w)


def val_loss(w, Xv, yv):
    r = Xv @ w - yv
    return 0.5 * jnp.vdot(r, r) / Xv.shape[0]


def ridge_exact_hypergradient(lam, X, y, Xv, yv):
    X, y, Xv, yv = (np.asarray(a) for a in (X, y, Xv, yv))
    n, d = X.shape
    H = X.T @ X + n * lam * np.eye(d)
    w = np.linalg.solve(H, X.T @ y)
    dw = -np.linalg.solve(H, n * w)
    return float((Xv.T @ (Xv @ w - yv) / Xv.shape[0]) @ dw)


def bench_ridge():
    import jaxopt
    import optimistix as optx

    X, y, Xv, yv = ridge_data()
    lam = jnp.array(0.1)
    exact = ridge_exact_hypergradient(0.1, X, y, Xv, yv)
    w0 = jnp.zeros(X.shape[1])

    @jax.jit
    def ours(lam):
        def outer(lam):
            solver = nl.LBFGS(rtol=0.0, atol=TOL)
            return val_loss(nl.minimize(ridge_loss, solver, w0, (lam, X, y)).value, Xv, yv)

        return jax.grad(outer)(lam)

    @jax.jit
    def theirs_jaxopt(lam):
        def outer(lam):
            fun = lambda w, lam: ridge_loss(w, (lam, X, y))
            solver = jaxopt.LBFGS(fun=fun, tol=TOL, maxiter=500, implicit_diff=True)
            return val_loss(solver.run(w0, lam).params, Xv, yv)

        return jax.grad(outer)(lam)

    def theirs_optimistix(solver):
        @jax.jit
        def run(lam):
            def outer(lam):
                sol = optx.minimise(lambda w, lam: ridge_loss(w, (lam, X, y)), solver, w0, lam)
                return val_loss(sol.value, Xv, yv)

            return jax.grad(outer)(lam)

        return run

    entries = [
        ("jaxsolve LBFGS (implicit)", ours),
        ("jaxopt LBFGS (implicit)", theirs_jaxopt),
        ("optimistix LBFGS (implicit)", theirs_optimistix(optx.LBFGS(rtol=TOL, atol=TOL))),
        ("optimistix BFGS (implicit)", theirs_optimistix(optx.BFGS(rtol=TOL, atol=TOL))),
    ]
    timings = []
    for name, fn in entries:
        timing = measure(name, fn, lam)
        rel = abs(float(fn(lam)) - exact) / abs(exact)
        timing.note = f"rel.err {rel:.1e}"
        timings.append(timing)
    rows = print_table(
        "Ridge hypergradient, n=2000, d=200, float64, tol 1e-10", timings, "jaxopt LBFGS (implicit)"
    )
    interleaved_minimum("Ridge hypergradient", entries, lam)
    return rows


def rosenbrock(y, args=None):
    return jnp.sum(100.0 * (y[1:] - y[:-1] ** 2) ** 2 + (1.0 - y[:-1]) ** 2)


def rosenbrock_entries():
    """`(entries, y0)`: the Rosenbrock n=100 L-BFGS solves of the three libraries, jitted, at
    tol 1e-6 (also timed by `benchmarks.small_cpu`)."""
    import jaxopt
    import optimistix as optx

    y0 = jnp.zeros(100)
    tol = 1e-6

    @jax.jit
    def ours(y0):
        sol = nl.minimize(rosenbrock, nl.LBFGS(rtol=0.0, atol=tol), y0, max_steps=2000)
        return sol.value

    @jax.jit
    def theirs_jaxopt(y0):
        return jaxopt.LBFGS(fun=rosenbrock, tol=tol, maxiter=2000).run(y0).params

    @jax.jit
    def theirs_optimistix(y0):
        return optx.minimise(rosenbrock, optx.LBFGS(rtol=tol, atol=tol), y0, max_steps=2000).value

    entries = [
        ("jaxsolve LBFGS", ours),
        ("jaxopt LBFGS", theirs_jaxopt),
        ("optimistix LBFGS", theirs_optimistix),
    ]
    return entries, y0


def bench_rosenbrock():
    entries, y0 = rosenbrock_entries()
    timings = []
    for name, fn in entries:
        timing = measure(name, fn, y0)
        timing.note = f"max|y-1| {float(jnp.max(jnp.abs(fn(y0) - 1.0))):.1e}"
        timings.append(timing)
    rows = print_table("Rosenbrock n=100, L-BFGS, float64, tol 1e-6", timings, "jaxopt LBFGS")
    interleaved_minimum("Rosenbrock n=100 L-BFGS", entries, y0)
    return rows


def bench_levenberg_marquardt():
    import optimistix as optx

    t = jnp.linspace(0.0, 4.0, 200)
    truth = jnp.array([2.0, 1.3, 0.5, 0.2])
    noise = 0.01 * jnp.asarray(np.random.default_rng(0).normal(size=200))
    data = truth[0] * jnp.exp(-truth[1] * t) + truth[2] * jnp.exp(-truth[3] * t) + noise

    def residuals(c, data):
        return c[0] * jnp.exp(-c[1] * t) + c[2] * jnp.exp(-c[3] * t) - data

    c0 = jnp.array([1.0, 1.0, 1.0, 0.1])
    tol = 1e-8

    @jax.jit
    def ours(data):
        solver = nl.LevenbergMarquardt(rtol=tol, atol=tol)
        return nl.least_squares(residuals, solver, c0, data, max_steps=500).value

    @jax.jit
    def theirs(data):
        solver = optx.LevenbergMarquardt(rtol=tol, atol=tol)
        return optx.least_squares(residuals, solver, c0, data, max_steps=500).value

    timings = []
    for name, fn in [
        ("jaxsolve LevenbergMarquardt", ours),
        ("optimistix LevenbergMarquardt", theirs),
    ]:
        timings.append(measure(name, fn, data))
    reference = np.asarray(theirs(data))
    for timing, fn in zip(timings, (ours, theirs), strict=True):
        cost = float(0.5 * jnp.sum(residuals(fn(data), data) ** 2))
        diff = float(np.max(np.abs(np.asarray(fn(data)) - reference)))
        timing.note = f"0.5|r|^2 {cost:.6e}, max|c - c_optx| {diff:.1e}"
    rows = print_table(
        "Levenberg-Marquardt, 200 residuals, 4 parameters, float64, tol 1e-8",
        timings,
        "optimistix LevenbergMarquardt",
    )
    interleaved_minimum(
        "Levenberg-Marquardt",
        [("jaxsolve LevenbergMarquardt", ours), ("optimistix LevenbergMarquardt", theirs)],
        data,
    )
    return rows


if __name__ == "__main__":
    bench_ridge()
    bench_rosenbrock()
    bench_levenberg_marquardt()
