"""`node_regularised`: train a neural ODE with and without the solver-heuristic regularisers of
Pal et al. (2021, 2022) and count the function evaluations an adaptive solver needs at test time.

The task: trajectories of the cubic spiral `y' = (y^3) A` (the torchdiffeq demo's dynamics,
`A = [[-0.1, 2], [-2, -0.1]]`) from random starting points, observed at a few times; a small MLP
vector field is fitted by mean squared error through an adaptive Tsit5 solve. Each run adds one
regulariser to the loss: none, `R_E` (error estimates), `R_S` (stiffness estimates), or their
local one-random-step variants. Reported: the test loss and the number of vector-field
evaluations per trajectory of Tsit5 and Dopri5, at the training tolerance and a tighter one.
"""

import itertools
import time
from typing import Annotated, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import RESULTS, diffeq
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, register
from ._schema import MinLength, PositiveFloat, PositiveInt, Seed, Tolerance

_SPIRAL = np.array([[-0.1, 2.0], [-2.0, -0.1]])
Regulariser = Literal["none", "error", "stiffness", "error_local", "stiffness_local"]
# Which `sol.stats` entry each run adds to the loss.
_STAT = {
    "error": "R_E",
    "stiffness": "R_S",
    "error_local": "R_E_local",
    "stiffness_local": "R_S_local",
}
# Vector-field evaluations per attempted step (first-same-as-last: one stage is reused) and at the
# start (the first stage, and two for the initial step-size heuristic).
_EVALS_PER_STEP = {"tsit5": 6, "dopri5": 6}
_EVALS_AT_START = 3


def _data(num, num_times, horizon, seed):
    """Trajectories of the cubic spiral from `num` random starts (a fine Dopri5 reference)."""
    rng = np.random.default_rng(seed)
    y0s = rng.uniform(-1.5, 1.5, (num, 2))
    ts = jnp.linspace(0.0, horizon, num_times)
    term = diffeq.ODETerm(lambda t, y, args: (y**3) @ jnp.asarray(_SPIRAL))

    def solve(y0):
        sol = diffeq.solve(
            term, diffeq.Dopri5(), 0.0, horizon, y0, saveat=diffeq.SaveAt(ts=ts),
            controller=diffeq.PIDController(rtol=1e-10, atol=1e-10), max_steps=100_000,
        )  # fmt: skip
        return sol.ys

    return ts, jnp.asarray(y0s), jax.jit(jax.vmap(solve))(jnp.asarray(y0s))


def _solve(model, solver, y0, ts, rtol, atol, max_steps, regularise=None):
    term = diffeq.ODETerm(lambda t, y, model: model(y))
    return diffeq.solve(
        term, solver, ts[0], ts[-1], y0, args=model, saveat=diffeq.SaveAt(ts=ts),
        controller=diffeq.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
        regularise=regularise, throw=False,
    )  # fmt: skip


