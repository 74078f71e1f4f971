"""`cbo_rastrigin`: how often consensus-based optimisation finds the global minimum of the
Rastrigin function, as the number of particles and the dimension grow."""

import time
from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np

from .. import optimizers
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, register
from ._schema import MinLength, PositiveFloat, PositiveInt, Range, Seed


def _rastrigin(x, shift):
    y = x - shift
    return 10 * y.size + jnp.sum(y**2 - 10 * jnp.cos(2 * jnp.pi * y))


def _success_rate(dim, num_particles, num_seeds, params, seed):
    """Run `num_seeds` CBO runs at once (vmapped); return the rows' figures."""
    shift, box, tolerance = params["shift"], params["box"], params["success_tolerance"]

    def run(key):
        init_key, noise_key = jax.random.split(key)
        particles = jax.random.uniform(init_key, (num_particles, dim), minval=-box, maxval=box)
        return optimizers.cbo_minimize(
            lambda x: _rastrigin(x, shift),
            particles,
            noise_key,
            alpha=params["alpha"],
            lam=params["lam"],
            sigma=params["sigma"],
            dt=params["dt"],
            max_steps=params["num_steps"],
            throw=False,
        )

    keys = jax.random.split(jax.random.key(seed), num_seeds)
    start = time.perf_counter()
    sols = jax.block_until_ready(jax.jit(jax.vmap(run))(keys))
    seconds = time.perf_counter() - start
    error = np.max(np.abs(np.asarray(sols.value) - shift), axis=1)
    return {
        "dim": dim,
        "num_particles": num_particles,
        "success_rate": float(np.mean(error < tolerance)),
        "median_error": float(np.median(error)),
        "evaluations_per_run": int(np.asarray(sols.stats["num_evaluations"]).max()),
        "seconds_all_seeds": seconds,
    }


@register(
    "cbo_rastrigin",
    "Consensus-based optimisation on the shifted Rastrigin function: success rate (|v - x*|_inf "
    "< tol) over seeds, vs number of particles and dimension.",
    requires=[("abs(shift) < box", lambda p: abs(p["shift"]) < p["box"])],
)
def cbo_rastrigin(
    ctx: RunContext,
    dims: Annotated[list[PositiveInt], MinLength(1)] = [2, 5, 10, 20],  # noqa: B006 - TOML-typed default
    particles: Annotated[list[PositiveInt], MinLength(1)] = [10, 25, 50, 100, 200],  # noqa: B006
    num_seeds: PositiveInt = 20,
    alpha: PositiveFloat = 3.0,
    lam: PositiveFloat = 1.0,
    sigma: PositiveFloat = 5.0,
    dt: PositiveFloat = 0.04,
    num_steps: PositiveInt = 600,
    shift: Annotated[float, Range(-1e3, 1e3)] = 1.0,
    box: PositiveFloat = 3.0,
    success_tolerance: PositiveFloat = 0.25,
    seed: Seed = 0,
) -> ExperimentOutput:
    """Rastrigin f(x) = 10 d + sum_j ((x_j - b)^2 - 10 cos(2 pi (x_j - b))), global minimum at
    x* = (b, ..., b), some 10^d local minima in the box. Particles start uniform on
    [-box, box]^d; anisotropic CBO with strong noise (the exploratory regime, sigma^2 > 2 lam)
    runs a fixed horizon of `num_steps` steps; a run succeeds when the consensus point is within
    `success_tolerance` of x* in every coordinate (the criterion of Pinnau et al. 2017). All
    seeds of one (dim, particles) cell run at once under `vmap`."""
    if any(n < 2 for n in particles):
        from ._registry import ConfigError

        raise ConfigError("parameter 'particles' of experiment 'cbo_rastrigin' needs entries >= 2")
    params = dict(
        alpha=alpha,
        lam=lam,
        sigma=sigma,
        dt=dt,
        num_steps=num_steps,
        shift=shift,
        box=box,
        success_tolerance=success_tolerance,
    )
    table = []
    for dim in dims:
        for num_particles in particles:
            ctx.status(f"d={dim}, N={num_particles}: {num_seeds} seeds")
            table.append(_success_rate(dim, num_particles, num_seeds, params, seed))

    series = {
        f"d = {dim}": (
            [r["num_particles"] for r in table if r["dim"] == dim],
            [r["success_rate"] for r in table if r["dim"] == dim],
        )
        for dim in dims
    }
    plot = line_plot(
        ctx.path("cbo_rastrigin_success.png"),
        series,
        title=f"CBO on Rastrigin: success over {num_seeds} seeds ({num_steps} steps)",
        xlabel="number of particles",
        ylabel="success rate",
        logx=True,
        ylim=(-0.02, 1.02),
    )

    def fewest(dim):
        good = [r["num_particles"] for r in table if r["dim"] == dim and r["success_rate"] >= 0.9]
        return min(good) if good else None

    cell = {(r["dim"], r["num_particles"]): r["success_rate"] for r in table}
    headline = {f"fewest_particles_for_90pct_success_d{dim}": fewest(dim) for dim in dims}
    if 10 in dims:
        headline["success_rate_d10_max_particles"] = cell[(10, max(particles))]
    summary = {
        "headline": headline,
        "num_seeds": num_seeds,
        "num_steps": num_steps,
        "best_success_rate_per_dim": {
            str(dim): max(r["success_rate"] for r in table if r["dim"] == dim) for dim in dims
        },
    }
    return ExperimentOutput(table=table, summary=summary, plots=[plot])
