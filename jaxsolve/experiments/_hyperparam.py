"""`hyperparam_implicit`: per-feature ridge regularisation learned on validation loss, with
hypergradients by implicit differentiation (custom_root) against unrolled ones."""

import dataclasses
import time
from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import implicit, linear
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, register
from ._schema import MinLength, PositiveFloat, PositiveInt, Seed


def _ridge_data(seed, num_train, num_val, num_features, dtype):
    rng = np.random.default_rng(seed)
    # A sparse-ish true model: per-feature regularisation can shrink the irrelevant features.
    w_true = rng.normal(size=num_features) * (rng.uniform(size=num_features) < 0.2)
    X_train = rng.normal(size=(num_train, num_features))
    X_val = rng.normal(size=(num_val, num_features))
    X_test = rng.normal(size=(2000, num_features))
    y_train = X_train @ w_true + 0.5 * rng.normal(size=num_train)
    y_val = X_val @ w_true + 0.5 * rng.normal(size=num_val)
    y_test = X_test @ w_true + 0.5 * rng.normal(size=2000)
    arrays = (X_train, y_train, X_val, y_val, X_test, y_test)
    return tuple(np.asarray(a, np.float64) for a in arrays), dtype


def _optimality(w, log_lam, X, y):
    """Gradient of the training objective (1/2n)|Xw - y|^2 + (1/2) sum_j exp(log_lam_j) w_j^2."""
    return X.T @ (X @ w - y) / X.shape[0] + jnp.exp(log_lam) * w


def _inner_solver(num_steps, data_lipschitz):
    """Nesterov-accelerated gradient descent with a fixed step count: differentiable by
    unrolling (scan) or implicitly (custom_root around the same loop). `data_lipschitz` is
    |X|_2^2 / n, computed once outside (an SVD per call would dominate the run time)."""

    def solve(w_init, log_lam, X, y):
        lipschitz = data_lipschitz + jnp.max(jnp.exp(log_lam))
        mu = jnp.min(jnp.exp(log_lam))
        step = 1.0 / lipschitz
        momentum = (1 - jnp.sqrt(mu * step)) / (1 + jnp.sqrt(mu * step))

        def body(carry, _):
            w, w_prev = carry
            v = w + momentum * (w - w_prev)
            w_next = v - step * _optimality(v, log_lam, X, y)
            return (w_next, w), None

        (w, _), _ = lax.scan(body, (w_init, w_init), None, length=num_steps)
        return w

    return solve


def _val_loss(w, X_val, y_val):
    return 0.5 * jnp.mean((X_val @ w - y_val) ** 2)


@register(
    "hyperparam_implicit",
    "Per-feature L2 regularisation of ridge regression learned on validation loss: implicit vs "
    "unrolled hypergradients (agreement with the exact one, compiled memory, time).",
)
def hyperparam_implicit(
    ctx: RunContext,
    num_features: PositiveInt = 200,
    num_train: PositiveInt = 400,
    num_val: PositiveInt = 400,
    inner_steps: Annotated[list[PositiveInt], MinLength(1)] = [30, 100, 300, 1000, 3000],  # noqa: B006 - TOML-typed default
    outer_steps: PositiveInt = 150,
    outer_learning_rate: PositiveFloat = 0.05,
    optimisation_inner_steps: PositiveInt = 200,
    seed: Seed = 0,
) -> ExperimentOutput:
    """Hyperparameters `log_lam` (one per feature). For each inner step count K: the
    hypergradient of the validation loss by unrolling K accelerated-gradient steps, and by
    implicit differentiation (custom_root around the same loop, CG backward solve), each
    against the exact float64 hypergradient; the compiled temporary memory
    (`memory_analysis`) and the run time. Then `outer_steps` of Adam on `log_lam` with
    implicit hypergradients."""
    ridge = _Ridge.make(seed, num_train, num_val, num_features, jnp.float32)
    log_lam0 = jnp.full((num_features,), np.log(0.1), ridge.dtype)

    table = _compare_hypergradients(ctx, ridge, log_lam0, inner_steps)
    ctx.status(f"{outer_steps} outer Adam steps on {num_features} hyperparameters")
    val_objective, test_loss = _ridge_objectives(ridge, optimisation_inner_steps)
    log_lam, losses = _optimise_hyperparameters(
        val_objective, log_lam0, outer_steps, outer_learning_rate
    )
    final_loss = float(val_objective(log_lam))
    scalar_grid, scalar_losses = _scalar_lambda_losses(val_objective, num_features, ridge.dtype)
    best_lam = float(scalar_grid[int(np.argmin(scalar_losses))])
    best_scalar = jnp.full((num_features,), np.log(best_lam), ridge.dtype)

    by_mode = {mode: [r for r in table if r["mode"] == mode] for mode in ("unrolled", "implicit")}
    plots = _hyperparam_plots(ctx, by_mode, inner_steps, losses, min(scalar_losses), num_features)
    last = {mode: rows[-1] for mode, rows in by_mode.items()}
    summary = {
        "num_hyperparameters": num_features,
        "max_inner_steps": inner_steps[-1],
        "unrolled_temp_memory_kib_at_max": last["unrolled"]["temp_memory_kib"],
        "implicit_temp_memory_kib_at_max": last["implicit"]["temp_memory_kib"],
        "unrolled_rel_error_at_max": last["unrolled"]["hypergradient_rel_error"],
        "implicit_rel_error_at_max": last["implicit"]["hypergradient_rel_error"],
        "implicit_vs_unrolled_rel_difference_at_max": last["implicit"][
            "rel_difference_to_unrolled"
        ],
        "initial_validation_loss": losses[0],
        "final_validation_loss": final_loss,
        "best_scalar_lambda_validation_loss": min(scalar_losses),
        "best_scalar_lambda": best_lam,
        "test_loss_initial": float(test_loss(log_lam0)),
        "test_loss_per_feature": float(test_loss(log_lam)),
        "test_loss_best_scalar": float(test_loss(best_scalar)),
    }
    return ExperimentOutput(table=table, summary=summary, plots=plots)


