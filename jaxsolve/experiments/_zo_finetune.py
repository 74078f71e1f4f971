"""`zo_finetune`: fine-tune the last layer of a small MLP on the 8x8 digits by zeroth-order
gradient estimates (two-point, sparse coordinate-wise) and by forward gradients, against
backpropagation: test accuracy vs function evaluations, and compiled memory per method."""

from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import optimizers
from ._data import digits
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, register
from ._schema import MinLength, PositiveFloat, PositiveInt, Seed, UnitInterval


def _init_mlp(key, widths):
    layers = []
    for k, (fan_in, fan_out) in zip(
        jax.random.split(key, len(widths) - 1), zip(widths, widths[1:])
    ):
        scale = 1.0 / np.sqrt(fan_in)
        layers.append(
            {
                "w": scale * jax.random.normal(k, (fan_in, fan_out), jnp.float32),
                "b": jnp.zeros((fan_out,), jnp.float32),
            }
        )
    return layers


def _features(body, X):
    for layer in body:
        X = jnp.tanh(X @ layer["w"] + layer["b"])
    return X


def _logits(head, body, X):
    return _features(body, X) @ head["w"] + head["b"]


def _loss(head, body, X, y):
    return optax.softmax_cross_entropy_with_integer_labels(_logits(head, body, X), y).mean()


def _accuracy(head, body, X, y):
    return jnp.mean(jnp.argmax(_logits(head, body, X), axis=-1) == y)


def _pretrain(layers, data, steps, learning_rate):
    """Backprop (Adam) on the whole network, full batch."""
    X, y = data
    tx = optax.adam(learning_rate)

    def loss(layers):
        return _loss(layers[-1], layers[:-1], X, y)

    def step(carry, _):
        layers, state = carry
        grads = jax.grad(loss)(layers)
        updates, state = tx.update(grads, state, layers)
        return (optax.apply_updates(layers, updates), state), None

    (layers, _), _ = jax.jit(lambda l: jax.lax.scan(step, (l, tx.init(l)), None, length=steps))(
        layers
    )
    return layers


def _gradient_fn(method, estimator):
    """(head, key, body, X, y) -> (loss, gradient of the loss in head)."""
    if method == "backprop":
        return lambda head, key, body, X, y: jax.value_and_grad(_loss)(head, body, X, y)
    return lambda head, key, body, X, y: optimizers.estimate_gradient(
        _loss, estimator, head, key, body, X, y
    )


def _finetune(method, estimator, head, body, train, test, num_steps, lr, seed):
    """Adam on the head driven by `method`'s gradients; test accuracy after every step."""
    gradient = _gradient_fn(method, estimator)
    tx = optax.adam(lr)

    def one_step(carry, key):
        head, state = carry
        _, grads = gradient(head, key, body, *train)
        updates, state = tx.update(grads, state, head)
        head = optax.apply_updates(head, updates)
        return (head, state), _accuracy(head, body, *test)

    keys = jax.random.split(jax.random.key(seed), num_steps)
    run = jax.jit(lambda head: jax.lax.scan(one_step, (head, tx.init(head)), keys))
    (head, _), accuracies = run(head)
    return head, np.asarray(accuracies)


def _record_steps(num_steps, num_records):
    """About `num_records` step counts from 1 to `num_steps`, evenly spaced in log scale."""
    steps = np.unique(np.round(np.geomspace(1, num_steps, num_records)).astype(int))
    return steps


def _step_memory(method, estimator, head, body, train, lr):
    """Compiled temporary memory (bytes) of one jitted fine-tuning step."""
    gradient = _gradient_fn(method, estimator)
    tx = optax.adam(lr)

    # The body and the data are arguments, not closed-over constants: XLA would otherwise fold
    # the frozen body's features into a constant and the measurement would miss them.
    def step(head, state, key, body, X, y):
        _, grads = gradient(head, key, body, X, y)
        updates, state = tx.update(grads, state, head)
        return optax.apply_updates(head, updates), state

    args = (head, tx.init(head), jax.random.key(0), body, *train)
    compiled = jax.jit(step).lower(*args).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


METHODS = ("backprop", "zo_two_point", "zo_sparse_cge", "forward_gradient")
Method = Literal["backprop", "zo_two_point", "zo_sparse_cge", "forward_gradient"]


def _reference_memory(layers, train):
    """Compiled temporary memory (bytes) of the loss alone (inference) and of its gradient by
    backprop through every layer: the two ends between which fine-tuning memory lies."""
    loss = lambda layers, X, y: _loss(layers[-1], layers[:-1], X, y)
    temp = lambda fn: jax.jit(fn).lower(layers, *train).compile().memory_analysis()
    temp_bytes = lambda fn: int(temp(fn).temp_size_in_bytes)
    return temp_bytes(loss), temp_bytes(jax.grad(loss))


