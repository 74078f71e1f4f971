"""Error vs number of network evaluations (NFE) for every sampler on a 2-D Gaussian mixture,
against the exact probability-flow map computed by `jaxsolve.diffeq` at tight tolerance."""

import math
import time
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np

from .. import diffeq, diffusion
from ._mixture import GaussianMixture
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, check_row, quickstart_section, register
from ._schema import ConfigError, MinLength, OpenUnitInterval, PositiveInt, Seed, Tolerance


def _mixture(schedule) -> GaussianMixture:
    """The four-component 2-D mixture of this experiment."""
    covs = [
        [[0.05, 0.02], [0.02, 0.03]],
        [[0.02, 0.0], [0.0, 0.08]],
        [[0.04, -0.01], [-0.01, 0.04]],
        [[0.03, 0.0], [0.0, 0.03]],
    ]
    means = [[1.5, 0.0], [-1.0, 1.2], [-0.5, -1.5], [0.4, 1.6]]
    return GaussianMixture(schedule, [0.35, 0.25, 0.25, 0.15], means, covs)


def _reference_flow(mixture, x_T, t_start, t_end, rtol):
    """The probability-flow map in log-SNR time: dx/dlam = (d log sigma/d lam) x + alpha D."""
    sched = mixture.schedule

    def log_sigma(lam):
        return jnp.log(sched.sigma(sched.t_of_logsnr(lam)))

    def field(lam, x, args):
        t = sched.t_of_logsnr(lam)
        return jax.grad(log_sigma)(lam) * x + sched.alpha(t) * mixture.x0(x, t)

    sol = diffeq.solve(
        diffeq.ODETerm(field),
        diffeq.Dopri5(),
        sched.logsnr(t_start),
        sched.logsnr(t_end),
        x_T,
        controller=diffeq.PIDController(rtol=rtol, atol=rtol),
        max_steps=100_000,
    )
    return sol.ys[-1]


def sampler_registry() -> dict[str, diffusion.AbstractSampler]:
    """Every deterministic sampler exported by `jaxsolve.diffusion`: the configured variants
    below, plus any other exported sampler class with its default hyperparameters."""
    d = diffusion
    named = {
        "DDIM": d.DDIM(),
        "DPMSolver-1": d.DPMSolver(order=1),
        "DPMSolver-2": d.DPMSolver(order=2),
        "DPMSolver-3": d.DPMSolver(order=3),
        "DPMSolver++(2M)": d.DPMSolverPP(order=2),
        "DPMSolver++(3M)": d.DPMSolverPP(order=3),
        "UniPC-1(bh2)": d.UniPC(order=1),
        "UniPC-2(bh2)": d.UniPC(order=2),
        "UniPC-3(bh2)": d.UniPC(order=3),
        "UniPC-2(bh1)": d.UniPC(order=2, variant="bh1"),
        "UniP-2 (no corrector)": d.UniPC(order=2, corrector=False),
        "DEIS-2": d.DEIS(order=2),
        "DEIS-3": d.DEIS(order=3),
        "DEIS-4": d.DEIS(order=4),
        "PNDM(prk)": d.PNDM(),
        "PNDM(plms)": d.PNDM(warmup="plms"),
    }
    covered = {type(s) for s in named.values()}
    for attr in sorted(dir(d)):
        cls = getattr(d, attr)
        if (
            isinstance(cls, type)
            and issubclass(cls, d.AbstractSampler)
            and cls is not d.AbstractSampler
            and cls not in covered
        ):
            try:
                sampler = cls()
            except TypeError:
                continue  # needs arguments we cannot guess
            named[attr] = sampler
    return {k: v for k, v in named.items() if not v.is_stochastic()}


def _steps_for(sampler, nfe: int) -> int:
    """The most steps whose declared NFE fits in `nfe` (0 if none)."""
    best = 0
    for n in range(1, nfe + 1):
        if sampler.num_evaluations(n) <= nfe:
            best = n
    return best


