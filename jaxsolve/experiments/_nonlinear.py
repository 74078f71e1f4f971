"""Nonlinear-solver experiments: training a deep equilibrium model, and the quickstart section."""

import time
from typing import Annotated

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import diffeq, nonlinear
from ._plot import line_plot, scatter_plot
from ._registry import ExperimentOutput, RunContext, check_row, quickstart_section, register
from ._schema import (
    NonNegativeFloat,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
    Tolerance,
)

# ---------------------------------------------------------------------------------------------
# deq_train
# ---------------------------------------------------------------------------------------------


def _spirals(num_points: int, num_classes: int, noise: float, key):
    """Interleaved 2-D spirals, one per class (the classic nonlinearly separable toy)."""
    k_radius, k_noise = jax.random.split(key)
    per_class = num_points // num_classes
    radius = jax.random.uniform(k_radius, (num_classes, per_class), minval=0.05, maxval=1.0)
    offsets = 2 * jnp.pi * jnp.arange(num_classes)[:, None] / num_classes
    angle = 3.5 * radius + offsets
    points = jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)
    points = points + noise * jax.random.normal(k_noise, points.shape)
    labels = jnp.repeat(jnp.arange(num_classes), per_class)
    return points.reshape(-1, 2), labels


class _Cell(eqx.Module):
    """z -> tanh(W z + U x + b), with W rescaled to spectral norm <= `contraction` so that the
    map is a contraction in z and the equilibrium exists and is unique."""

    weight: jax.Array
    inject: eqx.nn.Linear
    contraction: float = eqx.field(static=True)

    def __call__(self, z, x):
        norm = jnp.linalg.norm(self.weight, 2)
        weight = self.weight * jnp.minimum(1.0, self.contraction / norm)
        return jnp.tanh(weight @ z + self.inject(x))


class _EquilibriumClassifier(eqx.Module):
    """A readout of the equilibrium found by `solver` (`nonlinear.DEQ` by fixed-point
    iteration, or `diffeq.HomoODE` by homotopy continuation, an ODE in λ)."""

    solver: nonlinear.DEQ | diffeq.HomoODE
    readout: eqx.nn.Linear

    def __call__(self, x):
        solution = self.solver.solve(x)
        return self.readout(solution.value), solution.stats["num_steps"]


