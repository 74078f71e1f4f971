"""SDE experiments: adaptive vs constant stepping on a high-volatility CIR model, the strong-order
table of every SDE solver, and the `diffeq` quickstart section."""

import time
from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np

import jaxsolve as js

from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, check_row, quickstart_section, register
from ._schema import (
    MinLength,
    NonNegativeFloat,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    Seed,
    Tolerance,
)

d = js.diffeq


def _dtype():
    return jnp.result_type(float)  # float32 unless jax_enable_x64


def _slope(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(y) & (y > 0)
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


# ---------------------------------------------------------------------------------------------
# CIR: constant vs adaptive stepping
# ---------------------------------------------------------------------------------------------


@register(
    "sde_cir_adaptive",
    "High-volatility CIR: strong error vs work of SPaRK with constant steps vs a PID controller "
    "on the virtual Brownian tree (Jelinčič, Foster, Kidger et al., 2024).",
    requires=[("tree_tol < t1", lambda p: p["tree_tol"] < p["t1"])],
)
def sde_cir_adaptive(
    ctx: RunContext,
    kappa: PositiveFloat = 1.0,
    theta: PositiveFloat = 1.0,
    sigma: PositiveFloat = 1.5,
    x0: NonNegativeFloat = 1.0,
    t1: PositiveFloat = 1.0,
    num_paths: PositiveInt = 100,
    tree_tol: PositiveFloat = 2.0**-12,
    steps: Annotated[list[PositiveInt], MinLength(2)] = [8, 16, 32, 64, 128, 256],  # noqa: B006
    tolerances: Annotated[list[Tolerance], MinLength(2)] = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3],  # noqa: B006
    pcoeff: NonNegativeFloat = 0.1,
    icoeff: NonNegativeFloat = 0.3,
    seed: Seed = 0,
) -> ExperimentOutput:
    """dX = κ(θ − X) dt + σ √X dW (Itô) with 2κθ < σ² (the Feller condition fails, so paths
    touch 0 where √X is not Lipschitz). Solved in Stratonovich form (drift − σ²/4) by SPaRK,
    with constant steps and with a PID controller (error order = strong order + 1/2) on the
    same trees; strong error at t1 against SPaRK with steps of the tree's tolerance."""
    dtype = _dtype()
    y0 = jnp.full((1,), x0, dtype)
    keys = jax.random.split(jax.random.key(seed), num_paths)

    def make_term(key):
        bm = js.brownian.VirtualBrownianTree(
            0.0, t1, tree_tol, (1,), key, levy_area="space-time", dtype=dtype
        )
        return d.SDETerm(
            lambda t, y, args: kappa * (theta - y) - sigma**2 / 4,
            lambda t, y, args: sigma * jnp.sqrt(jnp.maximum(y, 0.0)),
            bm,
        )

    max_steps = int(np.ceil(t1 / tree_tol)) + 16

    @jax.jit
    def constant(keys, dt0):
        def one(key):
            sol = d.solve(
                make_term(key), d.SPaRK(), 0.0, t1, y0, dt0=dt0, max_steps=max_steps,
                adjoint=d.ForwardMode(), throw=False,
            )  # fmt: skip
            return sol.ys[-1, 0], sol.stats["num_steps"]

        return jax.vmap(one)(keys)

    @jax.jit
    def adaptive(keys, tol):
        def one(key):
            controller = d.PIDController(
                rtol=0.0, atol=tol, pcoeff=pcoeff, icoeff=icoeff, dtmin=2 * tree_tol
            )
            sol = d.solve(
                make_term(key), d.SPaRK(), 0.0, t1, y0, dt0=t1 / 16, controller=controller,
                max_steps=max_steps, adjoint=d.ForwardMode(), throw=False,
            )  # fmt: skip
            return sol.ys[-1, 0], sol.stats["num_steps"]

        return jax.vmap(one)(keys)

    start = time.perf_counter()
    ctx.status("reference solve (steps of the tree's tolerance)")
    reference, _ = constant(keys, jnp.asarray(tree_tol, dtype))
    table, curves = [], {"constant": ([], []), "adaptive (PID)": ([], [])}
    for n in steps:
        ys, work = constant(keys, jnp.asarray(t1 / n, dtype))
        err = float(jnp.sqrt(jnp.mean((ys - reference) ** 2)))
        table.append({"stepping": "constant", "setting": f"dt={t1 / n:.4g}",
                      "mean_steps": float(jnp.mean(work)), "strong_error": err})  # fmt: skip
    for tol in tolerances:
        ctx.status(f"adaptive, atol={tol}")
        ys, work = adaptive(keys, jnp.asarray(tol, dtype))
        err = float(jnp.sqrt(jnp.mean((ys - reference) ** 2)))
        table.append({"stepping": "adaptive (PID)", "setting": f"atol={tol:.3g}",
                      "mean_steps": float(jnp.mean(work)), "strong_error": err})  # fmt: skip
    for row in table:
        curves[row["stepping"]][0].append(row["mean_steps"])
        curves[row["stepping"]][1].append(row["strong_error"])
    order_constant = -_slope(*curves["constant"])
    order_adaptive = -_slope(*curves["adaptive (PID)"])
    plot = line_plot(
        ctx.path("sde_cir_adaptive.png"),
        curves,
        title=f"CIR (sigma={sigma}): SPaRK strong error vs steps",
        xlabel="mean number of steps (incl. rejected)",
        ylabel="RMS error at t1",
        logx=True,
        logy=True,
    )
    summary = {
        "order_constant": order_constant,
        "order_adaptive": order_adaptive,
        "order_ratio": order_adaptive / order_constant,
        "paper_claim": "adaptive more than doubles the order of constant stepping (ratio > 2)",
        "feller_condition_holds": bool(2 * kappa * theta >= sigma**2),
        "num_paths": num_paths,
        "seconds": time.perf_counter() - start,
    }
    return ExperimentOutput(table=table, summary=summary, plots=[plot])