@register(
    "diffusion_error_vs_nfe",
    "Error vs NFE (5..50) of every deterministic diffusion sampler on a 2-D Gaussian mixture, "
    "against the exact probability-flow map (jaxsolve.diffeq, rtol 1e-10).",
)
def diffusion_error_vs_nfe(
    ctx: RunContext,
    nfes: Annotated[list[PositiveInt], MinLength(1)] = [5, 6, 8, 10, 15, 20, 50],  # noqa: B006
    num_samples: PositiveInt = 256,
    spacing: Literal["logsnr", "uniform", "quadratic", "karras"] = "logsnr",
    t_end: OpenUnitInterval = 1e-3,
    reference_rtol: Tolerance = 1e-10,
    seed: Seed = 0,
    samplers: list[str] = [],  # noqa: B006
) -> ExperimentOutput:
    """RMS error of x_0 over `num_samples` noise draws, for each sampler and NFE budget.

    `samplers` restricts the run to those names of `sampler_registry()` (empty: all)."""
    # Names first: a typo must fail before the reference solve compiles.
    registry = sampler_registry()
    unknown = [name for name in samplers if name not in registry]
    if unknown:
        raise ConfigError(f"unknown sampler {unknown[0]!r}; available: {', '.join(registry)}")
    jax.config.update("jax_enable_x64", True)
    sched = diffusion.VPLinear()
    mixture = _mixture(sched)
    model = diffusion.Model(mixture.x0, sched, prediction="x0")
    x_T = jax.random.normal(jax.random.key(seed), (num_samples, 2), jnp.float64)
    t_start = sched.t_start_default
    start = time.perf_counter()
    reference = jax.jit(_reference_flow, static_argnums=4)(
        mixture, x_T, t_start, t_end, reference_rtol
    )
    reference_s = time.perf_counter() - start
    samplers = {k: v for k, v in registry.items() if not samplers or k in samplers}
    table, curves = [], {}
    for name, sampler in samplers.items():
        ctx.status(f"sampler {name}")
        xs, ys = [], []
        run = jax.jit(lambda x, ts, sampler=sampler: diffusion.sample(sampler, model, x, ts))
        for nfe in nfes:
            num_steps = _steps_for(sampler, nfe)
            if num_steps < 1:
                continue
            ts = diffusion.timesteps(sched, num_steps, spacing, t_start=t_start, t_end=t_end)
            x = run(x_T, ts)
            err = float(jnp.sqrt(jnp.mean(jnp.sum((x - reference) ** 2, axis=-1))))
            used = sampler.num_evaluations(num_steps)
            table.append(
                {"sampler": name, "nfe_budget": nfe, "nfe": used, "steps": num_steps, "rmse": err}
            )
            if math.isfinite(err):
                xs.append(used)
                ys.append(err)
        if xs:
            curves[name] = (np.asarray(xs), np.asarray(ys))
    plot = line_plot(
        ctx.path("diffusion_error_vs_nfe.png"),
        curves,
        title="2-D Gaussian mixture: RMSE vs NFE",
        xlabel="NFE",
        ylabel="RMSE vs exact flow",
        logx=True,
        logy=True,
        # the data have scale ~1: an RMSE above 10 is divergence, and drawing it to 1e3 would
        # squash the curves that matter into the bottom half
        ylim=(None, 10.0),
    )
    at10 = {r["sampler"]: r["rmse"] for r in table if r["nfe_budget"] == 10}
    best10 = min(at10, key=at10.get) if at10 else None
    summary = {
        "samplers": list(samplers),
        "reference": f"jaxsolve.diffeq Dopri5 in log-SNR time, rtol=atol={reference_rtol}",
        "reference_seconds": round(reference_s, 2),
        "rmse_at_nfe10": at10,
        "best_at_nfe10": best10,
    }
    return ExperimentOutput(table=table, summary=summary, plots=[plot])


@quickstart_section("diffusion", order=3)
def _diffusion_section(ctx: RunContext):
    """DPM-Solver++(2M), 10 steps, on Gaussian data: compare with the closed-form flow map."""
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    sched = diffusion.VPLinear()
    mean = jnp.asarray([1.0, -0.5], dtype)
    var = jnp.asarray([0.5, 0.1], dtype)  # diagonal covariance

    def denoiser(x, t):
        a, s = sched.alpha(t), sched.sigma(t)
        return mean + a * var / (a * a * var + s * s) * (x - a * mean)

    model = diffusion.Model(denoiser, sched, prediction="x0")
    ts = diffusion.timesteps(sched, 10, dtype=dtype)
    x_T = jax.random.normal(jax.random.key(0), (512, 2), dtype)
    x0 = jax.jit(lambda x: diffusion.sample(diffusion.DPMSolverPP(order=2), model, x, ts))(x_T)

    def exact(t):  # x_t = a_t mean + sqrt(C_t / C_T) (x_T - a_T mean), C = a^2 var + s^2
        a, s, a_T, s_T = sched.alpha(t), sched.sigma(t), sched.alpha(ts[0]), sched.sigma(ts[0])
        return a * mean + jnp.sqrt((a * a * var + s * s) / (a_T * a_T * var + s_T * s_T)) * (
            x_T - a_T * mean
        )

    ref = exact(ts[-1])
    err = float(jnp.max(jnp.abs(x0 - ref)))
    rows = [
        # 10 steps of a second-order method: the discretisation error is a few 1e-2
        check_row(
            "diffusion",
            "DPM-Solver++(2M), 10 steps: sample[0, 0] vs exact flow map",
            x0[0, 0],
            ref[0, 0],
            tolerance=0.1,
        ),
        check_row(
            "diffusion",
            "DPM-Solver++(2M), 10 steps: mean of samples[:, 1] vs exact flow map",
            jnp.mean(x0[:, 1]),
            jnp.mean(ref[:, 1]),
            tolerance=1e-2,
        ),
    ]
    return rows, {"max_abs_error_10_steps": err}, []