@register(
    "deq_train",
    "Train a deep equilibrium classifier (Anderson forward, implicit backward) on 2-D spirals.",
)
def deq_train(
    ctx: RunContext,
    width: PositiveInt = 32,
    num_classes: Annotated[int, Range(2)] = 3,
    num_train: PositiveInt = 600,
    num_test: PositiveInt = 600,
    noise: NonNegativeFloat = 0.04,
    steps: PositiveInt = 300,
    learning_rate: PositiveFloat = 0.01,
    contraction: OpenUnitInterval = 0.9,
    tol: Tolerance = 1e-4,
    max_forward_steps: PositiveInt = 40,
    history_size: PositiveInt = 5,
    seed: Seed = 0,
    homoode: bool = True,
    homoode_tol: Tolerance = 1e-3,
) -> ExperimentOutput:
    """Full-batch Adam on a DEQ classifier z* = tanh(W z* + U x + b), logits = V z* + c.

    Logs per step the loss, the training accuracy and the mean number of forward (Anderson)
    iterations; reports the test accuracy and, at the trained parameters with a tight forward
    solve, the relative difference between the implicit and the unrolled gradients.

    With `homoode=True` the same classifier (same initial parameters, same Adam steps) is also
    trained with its equilibrium found by `jaxsolve.diffeq.HomoODE` (Newton-homotopy ODE,
    Tsit5 with rtol = atol = `homoode_tol`, implicit backward pass); the summary then compares
    test accuracy, forward cost (Anderson iterations vs ODE steps and vector-field
    evaluations, each of which costs `width` Jacobian-vector products and an LU solve) and the
    time of a compiled forward pass over the test set.
    """
    key = jax.random.PRNGKey(seed)
    k_train, k_test, k_w, k_in, k_out = jax.random.split(key, 5)
    x_train, y_train = _spirals(num_train, num_classes, noise, k_train)
    x_test, y_test = _spirals(num_test, num_classes, noise, k_test)
    cell = _Cell(
        weight=0.5 * jax.random.normal(k_w, (width, width)) / jnp.sqrt(width),
        inject=eqx.nn.Linear(2, width, key=k_in),
        contraction=contraction,
    )
    solver = nonlinear.Anderson(rtol=tol, atol=tol, history_size=history_size)
    deq = nonlinear.DEQ(cell, (width,), solver=solver, max_steps=max_forward_steps)
    model = _EquilibriumClassifier(deq, eqx.nn.Linear(width, num_classes, key=k_out))
    initial_model = model
    # (The solver's hyperparameters are array leaves too; DEQ stops their gradient.)

    def loss_fn(model, x, y):
        logits, iterations = jax.vmap(model)(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
        return loss, (accuracy, jnp.mean(iterations.astype(jnp.float32)))

    model, history, train_seconds = _train(
        model, loss_fn, learning_rate, steps, x_train, y_train, ctx, "DEQ"
    )
    history = [(step, *row) for step, row in enumerate(history)]

    evaluate = eqx.filter_jit(loss_fn)
    test_loss, (test_accuracy, test_iterations) = evaluate(model, x_test, y_test)

    # At the trained parameters: the implicit gradient (Anderson forward, converged tightly for
    # float32) vs differentiating 400 unrolled steps of plain fixed-point iteration, whose
    # tangents converge at the same linear rate as its iterates.
    def with_solver(solver, adjoint):
        deq = nonlinear.DEQ(model.solver.cell, (width,), solver, max_steps=400, adjoint=adjoint)
        return eqx.tree_at(lambda m: m.solver, model, deq)

    def grad_of(m):
        grads = eqx.filter_jit(eqx.filter_grad(lambda m: loss_fn(m, x_train, y_train)[0]))(m)
        return jax.tree.leaves((grads.solver.cell, grads.readout))

    tight = dict(rtol=1e-6, atol=1e-6)
    g_implicit = grad_of(
        with_solver(
            nonlinear.Anderson(history_size=history_size, **tight), nonlinear.ImplicitAdjoint()
        )
    )
    g_unrolled = grad_of(
        with_solver(nonlinear.FixedPointIteration(**tight), nonlinear.RecursiveCheckpointAdjoint())
    )
    flat_i = jnp.concatenate([g.ravel() for g in g_implicit])
    flat_u = jnp.concatenate([g.ravel() for g in g_unrolled])
    gradient_rel_diff = float(jnp.linalg.norm(flat_i - flat_u) / jnp.linalg.norm(flat_u))

    report_every = max(1, steps // 10)
    table = [
        {
            "step": step + 1,
            "loss": loss,
            "train_accuracy": accuracy,
            "mean_forward_iterations": iterations,
        }
        for step, loss, accuracy, iterations in history
        if (step + 1) % report_every == 0 or step == 0
    ]
    steps_axis = np.array([h[0] + 1 for h in history])
    plots = [
        line_plot(
            ctx.path("deq_train_curves.png"),
            {
                "training loss": (steps_axis, [h[1] for h in history]),
                "training accuracy": (steps_axis, [h[2] for h in history]),
            },
            title="DEQ on spirals: loss and accuracy",
            xlabel="Adam step",
            ylabel="value",
        ),
        line_plot(
            ctx.path("deq_forward_iterations.png"),
            {"mean Anderson iterations": (steps_axis, [h[3] for h in history])},
            title="DEQ forward iterations per example during training",
            xlabel="Adam step",
            ylabel="iterations",
        ),
    ]
    logits, _ = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))(model, x_test)
    predicted = np.asarray(jnp.argmax(logits, -1))
    plots.append(
        scatter_plot(
            ctx.path("deq_test_predictions.png"),
            {
                f"predicted class {c}": np.asarray(x_test)[predicted == c]
                for c in range(num_classes)
            },
            title="DEQ test predictions",
        )
    )
    summary = {
        "final_train_loss": history[-1][1],
        "final_train_accuracy": history[-1][2],
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "mean_forward_iterations_first_step": history[0][3],
        "mean_forward_iterations_last_step": history[-1][3],
        "test_mean_forward_iterations": float(test_iterations),
        "implicit_vs_unrolled_gradient_rel_diff": gradient_rel_diff,
        "train_seconds": train_seconds,
    }
    if homoode:
        summary.update(
            _homoode_comparison(
                initial_model,
                model,
                loss_fn,
                evaluate,
                steps,
                learning_rate,
                homoode_tol,
                (x_train, y_train, x_test, y_test),
                table,
                history,
                ctx,
            )
        )
        plots.append("homoode_vs_deq_curves.png")
    return ExperimentOutput(table=table, summary=summary, plots=plots)


