"""`optimizers_digits`: Adam, SOAP, Shampoo, Muon, Turbo-Muon, Polyak momentum and
schedule-free AdamW training a small MLP and a small CNN on scikit-learn's 8x8 digits: loss vs
step and vs wall-clock time, and the steps each needs to reach a target loss relative to Adam."""

import time
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import optimizers as js_optimizers
from ._data import digits
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, register
from ._schema import MinLength, PositiveFloat, PositiveInt, Seed

Model = Literal["mlp", "cnn"]
Optimizer = Literal[
    "adam", "soap", "shampoo", "muon", "turbo_muon", "polyak_momentum", "schedule_free"
]
_ALL_OPTIMIZERS = [
    "adam",
    "soap",
    "shampoo",
    "muon",
    "turbo_muon",
    "polyak_momentum",
    "schedule_free",
]


def _dense(key, fan_in, fan_out):
    return {
        "w": jax.random.normal(key, (fan_in, fan_out), jnp.float32) / np.sqrt(fan_in),
        "b": jnp.zeros((fan_out,), jnp.float32),
    }


def _init(model, key, width):
    keys = jax.random.split(key, 3)
    if model == "mlp":
        return [
            _dense(keys[0], 64, width),
            _dense(keys[1], width, width),
            _dense(keys[2], width, 10),
        ]
    # Convolution kernels are (3 * 3 * in_channels, out_channels) matrices, so that the matrix
    # optimisers precondition them.
    return [
        _dense(keys[0], 9 * 1, width // 8),
        _dense(keys[1], 9 * (width // 8), width // 4),
        _dense(keys[2], 2 * 2 * (width // 4), 10),
    ]


def _conv(x, layer, stride):
    """A 3x3 "same" convolution as one matrix product: the nine shifted (and strided) copies of
    the padded input side by side, times the (9 * in_channels, out_channels) kernel matrix.
    (XLA's CPU convolutions are several times slower at these sizes.)"""
    height, width = x.shape[1], x.shape[2]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate(
        [
            padded[:, i : i + height : stride, j : j + width : stride, :]
            for i in range(3)
            for j in range(3)
        ],
        axis=-1,
    )
    return jax.nn.relu(patches @ layer["w"] + layer["b"])


def _logits(model, params, X):
    if model == "mlp":
        h = jnp.tanh(X @ params[0]["w"] + params[0]["b"])
        h = jnp.tanh(h @ params[1]["w"] + params[1]["b"])
        return h @ params[2]["w"] + params[2]["b"]
    x = X.reshape(-1, 8, 8, 1)
    x = _conv(x, params[0], 1)  # 8x8
    x = _conv(x, params[1], 2)  # 4x4
    x = x.reshape(x.shape[0], 2, 2, 2, 2, x.shape[-1]).mean(axis=(2, 4))  # 2x2 average pooling
    return x.reshape(x.shape[0], -1) @ params[2]["w"] + params[2]["b"]


def _loss(model, params, X, y):
    logits = _logits(model, params, X)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def _transformation(name, learning_rate, muon_learning_rate, polyak_max_learning_rate):
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "soap":
        return js_optimizers.soap(learning_rate)
    if name == "shampoo":
        return js_optimizers.shampoo(learning_rate)
    if name == "muon":
        return optax.contrib.muon(muon_learning_rate)
    if name == "turbo_muon":
        return js_optimizers.turbo_muon(muon_learning_rate)
    if name == "polyak_momentum":
        return js_optimizers.polyak_momentum(
            f_star=0.0, momentum=0.9, max_learning_rate=polyak_max_learning_rate
        )
    return optax.contrib.schedule_free_adamw(learning_rate)


def _train(model, name, tx, params, data, num_steps):
    """A jitted `lax.scan` of full-batch steps; returns the compiled run, its compile time,
    and the training loss after every step (at the evaluation point for schedule-free)."""
    X, y, X_test, y_test = data
    loss = lambda p: _loss(model, p, X, y)  # noqa: E731

    def eval_params(params, state):
        if name == "schedule_free":
            return optax.contrib.schedule_free_eval_params(state, params)
        return params

    def run(params):
        state = tx.init(params)

        def body(carry, _):
            params, state = carry
            value, grads = jax.value_and_grad(loss)(params)
            if name == "polyak_momentum":
                updates, state = tx.update(grads, state, params, value=value)
            else:
                updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), loss(eval_params(params, state))

        (params, state), losses = jax.lax.scan(body, (params, state), None, length=num_steps)
        final = eval_params(params, state)
        accuracy = jnp.mean(jnp.argmax(_logits(model, final, X_test), -1) == y_test)
        return losses, accuracy

    start = time.perf_counter()
    compiled = jax.jit(run).lower(params).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    losses, accuracy = jax.block_until_ready(compiled(params))
    run_s = time.perf_counter() - start
    return np.asarray(losses, np.float64), float(accuracy), compile_s, run_s


def _steps_to(losses, target):
    reached = np.nonzero(losses <= target)[0]
    return int(reached[0]) + 1 if reached.size else None


@register(
    "optimizers_digits",
    "Adam, SOAP, Shampoo, Muon, Turbo-Muon, Polyak momentum and schedule-free AdamW on a small "
    "MLP and CNN (sklearn 8x8 digits): loss vs step and wall-clock, steps to a target loss "
    "relative to Adam.",
)
def optimizers_digits(
    ctx: RunContext,
    models: Annotated[list[Model], MinLength(1)] = ["mlp", "cnn"],  # noqa: B006 - TOML-typed default
    optimizers: Annotated[list[Optimizer], MinLength(1)] = _ALL_OPTIMIZERS,  # noqa: B006
    num_steps: PositiveInt = 300,
    width: PositiveInt = 64,
    learning_rate: PositiveFloat = 1e-2,
    muon_learning_rate: PositiveFloat = 0.02,
    polyak_max_learning_rate: PositiveFloat = 1.0,
    target_loss: PositiveFloat = 0.05,
    seed: Seed = 0,
) -> ExperimentOutput:
    """Full-batch training (1437 training digits, 360 held out) of each model with each
    optimiser, from the same initialisation, for `num_steps` steps:

    - `adam`, `soap`, `shampoo` (Adam grafting) and `schedule_free` (optax's
      `schedule_free_adamw`, loss measured at its averaged point) at `learning_rate`;
    - `muon` (`optax.contrib.muon`, 5 Newton-Schulz steps) and `turbo_muon` (4 AOL-preconditioned
      steps) at `muon_learning_rate`, Adam on biases;
    - `polyak_momentum` with f* = 0 (the models can interpolate the training set) and step
      sizes capped at `polyak_max_learning_rate`.

    The MLP is 64 -> width -> width -> 10 (tanh); the CNN has two 3x3 convolutions (width/8 and
    width/4 channels, the second with stride 2, ReLU), 2x2 average pooling and a dense layer,
    its kernels stored as matrices so that the matrix optimisers precondition them. Wall-clock
    time per step is the compiled run's time divided by `num_steps` (compile time reported
    apart). Headline: steps to reach `target_loss` (training cross-entropy) relative to
    Adam's."""
    optimizer_names = list(dict.fromkeys(optimizers))
    (X_train, y_train), (X_test, y_test) = digits("optimizers_digits", seed, 0.8)
    data = (X_train, y_train, X_test, y_test)
    table, curves = [], {}
    for model in models:
        params = _init(model, jax.random.key(seed), width)
        for name in optimizer_names:
            ctx.status(f"{model}: {name}")
            tx = _transformation(name, learning_rate, muon_learning_rate, polyak_max_learning_rate)
            losses, accuracy, compile_s, run_s = _train(model, name, tx, params, data, num_steps)
            curves[(model, name)] = (losses, run_s / num_steps)
            table.append(
                {
                    "model": model,
                    "optimizer": name,
                    "final_train_loss": float(losses[-1]),
                    "test_accuracy": accuracy,
                    "steps_to_target": _steps_to(losses, target_loss),
                    "ms_per_step": 1e3 * run_s / num_steps,
                    "compile_s": compile_s,
                }
            )
    for row in table:
        adam_steps = next(
            (
                r["steps_to_target"]
                for r in table
                if r["model"] == row["model"] and r["optimizer"] == "adam"
            ),
            None,
        )
        steps = row["steps_to_target"]
        row["steps_relative_to_adam"] = (
            steps / adam_steps if steps is not None and adam_steps else None
        )
    plots = []
    for model in models:
        by_step = {
            name: (np.arange(1, num_steps + 1), curves[(model, name)][0])
            for name in optimizer_names
        }
        by_time = {
            name: (np.arange(1, num_steps + 1) * curves[(model, name)][1], curves[(model, name)][0])
            for name in optimizer_names
        }
        plots.append(
            line_plot(
                ctx.path(f"loss_vs_step_{model}.png"),
                by_step,
                title=f"{model}: training loss (8x8 digits, full batch)",
                xlabel="step",
                ylabel="cross-entropy",
                logy=True,
            )
        )
        plots.append(
            line_plot(
                ctx.path(f"loss_vs_time_{model}.png"),
                by_time,
                title=f"{model}: training loss vs wall-clock (compile excluded)",
                xlabel="seconds",
                ylabel="cross-entropy",
                logy=True,
            )
        )
    headline = {
        f"{row['model']}/{row['optimizer']}": row["steps_relative_to_adam"] for row in table
    }
    summary = {
        "headline": {"target_loss": target_loss, "steps_to_target_relative_to_adam": headline},
        "num_steps": num_steps,
        "best_final_loss": {
            model: min(
                (r for r in table if r["model"] == model), key=lambda r: r["final_train_loss"]
            )["optimizer"]
            for model in models
        },
    }
    return ExperimentOutput(table=table, summary=summary, plots=plots)
