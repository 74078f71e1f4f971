"""`langevin_vs_nuts`: adaptive underdamped Langevin solvers vs NUTS on a Bayesian logistic
regression, measured by effective sample size per gradient evaluation."""

import time
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np

import jaxsolve as js

from ._plot import line_plot
from ._registry import ConfigError, ExperimentOutput, RunContext, register
from ._schema import (
    MinLength,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
    Tolerance,
)

PAPER_CLAIM = "NUTS needs about 10x the gradient evaluations of adaptive QUICSORT for the same ESS"


def _data(key, num_data, dim):
    """Synthetic logistic-regression data: Gaussian features with an intercept column."""
    k_x, k_w, k_y = jax.random.split(key, 3)
    features = jax.random.normal(k_x, (num_data, dim - 1))
    x = jnp.concatenate([jnp.ones((num_data, 1)), features], axis=1)
    w_true = jax.random.normal(k_w, (dim,))
    y = jax.random.bernoulli(k_y, jax.nn.sigmoid(x @ w_true)).astype(x.dtype)
    return x, y, w_true


def _potential(x, y, prior_scale):
    """Negative log posterior of the weights (Gaussian prior with sd `prior_scale`)."""

    def f(w):
        logits = x @ w
        loglik = jnp.sum(y * logits - jax.nn.softplus(logits))
        return -loglik + 0.5 * jnp.sum(w * w) / prior_scale**2

    return f


def _ess(samples):
    """Per-parameter ESS of (chains, draws, dim) samples (blackjax's rank-free estimator)."""
    import blackjax.diagnostics

    return np.asarray(blackjax.diagnostics.effective_sample_size(samples, 0, 1))


# The adaptive underdamped Langevin solvers of jaxsolve.diffeq this experiment can run.
LangevinSolver = Literal["QUICSORT", "ShOULD", "ALIGN"]