@dataclasses.dataclass(frozen=True)
class _Ridge:
    """The ridge problem of `hyperparam_implicit`: training, validation and test data, in
    float64 (numpy, for the exact hypergradient) and in the working `dtype` (jax)."""

    data64: tuple[np.ndarray, ...]  # X, y, X_val, y_val, X_test, y_test
    data: tuple[jax.Array, ...]  # the same in `dtype`
    dtype: jnp.dtype
    # |X|_2^2 / n, computed once (an SVD per inner solve would dominate the run time)
    data_lipschitz: float

    @classmethod
    def make(cls, seed, num_train, num_val, num_features, dtype) -> "_Ridge":
        data64, _ = _ridge_data(seed, num_train, num_val, num_features, dtype)
        X64 = data64[0]
        return cls(
            data64=data64,
            data=tuple(jnp.asarray(a, dtype) for a in data64),
            dtype=dtype,
            data_lipschitz=float(np.linalg.norm(X64, 2) ** 2 / X64.shape[0]),
        )

    def exact_hypergradient(self, log_lam) -> np.ndarray:
        """d(validation loss)/d(log_lam) at the exact minimiser, in float64."""
        X64, y64, Xv64, yv64, _, _ = self.data64
        num_train, num_val = X64.shape[0], Xv64.shape[0]
        lam = np.exp(np.asarray(log_lam, np.float64))
        H = X64.T @ X64 / num_train + np.diag(lam)
        w = np.linalg.solve(H, X64.T @ y64 / num_train)
        g_w = Xv64.T @ (Xv64 @ w - yv64) / num_val
        # d L_val / d log_lam_j = -(H^{-1} g_w)_j * lam_j * w_j
        return -np.linalg.solve(H, g_w) * lam * w

    def w_init(self) -> jax.Array:
        return jnp.zeros((self.data[0].shape[1],), self.dtype)


def _implicit(solve):
    """`solve` differentiated by the implicit function theorem at its output (custom_root);
    the backward solve is CG, as the Hessian of the training objective is positive definite."""
    backward = linear.CG(rtol=1e-6, atol=0.0, max_steps=1000)
    return implicit.custom_root(_optimality, solve=backward, tags=("positive_definite",))(solve)


def _hypergradient_fn(ridge: _Ridge, num_steps: int, mode: str):
    """The jitted hypergradient d(validation loss)/d(log_lam) through `num_steps` inner steps,
    by unrolling (`mode="unrolled"`) or implicitly (`mode="implicit"`)."""
    solve = _inner_solver(num_steps, ridge.data_lipschitz)
    if mode == "implicit":
        solve = _implicit(solve)
    X, y, Xv, yv, _, _ = ridge.data
    w_init = ridge.w_init()

    def objective(log_lam):
        return _val_loss(solve(w_init, log_lam, X, y), Xv, yv)

    return jax.jit(jax.grad(objective))