def _forward_seconds(evaluate, model, x, y, repeats=3):
    """Best wall time of the compiled forward pass + loss over `x` (compiled already)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(evaluate(model, x, y))
        best = min(best, time.perf_counter() - start)
    return best


def _train(model, loss_fn, learning_rate, steps, x, y, ctx, label):
    """Full-batch Adam on `loss_fn(model, x, y) -> (loss, (accuracy, cost))`: the trained
    model, the per-step `(loss, accuracy, cost)` history and the wall time (compile included)."""
    optimiser = optax.adam(learning_rate)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def train_step(model, opt_state):
        (loss, aux), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, x, y)
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss, aux

    history = []
    start = time.perf_counter()
    for step in range(steps):
        model, opt_state, loss, (accuracy, cost) = train_step(model, opt_state)
        history.append((float(loss), float(accuracy), float(cost)))
        if ctx.progress and (step + 1) % max(1, steps // 5) == 0:
            ctx.status(
                f"{label} step {step + 1}/{steps}: loss {float(loss):.3f}, "
                f"acc {float(accuracy):.3f}"
            )
    return model, history, time.perf_counter() - start


def _homoode_comparison(
    initial_model,
    deq_model,
    loss_fn,
    evaluate,
    steps,
    learning_rate,
    tol,
    data,
    table,
    deq_history,
    ctx,
):
    """Train the DEQ's initial parameters again with a HomoODE forward pass; compare."""
    x_train, y_train, x_test, y_test = data
    width = initial_model.solver.latent_shape[0]
    layer = diffeq.HomoODE(
        initial_model.solver.cell,
        (width,),
        controller=diffeq.PIDController(rtol=tol, atol=tol),
        max_steps=64,
    )
    model = _EquilibriumClassifier(layer, initial_model.readout)
    model, history, train_seconds = _train(
        model, loss_fn, learning_rate, steps, x_train, y_train, ctx, "HomoODE"
    )
    test_loss, (test_accuracy, test_steps) = evaluate(model, x_test, y_test)
    for row in table:
        loss, accuracy, ode_steps = history[row["step"] - 1]
        row.update(
            homoode_loss=loss,
            homoode_train_accuracy=accuracy,
            homoode_mean_ode_steps=ode_steps,
        )
    steps_axis = np.arange(1, steps + 1)
    tableau = layer.solver.tableau
    evals_per_step = len(tableau.c) - int(tableau.fsal)
    line_plot(
        ctx.path("homoode_vs_deq_curves.png"),
        {
            "DEQ (Anderson) loss": (steps_axis, [h[1] for h in deq_history]),
            "DEQ (Anderson) accuracy": (steps_axis, [h[2] for h in deq_history]),
            "HomoODE (Tsit5 homotopy) loss": (steps_axis, [h[0] for h in history]),
            "HomoODE (Tsit5 homotopy) accuracy": (steps_axis, [h[1] for h in history]),
        },
        title="DEQ vs HomoODE on spirals: training loss and accuracy",
        xlabel="Adam step",
        ylabel="value",
    )
    return {
        "homoode_test_accuracy": float(test_accuracy),
        "homoode_test_loss": float(test_loss),
        "homoode_final_train_accuracy": history[-1][1],
        "homoode_test_mean_ode_steps": float(test_steps),
        "homoode_test_vector_field_evals": float(test_steps) * evals_per_step + 1,
        "homoode_train_seconds": train_seconds,
        "homoode_forward_seconds_test_set": _forward_seconds(evaluate, model, x_test, y_test),
        "deq_forward_seconds_test_set": _forward_seconds(evaluate, deq_model, x_test, y_test),
    }


# ---------------------------------------------------------------------------------------------
# Quickstart section
# ---------------------------------------------------------------------------------------------