# ---------------------------------------------------------------------------------------------
# Strong order of every SDE solver
# ---------------------------------------------------------------------------------------------

_MU, _SIGMA = (0.5, -0.2), (0.8, 0.5)
_ADD_SIGMA = (1.5, 1.0)


def _gbm_term(bm, dtype):
    mu, sigma = jnp.asarray(_MU, dtype), jnp.asarray(_SIGMA, dtype)
    return d.SDETerm(lambda t, y, a: mu * y, lambda t, y, a: sigma * y, bm)


def _additive_term(bm, dtype):
    sigma = jnp.asarray(_ADD_SIGMA, dtype)
    return d.SDETerm(
        lambda t, y, a: -jnp.sin(y) + 0.3 * jnp.cos(2 * t),
        lambda t, y, a: sigma,
        bm,
        noise="additive",
    )


@register(
    "sde_order_table",
    "Measured strong order of every SDE solver (GBM with diagonal noise against its exact "
    "solution; a nonlinear additive-noise SDE against a fine reference on the same tree).",
)
def sde_order_table(
    ctx: RunContext,
    num_paths: PositiveInt = 64,
    steps: Annotated[list[PositiveInt], MinLength(2)] = [4, 8, 16, 32],  # noqa: B006
    tree_tol: OpenUnitInterval = 2.0**-9,  # the paths run over [0, 1]
    seed: Seed = 0,
) -> ExperimentOutput:
    """Strong (RMS) error at t = 1 for constant steps 1/n, on the virtual Brownian tree; the
    measured order is the fitted slope of log error against log step."""
    dtype = _dtype()
    keys = jax.random.split(jax.random.key(seed), num_paths)
    y0 = jnp.asarray([1.0, 0.5], dtype)
    max_steps = int(np.ceil(1 / tree_tol)) + 16

    def tree(key):
        return js.brownian.VirtualBrownianTree(
            0.0, 1.0, tree_tol, (2,), key, levy_area="space-time", dtype=dtype
        )

    def runner(problem, solver):
        @jax.jit
        def run(keys, dt0):
            def one(key):
                bm = tree(key)
                term = problem(bm, dtype)
                sol = d.solve(
                    term, solver, 0.0, 1.0, y0, dt0=dt0, max_steps=max_steps,
                    adjoint=d.ForwardMode(),
                )  # fmt: skip
                return sol.ys[-1], bm.evaluate(1.0)

            return jax.vmap(one)(keys)

        return run

    ctx.status("additive-noise reference (ShARK, steps of the tree's tolerance)")
    reference, _ = runner(_additive_term, d.ShARK())(keys, jnp.asarray(tree_tol, dtype))
    cases = [
        ("diagonal (GBM, Itô)", _gbm_term, d.EulerMaruyama(), True),
        ("diagonal (GBM, Itô)", _gbm_term, d.Milstein(), True),
        ("diagonal (GBM, Stratonovich)", _gbm_term, d.Heun(), False),
        ("diagonal (GBM, Stratonovich)", _gbm_term, d.SPaRK(), False),
        ("additive", _additive_term, d.EulerMaruyama(), None),
        ("additive", _additive_term, d.Heun(), None),
        ("additive", _additive_term, d.SEA(), None),
        ("additive", _additive_term, d.ShARK(), None),
        ("additive", _additive_term, d.SRA1(), None),
        ("additive", _additive_term, d.SPaRK(), None),
    ]
    mu, sigma = jnp.asarray(_MU, dtype), jnp.asarray(_SIGMA, dtype)
    table, curves = [], {}
    for noise, problem, solver, ito in cases:
        name = type(solver).__name__
        ctx.status(f"{name}, {noise}")
        run = runner(problem, solver)
        errors = []
        for n in steps:
            ys, w1 = run(keys, jnp.asarray(1.0 / n, dtype))
            if ito is None:
                exact = reference
            else:
                exact = y0 * jnp.exp(mu - (0.5 * sigma**2 if ito else 0.0) + sigma * w1)
            errors.append(float(jnp.sqrt(jnp.mean(jnp.sum((ys - exact) ** 2, axis=-1)))))
        measured = _slope(1.0 / np.asarray(steps), errors)
        theory = solver.strong_order(problem(tree(keys[0]), dtype))
        table.append({"solver": name, "noise": noise, "levy_area": solver.levy_area,
                      "theory": theory, "measured": round(measured, 3),
                      "errors": [float(f"{e:.3e}") for e in errors]})  # fmt: skip
        curves[f"{name} ({noise.split()[0]})"] = (1.0 / np.asarray(steps), errors)
    plot = line_plot(
        ctx.path("sde_order_table.png"),
        curves,
        title="Strong error at t=1 vs step size",
        xlabel="dt",
        ylabel="RMS error",
        logx=True,
        logy=True,
    )
    worst = max(abs(r["measured"] - r["theory"]) for r in table)
    return ExperimentOutput(
        table=table, summary={"max_abs_order_deviation": worst, "num_paths": num_paths},
        plots=[plot],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Quickstart section
# ---------------------------------------------------------------------------------------------


@quickstart_section("diffeq", order=2)
def _diffeq_section(ctx: RunContext):
    """Tsit5 on the logistic ODE (exact solution), and Milstein's strong error on GBM."""
    dtype = _dtype()
    logistic = d.ODETerm(lambda t, y, args: y * (1 - y))
    ts = jnp.linspace(0.0, 4.0, 41, dtype=dtype)
    sol = d.solve(
        logistic, d.Tsit5(), 0.0, 4.0, jnp.asarray([0.1], dtype), saveat=d.SaveAt(ts=ts),
        controller=d.PIDController(rtol=1e-5, atol=1e-6),
    )  # fmt: skip
    exact = 1 / (1 + 9 * np.exp(-np.asarray(ts)))
    value = float(sol.ys[-1, 0])

    keys = jax.random.split(jax.random.key(0), 128)
    mu, sigma = 0.5, 0.8

    @jax.jit
    def strong_error(keys):
        def one(key):
            bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 2.0**-10, (1,), key, dtype=dtype)
            term = d.SDETerm(lambda t, y, a: mu * y, lambda t, y, a: sigma * y, bm)
            y1 = d.solve(term, d.Milstein(), 0.0, 1.0, jnp.ones(1, dtype), dt0=1 / 512).ys[-1, 0]
            return y1 - jnp.exp(mu - 0.5 * sigma**2 + sigma * bm.evaluate(1.0)[0])

        return jnp.sqrt(jnp.mean(jax.vmap(one)(keys) ** 2))

    gbm_error = float(strong_error(keys))
    plot = line_plot(
        ctx.path("quickstart_diffeq.png"),
        {
            "Tsit5 (dense output)": (np.asarray(ts), np.asarray(sol.ys[:, 0])),
            "exact": (np.asarray(ts), exact),
        },  # fmt: skip
        title="Logistic ODE: Tsit5 with a PID controller",
        xlabel="t",
        ylabel="y",
    )
    rows = [
        check_row("diffeq", "logistic y(4), Tsit5 rtol=1e-5", value, exact[-1], tolerance=1e-4),
        # strong order 1: the error at dt = 1/512 is O(1e-3)
        check_row(
            "diffeq",
            "GBM strong error at t=1, Milstein dt=1/512 (128 paths)",
            gbm_error,
            0.0,
            tolerance=5e-3,
        ),
    ]
    summary = {"tsit5_steps": int(sol.stats["num_steps"]), "gbm_milstein_strong_error": gbm_error}
    return rows, summary, [plot]