def _median_seconds(fn, *args, repeats: int = 5) -> float:
    """Median wall time of `fn(*args)` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _compare_hypergradients(ctx: RunContext, ridge: _Ridge, log_lam0, inner_steps) -> list[dict]:
    """For each inner step count, unrolled then implicit: error against the exact
    hypergradient, difference to the unrolled one, compiled temporary memory and run time.

    **Returns:** the table rows, in `(inner_steps, mode)` order.
    """
    exact = ridge.exact_hypergradient(log_lam0)
    table = []
    grads = {}
    for num_steps in inner_steps:
        for mode in ("unrolled", "implicit"):
            ctx.status(f"hypergradient: {mode}, {num_steps} inner steps")
            compiled = _hypergradient_fn(ridge, num_steps, mode).lower(log_lam0).compile()
            memory = compiled.memory_analysis()
            temp_bytes = int(getattr(memory, "temp_size_in_bytes", 0)) if memory else -1
            grad = np.asarray(compiled(log_lam0), np.float64)
            grads[num_steps, mode] = grad
            other = grads.get((num_steps, "unrolled"), grad)
            table.append(
                {
                    "inner_steps": num_steps,
                    "mode": mode,
                    "hypergradient_rel_error": float(
                        np.linalg.norm(grad - exact) / np.linalg.norm(exact)
                    ),
                    "rel_difference_to_unrolled": float(
                        np.linalg.norm(grad - other) / np.linalg.norm(other)
                    ),
                    "temp_memory_kib": temp_bytes / 1024,
                    "run_ms": 1e3 * _median_seconds(compiled, log_lam0),
                }
            )
    return table


def _ridge_objectives(ridge: _Ridge, num_inner_steps: int):
    """The validation and (held-out) test losses as functions of `log_lam`, through an inner
    solve of `num_inner_steps` steps differentiated implicitly.

    **Returns:** `(val_objective, test_loss)`, both jitted.
    """
    X, y, Xv, yv, Xt, yt = ridge.data
    inner = _implicit(_inner_solver(num_inner_steps, ridge.data_lipschitz))
    w_init = ridge.w_init()

    @jax.jit
    def val_objective(log_lam):
        return _val_loss(inner(w_init, log_lam, X, y), Xv, yv)

    @jax.jit
    def test_loss(log_lam):  # held out: the hyperparameters never see it
        return _val_loss(inner(w_init, log_lam, X, y), Xt, yt)

    return val_objective, test_loss


def _optimise_hyperparameters(val_objective, log_lam0, num_steps: int, learning_rate: float):
    """Adam on `log_lam` with the (implicit) gradient of `val_objective`.

    **Returns:** `(log_lam, losses)`: the final hyperparameters and the validation loss before
    each step.
    """
    import optax

    optimiser = optax.adam(learning_rate)

    @jax.jit
    def outer_step(log_lam, opt_state):
        loss, grad = jax.value_and_grad(val_objective)(log_lam)
        updates, opt_state = optimiser.update(grad, opt_state)
        return optax.apply_updates(log_lam, updates), opt_state, loss

    log_lam, opt_state = log_lam0, optimiser.init(log_lam0)
    losses = []
    for _ in range(num_steps):
        log_lam, opt_state, loss = outer_step(log_lam, opt_state)
        losses.append(float(loss))
    return log_lam, losses


def _scalar_lambda_losses(val_objective, num_features: int, dtype):
    """The validation loss of one lambda shared by all features, on a log grid: the baseline
    that per-feature hyperparameters must beat.

    **Returns:** `(grid, losses)`.
    """
    grid = np.logspace(-4, 1, 26)
    losses = [float(val_objective(jnp.full((num_features,), np.log(lam), dtype))) for lam in grid]
    return grid, losses


def _hyperparam_plots(
    ctx: RunContext, by_mode, inner_steps, losses, best_scalar_loss, num_features
) -> list[str]:
    """Memory and hypergradient error against inner steps (both modes), and the validation
    loss during the outer optimisation."""
    steps_axis = np.asarray(inner_steps, float)
    plot_memory = line_plot(
        ctx.path("hyperparam_implicit_memory.png"),
        {
            mode: (steps_axis, [r["temp_memory_kib"] for r in rows])
            for mode, rows in by_mode.items()
        },
        title="Compiled temporary memory of the hypergradient",
        xlabel="inner steps",
        ylabel="KiB",
        logx=True,
        logy=True,
    )
    plot_error = line_plot(
        ctx.path("hyperparam_implicit_error.png"),
        {
            mode: (steps_axis, [max(r["hypergradient_rel_error"], 1e-12) for r in rows])
            for mode, rows in by_mode.items()
        },
        title="Hypergradient error vs the exact (float64) one",
        xlabel="inner steps",
        ylabel="relative error",
        logx=True,
        logy=True,
    )
    outer_steps = len(losses)
    plot_outer = line_plot(
        ctx.path("hyperparam_implicit_validation.png"),
        {
            f"per-feature lambda ({num_features} hyperparameters)": (
                np.arange(1, outer_steps + 1),
                losses,
            ),
            "best scalar lambda (grid search)": (
                np.array([1, outer_steps]),
                [best_scalar_loss] * 2,
            ),
        },
        title="Validation loss, Adam on implicit hypergradients",
        xlabel="outer step",
        ylabel="validation loss",
    )
    return [plot_memory, plot_error, plot_outer]