@register(
    "langevin_vs_nuts",
    "Bayesian logistic regression: adaptive QUICSORT/ShOULD/ALIGN on the Brownian tree vs "
    "NUTS (blackjax), effective sample size per gradient evaluation.",
    requires=[("burn_in < horizon", lambda p: p["burn_in"] < p["horizon"])],
)
def langevin_vs_nuts(
    ctx: RunContext,
    num_data: PositiveInt = 200,
    dim: PositiveInt = 5,
    prior_scale: PositiveFloat = 5.0,
    num_chains: PositiveInt = 4,
    horizon: PositiveFloat = 200.0,
    burn_in: NonNegativeFloat = 20.0,
    num_saves: Annotated[int, Range(2)] = 1000,
    gamma: PositiveFloat = 2.0,
    rtol: Tolerance = 0.02,
    atol: Tolerance = 0.02,
    solvers: Annotated[list[LangevinSolver], MinLength(1)] = ["QUICSORT", "ShOULD"],  # noqa: B006
    nuts_warmup: NonNegativeInt = 500,
    nuts_samples: Annotated[int, Range(2)] = 1000,
    seed: Seed = 0,
) -> ExperimentOutput:
    """Each Langevin chain is one adaptive solve (PID controller, error order = strong order +
    1/2) of `dx = v dt, dv = -gamma v dt - u ∇f(x) dt + sqrt(2 gamma u) dW` with `u = 1` on
    one Brownian tree, saved at `num_saves` evenly spaced times after `burn_in`; its gradient
    evaluations are counted from the attempted steps (accepted and rejected). NUTS runs
    blackjax's window adaptation then sampling; its evaluations are the leapfrog steps of
    both phases. ESS uses the same estimator for both; the posterior means are compared."""
    try:
        import blackjax
    except ImportError as error:
        raise ConfigError(
            "langevin_vs_nuts needs blackjax for the NUTS baseline and the ESS estimator: "
            "pip install blackjax (or the `bench` extra: pip install 'jaxsolve[bench]')"
        ) from error
    dtype = jnp.result_type(float)
    key = jax.random.key(seed)
    k_data, k_lang, k_nuts = jax.random.split(key, 3)
    x, y, _ = _data(k_data, num_data, dim)
    x, y = x.astype(dtype), y.astype(dtype)
    f = _potential(x, y, prior_scale)
    grad = jax.grad(f)
    # Start every chain at the MAP-ish origin's neighbourhood: the prior mean.
    w0 = jnp.zeros(dim, dtype)
    save_ts = jnp.linspace(burn_in, horizon, num_saves, dtype=dtype)
    rows, per_param, results = [], {}, {}

    for name in solvers:
        solver = getattr(js.diffeq, name)()
        evals_per_step = 2
        ctx.status(f"{name}: {num_chains} adaptive chains to t={horizon}")

        def chain(key, solver=solver):
            bm = js.brownian.VirtualBrownianTree(
                0.0, horizon, horizon * 2.0**-18, (dim,), key, levy_area=solver.levy_area
            )
            term = js.diffeq.UnderdampedLangevinTerm(gamma, 1.0, lambda w, a: grad(w), bm)
            sol = js.diffeq.solve(
                term, solver, 0.0, horizon, (w0, jnp.zeros(dim, dtype)), dt0=0.05,
                saveat=js.diffeq.SaveAt(ts=save_ts), max_steps=100_000,
                controller=js.diffeq.PIDController(rtol=rtol, atol=atol, pcoeff=0.1, icoeff=0.3),
            )  # fmt: skip
            return sol.ys[0], sol.stats["num_steps"]

        start = time.perf_counter()
        samples, steps = jax.jit(jax.vmap(chain))(jax.random.split(k_lang, num_chains))
        samples = np.asarray(samples)
        elapsed = time.perf_counter() - start
        # FSAL methods evaluate once more at the start; steps count accepted + rejected.
        evals = float(np.sum(np.asarray(steps))) * evals_per_step + (
            num_chains if solver.fsal else 0
        )
        results[name] = (samples, evals, elapsed)

    ctx.status(f"NUTS: {num_chains} chains, {nuts_warmup} warmup + {nuts_samples} draws")
    logdensity = lambda w: -f(w)  # noqa: E731

    def nuts_chain(key):
        k_warm, k_sample = jax.random.split(key)
        warmup = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, params), warm_info = warmup.run(k_warm, w0, num_steps=nuts_warmup)
        kernel = blackjax.nuts(logdensity, **params).step

        def step(state, k):
            state, info = kernel(k, state)
            return state, (state.position, info.num_integration_steps)

        _, (draws, n_int) = jax.lax.scan(step, state, jax.random.split(k_sample, nuts_samples))
        warm_evals = jnp.sum(warm_info.info.num_integration_steps)
        return draws, jnp.sum(n_int), warm_evals

    start = time.perf_counter()
    draws, sample_evals, warm_evals = jax.jit(jax.vmap(nuts_chain))(
        jax.random.split(k_nuts, num_chains)
    )
    draws = np.asarray(draws)
    nuts_elapsed = time.perf_counter() - start
    nuts_evals = float(np.sum(np.asarray(sample_evals)) + np.sum(np.asarray(warm_evals)))
    results["NUTS"] = (draws, nuts_evals, nuts_elapsed)
    reference_mean = draws.reshape(-1, dim).mean(0)
    reference_sd = draws.reshape(-1, dim).std(0)

    for name, (samples, evals, elapsed) in results.items():
        ess = _ess(samples)
        per_param[name] = ess / evals * 1000
        mean = samples.reshape(-1, dim).mean(0)
        sd = samples.reshape(-1, dim).std(0)
        rows.append(
            {
                "method": name,
                "grad_evals": int(evals),
                "min_ess": float(ess.min()),
                "mean_ess": float(ess.mean()),
                "min_ess_per_1k_evals": float(ess.min() / evals * 1000),
                "max_abs_mean_diff_vs_nuts_in_sd": float(
                    np.max(np.abs(mean - reference_mean) / reference_sd)
                ),
                "max_rel_sd_diff_vs_nuts": float(np.max(np.abs(sd / reference_sd - 1))),
                "wall_s": elapsed,
            }
        )
    nuts_rate = rows[-1]["min_ess_per_1k_evals"]
    summary = {"paper_claim": PAPER_CLAIM}
    for row in rows[:-1]:
        summary[f"nuts_evals_per_ess_over_{row['method']}"] = (
            row["min_ess_per_1k_evals"] / nuts_rate if nuts_rate > 0 else float("nan")
        )
    plot = line_plot(
        ctx.path("langevin_vs_nuts_ess.png"),
        {name: (np.arange(dim), values) for name, values in per_param.items()},
        title="ESS per 1000 gradient evaluations, per weight (higher is better)",
        xlabel="weight index",
        ylabel="ESS / 1000 gradient evaluations",
        logy=True,
    )
    return ExperimentOutput(table=rows, summary=summary, plots=[plot])