@register(
    "zo_finetune",
    "Fine-tune the last layer of a digits MLP by zeroth-order estimates (two-point, sparse CGE) "
    "and forward gradients vs backprop: test accuracy vs function evaluations, compiled memory.",
)
def zo_finetune(
    ctx: RunContext,
    hidden: Annotated[list[PositiveInt], MinLength(1)] = [64, 32],  # noqa: B006 - TOML-typed default
    pretrain_steps: PositiveInt = 40,
    pretrain_learning_rate: PositiveFloat = 1e-2,
    evaluation_budget: PositiveInt = 20000,
    num_records: PositiveInt = 20,
    learning_rate: PositiveFloat = 1e-2,
    num_directions: PositiveInt = 4,
    smoothing: PositiveFloat = 1e-3,
    cge_density: UnitInterval = 0.2,
    target_accuracy: UnitInterval = 0.95,
    methods: Annotated[list[Method], MinLength(1)] = [  # noqa: B006 - TOML-typed default
        "backprop",
        "zo_two_point",
        "zo_sparse_cge",
        "forward_gradient",
    ],
    seed: Seed = 0,
) -> ExperimentOutput:
    """An MLP 64 -> hidden -> 10 (tanh) is pretrained briefly by backprop (Adam, full batch, on
    the training half of the 1797 digits); its last layer is then reset to zero and fine-tuned
    with Adam, the body frozen, by each method, all with the same budget of function
    evaluations (forward passes of the full training batch):

    - `backprop`: exact gradients (counted as 3 forward-pass equivalents per step: the forward
      and the backward pass);
    - `zo_two_point`: `TwoPoint(num_directions)` (2 q + 1 evaluations per step);
    - `zo_sparse_cge`: `Coordinate` on a random mask of `cge_density` of the weights plus all
      biases (2 m + 1 evaluations; the unmasked weights stay zero: a sparse head, as in
      DeepZero's sparse training);
    - `forward_gradient`: `ForwardGradient(num_directions)` (q JVPs, each counted as 2).

    Test accuracy on the other half is recorded after every step (the table shows about
    `num_records` points, log-spaced in the number of evaluations); the
    compiled temporary memory of one jitted step (`memory_analysis`) is reported per method,
    beside the loss alone (inference) and backprop through all layers. The headline gives the
    final accuracy, the evaluations to reach `target_accuracy` and the memory per method.
    `methods` picks which of the four run."""
    train, test = digits("zo_finetune", seed, 0.5)
    widths = [64, *hidden, 10]
    key_body, key_mask = jax.random.split(jax.random.key(seed))
    layers = _init_mlp(key_body, widths)
    ctx.status(f"pretraining the MLP {widths} by backprop for {pretrain_steps} steps")
    layers = _pretrain(layers, train, pretrain_steps, pretrain_learning_rate)
    body = layers[:-1]
    pretrained_accuracy = float(_accuracy(layers[-1], body, *test))
    head = jax.tree.map(jnp.zeros_like, layers[-1])

    mask_w = np.random.default_rng(seed + 1).uniform(size=head["w"].shape) < cge_density
    estimators = {
        "backprop": None,
        "zo_two_point": optimizers.TwoPoint(num_directions=num_directions, smoothing=smoothing),
        "zo_sparse_cge": optimizers.Coordinate(
            smoothing=smoothing, mask={"w": jnp.asarray(mask_w), "b": jnp.asarray(True)}
        ),
        "forward_gradient": optimizers.ForwardGradient(num_directions=num_directions),
    }
    cost = {
        "backprop": 3,
        "zo_two_point": estimators["zo_two_point"].num_evaluations(head),
        "zo_sparse_cge": estimators["zo_sparse_cge"].num_evaluations(head),
        "forward_gradient": 2 * num_directions,
    }
    table, series, final, memory, to_target = [], {}, {}, {}, {}
    estimators = {m: e for m, e in estimators.items() if m in methods}
    for method, estimator in estimators.items():
        num_steps = max(1, evaluation_budget // cost[method])
        ctx.status(f"{method}: {num_steps} steps, {cost[method]} evaluations each")
        _, accuracies = _finetune(
            method, estimator, head, body, train, test, num_steps, learning_rate, seed
        )
        memory[method] = _step_memory(method, estimator, head, body, train, learning_rate)
        for steps in _record_steps(num_steps, num_records):
            table.append(
                {
                    "method": method,
                    "evaluations": int(steps * cost[method]),
                    "steps": int(steps),
                    "test_accuracy": float(accuracies[steps - 1]),
                    "evaluations_per_step": cost[method],
                    "step_temp_memory_kib": memory[method] / 1024,
                }
            )
        series[method] = (cost[method] * np.arange(1, num_steps + 1), accuracies)
        reached = np.flatnonzero(accuracies >= target_accuracy)
        to_target[method] = int((reached[0] + 1) * cost[method]) if reached.size else None
        final[method] = float(accuracies[-1])

    plot = line_plot(
        ctx.path("zo_finetune_accuracy.png"),
        series,
        title="Fine-tuning the last layer: test accuracy vs function evaluations",
        xlabel="function evaluations (forward-pass equivalents)",
        ylabel="test accuracy",
        logx=True,
    )
    inference, full_backprop = _reference_memory(layers, train)
    summary = {
        "headline": {f"final_test_accuracy_{method}": final[method] for method in estimators}
        | {
            f"evaluations_to_{target_accuracy:g}_{method}": to_target[method]
            for method in estimators
        }
        | {f"step_temp_memory_kib_{method}": memory[method] / 1024 for method in estimators},
        "pretrained_test_accuracy": pretrained_accuracy,
        "loss_only_temp_memory_kib": inference / 1024,
        "backprop_all_layers_temp_memory_kib": full_backprop / 1024,
        "head_parameters": int(head["w"].size + head["b"].size),
        "sparse_cge_coordinates": int(mask_w.sum() + head["b"].size),
        "evaluations_per_step": cost,
        "evaluation_budget": evaluation_budget,
    }
    return ExperimentOutput(table=table, summary=summary, plots=[plot])