@quickstart_section("nonlinear", order=5)
def _nonlinear_section(ctx: RunContext):
    """x = cos x + theta by Anderson with its implicit derivative 1/(1 + sin x*); Rosenbrock by
    Levenberg-Marquardt; a ridge hypergradient through L-BFGS; Sinkhorn's plan marginals."""
    theta = jnp.float32(0.5)
    anderson = nonlinear.Anderson(rtol=1e-6, atol=1e-6)

    def cos_fixed_point(theta):
        return nonlinear.fixed_point(lambda x, t: jnp.cos(x) + t, anderson, jnp.float32(1.0), theta)

    sol, dx = jax.jit(
        lambda t: (cos_fixed_point(t), jax.grad(lambda t: cos_fixed_point(t).value)(t))
    )(theta)
    x_star = float(sol.value)

    # Convergence of plain iteration vs Anderson, driving init/step by hand inside one scan.
    def errors(solver, steps=25):
        fn = lambda x, t: jnp.cos(x) + t

        def run(theta):
            y = jnp.ones(1, jnp.float32)
            state = solver.init(fn, y, theta, {})

            def body(carry, _):
                y, state = solver.step(fn, *carry[:1], theta, {}, carry[1])
                return (y, state), y[0]

            return jax.lax.scan(body, (y, state), None, length=steps)[1]

        iterates = np.asarray(jax.jit(run)(theta), np.float64)
        return np.abs(iterates - x_star) + 1e-12

    steps = np.arange(1, 26)
    plot = line_plot(
        ctx.path("quickstart_nonlinear.png"),
        {
            "fixed-point iteration": (steps, errors(nonlinear.FixedPointIteration())),
            "Anderson (m=5)": (steps, errors(nonlinear.Anderson())),
        },
        title="x = cos x + 0.5: |x_k - x*|",
        xlabel="iteration",
        ylabel="error",
        logy=True,
    )

    rosen = lambda y, _: jnp.stack([10.0 * (y[1] - y[0] ** 2), 1.0 - y[0]])
    lm = nonlinear.LevenbergMarquardt(rtol=1e-6, atol=1e-6)
    y_lm = jax.jit(lambda y0: nonlinear.least_squares(rosen, lm, y0).value)(
        jnp.array([-1.2, 1.0], jnp.float32)
    )

    rng = np.random.default_rng(0)
    X64 = rng.normal(size=(50, 5))
    t64 = X64 @ rng.normal(size=5)
    lam = 0.1
    H64 = X64.T @ X64 + 50 * lam * np.eye(5)
    dw64 = -np.linalg.solve(H64, 50 * np.linalg.solve(H64, X64.T @ t64))
    X, t = jnp.asarray(X64, jnp.float32), jnp.asarray(t64, jnp.float32)

    def ridge(lam):
        loss = lambda w, lam: 0.5 * jnp.mean((X @ w - t) ** 2) + 0.5 * lam * jnp.vdot(w, w)
        solver = nonlinear.LBFGS(rtol=1e-6, atol=1e-6)
        return nonlinear.minimize(loss, solver, jnp.zeros(5, jnp.float32), lam).value

    dw = jax.jit(jax.jacrev(ridge))(jnp.float32(lam))

    cost = jnp.asarray(rng.uniform(size=(6, 5)), jnp.float32)
    a = jnp.full((6,), 1 / 6, jnp.float32)
    b = jnp.full((5,), 1 / 5, jnp.float32)
    plan = jax.jit(lambda c: nonlinear.sinkhorn(c, a, b, 0.1, threshold=1e-5).plan)(cost)

    rows = [
        check_row(
            "nonlinear", "x = cos x + 0.5 by Anderson: residual", x_star - np.cos(x_star), 0.5
        ),
        check_row("nonlinear", "dx*/dtheta, implicit (reverse mode)", dx, 1 / (1 + np.sin(x_star))),
        check_row("nonlinear", "Rosenbrock by Levenberg-Marquardt: y_0", y_lm[0], 1.0),
        check_row("nonlinear", "ridge dw_0/dlam through LBFGS (float32)", dw[0], dw64[0]),
        check_row(
            "nonlinear",
            "Sinkhorn plan: row sums - a (max abs)",
            jnp.max(jnp.abs(plan.sum(1) - a)),
            0.0,
        ),
    ]
    summary = {
        "anderson_iterations": int(sol.stats["num_steps"]),
        "ridge_hypergradient_rel_error": float(
            np.linalg.norm(np.asarray(dw, np.float64) - dw64) / np.linalg.norm(dw64)
        ),
    }
    return rows, summary, [plot]
