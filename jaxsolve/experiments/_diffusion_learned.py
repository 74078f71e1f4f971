"""Learned timesteps (and per-step coefficients) vs the best fixed spacing, at few steps."""

import time
from typing import Annotated, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .. import diffusion
from ._mixture import GaussianMixture
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, register
from ._schema import MinLength, OpenUnitInterval, PositiveFloat, PositiveInt, Range, Seed

SPACINGS = ("logsnr", "uniform", "quadratic", "karras")


def mixture(schedule) -> GaussianMixture:
    """The three-component 2-D mixture of this experiment."""
    covs = [
        [[0.05, 0.02], [0.02, 0.03]],
        [[0.02, 0.0], [0.0, 0.08]],
        [[0.04, -0.01], [-0.01, 0.04]],
    ]
    return GaussianMixture(schedule, [0.5, 0.3, 0.2], [[1.5, 0.0], [-1.0, 1.2], [-0.5, -1.5]], covs)


_SAMPLERS = {
    "ddim": lambda: diffusion.DDIM(),
    "dpmpp2m": lambda: diffusion.DPMSolverPP(order=2),
    "dpmpp3m": lambda: diffusion.DPMSolverPP(order=3),
    "unipc2": lambda: diffusion.UniPC(order=2),
    "ghvb2": lambda: diffusion.GHVB(order=2, beta=0.8),
    "bdia": lambda: diffusion.BDIA(gamma=1.0),
}
# The config schema's choices for `samplers`, derived from the table above so they cannot drift.
SamplerName = Literal[tuple(_SAMPLERS)]


def make_sampler(name: str):
    """The sampler that a config's `samplers` entry names (see `_SAMPLERS`)."""
    if name not in _SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(_SAMPLERS)}")
    return _SAMPLERS[name]()


@register(
    "diffusion_learned_steps",
    "learned timesteps (+ per-step coefficients) vs the best fixed grid on a 2-D Gaussian mixture",
)
def diffusion_learned_steps(
    ctx: RunContext,
    samplers: Annotated[list[SamplerName], MinLength(1)] = ["dpmpp2m", "ddim"],  # noqa: B006 (TOML list parameter)
    # at least two steps, so that the grid has an interior time to learn
    nfes: Annotated[list[Annotated[int, Range(2)]], MinLength(1)] = [5, 6, 8, 10],  # noqa: B006
    num_train: PositiveInt = 256,
    num_test: PositiveInt = 2048,
    num_iterations: PositiveInt = 300,
    learning_rate: PositiveFloat = 0.03,
    t_end: OpenUnitInterval = 1e-3,
    reference_steps: PositiveInt = 500,
    seed: Seed = 0,
) -> ExperimentOutput:
    """For each sampler and NFE: the held-out RMSE (against the exact flow, computed with Heun
    at `reference_steps` steps) of the four fixed spacings, of the learned grid (started from
    the best fixed one) and of the learned grid with per-step coefficients."""
    # float64 so that the reference and the gradients are far more accurate than the errors.
    with jax.enable_x64(True):
        return _run(
            ctx,
            samplers,
            nfes,
            num_train,
            num_test,
            num_iterations,
            learning_rate,
            t_end,
            reference_steps,
            seed,
        )


def _run(
    ctx,
    samplers,
    nfes,
    num_train,
    num_test,
    num_iterations,
    learning_rate,
    t_end,
    reference_steps,
    seed,
):
    schedule = diffusion.VPLinear()
    model = diffusion.Model(mixture(schedule).eps, schedule, prediction="eps")
    k_train, k_test = jax.random.split(jax.random.key(seed))
    x_train = jax.random.normal(k_train, (num_train, 2), jnp.float64)
    x_test = jax.random.normal(k_test, (num_test, 2), jnp.float64)
    ref_ts = diffusion.timesteps(schedule, reference_steps, t_end=t_end)
    reference = eqx.filter_jit(lambda x: diffusion.sample(diffusion.HeunEDM(), model, x, ref_ts))
    y_train, y_test = reference(x_train), reference(x_test)

    def rmse(x, y):
        return float(jnp.sqrt(jnp.mean(jnp.sum((x - y) ** 2, axis=-1))))

    rows, series = [], {}
    for name in samplers:
        sampler = make_sampler(name)
        run = eqx.filter_jit(lambda m, x, ts, s=sampler: diffusion.sample(s, m, x, ts))
        best_fixed, learned, learned_c = [], [], []
        for nfe in nfes:
            num_steps = nfe // sampler.num_evaluations(1)
            ctx.status(f"{name}: NFE {nfe}")
            fixed = {}
            for spacing in SPACINGS:
                ts = diffusion.timesteps(schedule, num_steps, spacing, t_end=t_end)
                fixed[spacing] = rmse(run(model, x_test, ts), y_test)
            best = min(fixed, key=fixed.get)
            results = {}
            for coeffs in (False, True):
                start = time.perf_counter()
                found = diffusion.learn_timesteps(
                    sampler,
                    model,
                    x_train,
                    num_steps,
                    init=best,
                    t_end=t_end,
                    teacher=y_train,
                    learn_coefficients=coeffs,
                    optimizer=optax.adam(learning_rate),
                    num_iterations=num_iterations,
                )
                seconds = time.perf_counter() - start
                results[coeffs] = (rmse(run(found.model(model), x_test, found.ts), y_test), seconds)
                if not coeffs:
                    grid = found.ts
            row = {
                "sampler": name,
                "nfe": nfe,
                **{f"fixed_{s}": fixed[s] for s in SPACINGS},
                "best_fixed": best,
                "learned_grid": results[False][0],
                "learned_grid_and_coeffs": results[True][0],
                "ratio_grid": fixed[best] / results[False][0],
                "ratio_grid_and_coeffs": fixed[best] / results[True][0],
                "search_seconds": results[False][1] + results[True][1],
                "learned_ts": [round(float(t), 6) for t in grid],
            }
            rows.append(row)
            best_fixed.append(fixed[best])
            learned.append(results[False][0])
            learned_c.append(results[True][0])
        series[f"{name} best fixed"] = (nfes, best_fixed)
        series[f"{name} learned grid"] = (nfes, learned)
        series[f"{name} learned grid+coeffs"] = (nfes, learned_c)
    plot = line_plot(
        ctx.path("learned_steps.png"),
        series,
        title="Held-out RMSE vs NFE: fixed vs learned grids",
        xlabel="NFE",
        ylabel="RMSE vs exact flow",
        logy=True,
    )
    summary = {
        "min_ratio_grid": min(r["ratio_grid"] for r in rows),
        "max_ratio_grid": max(r["ratio_grid"] for r in rows),
        "min_ratio_grid_and_coeffs": min(r["ratio_grid_and_coeffs"] for r in rows),
        "max_ratio_grid_and_coeffs": max(r["ratio_grid_and_coeffs"] for r in rows),
        "goal": "learned error <= best fixed / 2 at NFE <= 10",
        "goal_met_grid_only": all(r["ratio_grid"] >= 2 for r in rows),
        "goal_met_with_coeffs": all(r["ratio_grid_and_coeffs"] >= 2 for r in rows),
    }
    return ExperimentOutput(table=rows, summary=summary, plots=[plot])