def _train(regulariser, weight, data, params, seed, ctx):
    ts, y0s, targets = data["train"]
    rtol, atol, max_steps = params["train_rtol"], params["train_atol"], params["max_steps"]
    model = eqx.nn.MLP(2, 2, params["width"], 2, activation=jnp.tanh, key=jax.random.key(seed))
    optimiser = optax.adam(params["learning_rate"])
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))
    stat = _STAT.get(regulariser)

    @eqx.filter_jit
    def step(model, opt_state, key):
        def loss_fn(model):
            keys = jax.random.split(key, y0s.shape[0])

            def one(y0, target, lane_key):
                regularise = None if stat is None else diffeq.Regularise(key=lane_key)
                sol = _solve(model, diffeq.Tsit5(), y0, ts, rtol, atol, max_steps, regularise)
                penalty = 0.0 if stat is None else sol.stats[stat]
                return jnp.mean((sol.ys - target) ** 2), penalty, sol.stats["num_steps"]

            fit, penalty, steps = jax.vmap(one)(y0s, targets, keys)
            return jnp.mean(fit) + weight * jnp.mean(penalty), (jnp.mean(fit), jnp.mean(steps))

        (_, (fit, steps)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model)
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, fit, steps

    key = jax.random.key(seed + 1)
    history = []
    start = time.perf_counter()
    for iteration in range(params["num_iterations"]):
        key, sub = jax.random.split(key)
        model, opt_state, fit, steps = step(model, opt_state, sub)
        history.append((iteration, float(fit), float(steps)))
        if iteration % max(1, params["num_iterations"] // 5) == 0:
            ctx.status(f"{regulariser}: iteration {iteration}, fit {float(fit):.2e}")
    return model, history, time.perf_counter() - start


@eqx.filter_jit
def _test_run(model, solver, ts, y0s, targets, rtol, atol, max_steps):
    """Test loss, attempted steps and failures per trajectory (compiled once per solver)."""

    def one(y0, target):
        sol = _solve(model, solver, y0, ts, rtol, atol, max_steps)
        failed = sol.result != RESULTS.successful
        return jnp.mean((sol.ys - target) ** 2), sol.stats["num_steps"], failed

    return jax.vmap(one)(y0s, targets)


def _evaluate(model, data, params):
    """Test loss and NFE per trajectory at the training tolerance (as in the papers) and at the
    tighter test tolerance (suffix `_tight`)."""
    ts, y0s, targets = data["test"]
    row = {}
    tolerances = {
        "": (params["train_rtol"], params["train_atol"]),
        "_tight": (params["test_rtol"], params["test_atol"]),
    }
    for (name, solver), (suffix, (rtol, atol)) in itertools.product(
        (("tsit5", diffeq.Tsit5()), ("dopri5", diffeq.Dopri5())), tolerances.items()
    ):
        loss, steps, failed = _test_run(
            model, solver, ts, y0s, targets, jnp.asarray(rtol), jnp.asarray(atol),
            params["max_steps"],
        )  # fmt: skip
        nfe = _EVALS_PER_STEP[name] * np.asarray(steps) + _EVALS_AT_START
        row[f"test_loss_{name}{suffix}"] = float(jnp.mean(loss))
        row[f"nfe_{name}{suffix}"] = float(np.mean(nfe))
        row[f"failed_{name}{suffix}"] = int(np.sum(np.asarray(failed)))
    return row


@register(
    "node_regularised",
    "Neural ODE on cubic-spiral trajectories trained with and without the solver-heuristic "
    "regularisers R_E / R_S (Pal et al. 2021) and their local variants (2022): test loss and "
    "function evaluations of adaptive Tsit5/Dopri5 at test time.",
)
def node_regularised(
    ctx: RunContext,
    regularisers: Annotated[list[Regulariser], MinLength(1)] = [  # noqa: B006 - TOML default
        "none",
        "error",
        "stiffness",
        "error_local",
        "stiffness_local",
    ],  # fmt: skip
    error_weight: PositiveFloat = 0.01,
    stiffness_weight: PositiveFloat = 0.001,
    width: PositiveInt = 32,
    num_train: PositiveInt = 64,
    num_test: PositiveInt = 128,
    num_times: PositiveInt = 10,
    horizon: PositiveFloat = 2.0,
    num_iterations: PositiveInt = 600,
    learning_rate: PositiveFloat = 5e-3,
    train_rtol: Tolerance = 1e-4,
    train_atol: Tolerance = 1e-6,
    test_rtol: Tolerance = 1e-6,
    test_atol: Tolerance = 1e-8,
    max_steps: PositiveInt = 1024,
    seed: Seed = 0,
) -> ExperimentOutput:
    """Every run starts from the same initial network and sees the same data; only the added
    regulariser (with `error_weight` for R_E and its local variant, `stiffness_weight` for R_S
    and its local variant) differs. NFE counts vector-field evaluations per test trajectory
    (6 per attempted Tsit5/Dopri5 step, 3 at the start), at the training tolerance (the
    papers' measure; the headline) and at the tighter test tolerance (`*_tight`)."""
    data = {
        "train": _data(num_train, num_times, horizon, seed),
        "test": _data(num_test, num_times, horizon, seed + 1000),
    }
    params = dict(
        width=width, num_iterations=num_iterations, learning_rate=learning_rate,
        train_rtol=train_rtol, train_atol=train_atol, test_rtol=test_rtol, test_atol=test_atol,
        max_steps=max_steps,
    )  # fmt: skip
    table, curves = [], {}
    for regulariser in regularisers:
        weight = error_weight if regulariser.startswith("error") else stiffness_weight
        weight = 0.0 if regulariser == "none" else weight
        model, history, seconds = _train(regulariser, weight, data, params, seed, ctx)
        row = {"regulariser": regulariser, "weight": weight, "train_seconds": seconds}
        row["final_train_fit"] = history[-1][1]
        row.update(_evaluate(model, data, params))
        table.append(row)
        curves[regulariser] = ([h[0] for h in history], [6 * h[2] + 3 for h in history])

    plot = line_plot(
        ctx.path("node_regularised_nfe.png"),
        curves,
        title="Neural ODE: Tsit5 evaluations per trajectory during training",
        xlabel="iteration",
        ylabel="NFE per trajectory (train tolerance)",
    )
    names = {
        "none": "unregularised",
        "error": "error_reg",
        "stiffness": "stiffness_reg",
        "error_local": "error_local_reg",
        "stiffness_local": "stiffness_local_reg",
    }
    headline = {}
    for row in table:
        name = names[row["regulariser"]]
        headline[f"nfe_{name}"] = row["nfe_tsit5"]
        headline[f"nfe_dopri5_{name}"] = row["nfe_dopri5"]
        headline[f"test_loss_{name}"] = row["test_loss_tsit5"]
        headline[f"nfe_tight_{name}"] = row["nfe_tsit5_tight"]
    summary = {
        "headline": headline,
        "task": f"cubic spiral, {num_train} train / {num_test} test trajectories, t in [0, {horizon}]",
        "num_iterations": num_iterations,
    }
    return ExperimentOutput(table=table, summary=summary, plots=[plot])
