"""Experiments of the linear / implicit pillar: Learning to Relax and implicit hyperparameter
optimisation, plus the pillar's quickstart section."""

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import implicit, linear
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, check_row, quickstart_section, register

# ---------------------------------------------------------------------------------------------
# Shared problems
# ---------------------------------------------------------------------------------------------


def _poisson_matrix(grid: int, dtype) -> jax.Array:
    """The 5-point Dirichlet Laplacian on a grid x grid interior (scaled by h^-2), dense."""
    inv_h2 = float((grid + 1) ** 2)

    def apply(u):
        padded = jnp.pad(u, 1)
        neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        return inv_h2 * (4 * u - neighbours)

    return linear.FunctionOperator(apply, jnp.zeros((grid, grid), dtype)).as_matrix()


# ---------------------------------------------------------------------------------------------
# Quickstart section
# ---------------------------------------------------------------------------------------------


@quickstart_section("linear", order=4)
def _linear_section(ctx: RunContext):
    """Matrix-free CG and GMRES on a Poisson problem with a manufactured solution, a gradient
    through the solve, and a ridge hypergradient by implicit differentiation against the
    closed form."""
    grid = 16
    h = 1.0 / (grid + 1)
    coords = jnp.arange(1, grid + 1, dtype=jnp.float32) * h
    xx, yy = jnp.meshgrid(coords, coords, indexing="ij")
    # A manufactured solution: f = L u_exact, so solving L u = f must return u_exact. (float32:
    # the true residual bottoms out near cond(L) * eps ~ 1e-5, so ask for that.)
    u_exact = xx * (1 - xx) * jnp.sin(jnp.pi * yy) * jnp.exp(yy)

    def laplacian(u):
        padded = jnp.pad(u, 1)
        neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        return (4 * u - neighbours) / h**2

    f = laplacian(u_exact)
    op = linear.FunctionOperator(laplacian, u_exact, tags=("positive_definite",))
    cg = jax.jit(lambda f: linear.solve(op, f, linear.CG(rtol=1e-5, atol=0.0)))(f)
    gmres = jax.jit(lambda f: linear.solve(op, f, linear.GMRES(rtol=1e-5, atol=0.0)))(f)
    cg_err = float(jnp.max(jnp.abs(cg.value - u_exact)))
    gmres_err = float(jnp.max(jnp.abs(gmres.value - u_exact)))
    # d/ds sum(L^{-1} (s f)) = sum(L^{-1} f) = sum(u_exact): the gradient is itself a solve.
    grad = jax.jit(jax.grad(lambda s: jnp.sum(linear.solve(op, s * f).value)))(jnp.float32(1.0))

    # Ridge hypergradient dw/dlam = -(X^T X + n lam I)^{-1} n w, by custom_root (float32).
    rng = np.random.default_rng(0)
    X64 = rng.normal(size=(50, 5))
    y64 = X64 @ rng.normal(size=5)
    lam = 0.1
    n = X64.shape[0]
    H64 = X64.T @ X64 + n * lam * np.eye(5)
    w64 = np.linalg.solve(H64, X64.T @ y64)
    dw64 = -np.linalg.solve(H64, n * w64)

    def optimality(w, lam, X, y):
        return X.T @ (X @ w - y) / X.shape[0] + lam * w

    @implicit.custom_root(optimality)
    def ridge(w_init, lam, X, y):
        step = 1.0 / (jnp.linalg.norm(X, 2) ** 2 / X.shape[0] + lam)
        return lax.fori_loop(0, 500, lambda _, w: w - step * optimality(w, lam, X, y), w_init)

    X, y = jnp.asarray(X64, jnp.float32), jnp.asarray(y64, jnp.float32)
    dw = jax.jit(jax.jacfwd(ridge, argnums=1))(jnp.zeros(5, jnp.float32), jnp.float32(lam), X, y)

    rows = [
        check_row("linear", "CG, 16x16 Poisson (matrix-free): max |u - u_exact|", cg_err, 0.0),
        check_row("linear", "GMRES, same system: max |u - u_exact|", gmres_err, 0.0),
        check_row(
            "linear", "d/ds sum(solve(L, s f)) (reverse mode)", grad, float(jnp.sum(u_exact))
        ),
        check_row("implicit", "ridge dw_0/dlam by custom_root (float32)", dw[0], dw64[0]),
    ]
    summary = {
        "poisson_cg_iterations": int(cg.stats["num_steps"]),
        "poisson_gmres_iterations": int(gmres.stats["num_steps"]),
        "ridge_hypergradient_rel_error": float(
            np.linalg.norm(np.asarray(dw, np.float64) - dw64) / np.linalg.norm(dw64)
        ),
    }
    return rows, summary, []


# ---------------------------------------------------------------------------------------------
# Learning to Relax
# ---------------------------------------------------------------------------------------------


@register(
    "learning_to_relax",
    "Tune SOR's omega online over a sequence of shifted Poisson systems with a Tsallis-INF "
    "bandit that sees only iteration counts; compare with the best fixed omega in hindsight.",
)
def learning_to_relax(
    ctx: RunContext,
    grid: int = 10,
    num_systems: int = 1000,
    num_omegas: int = 12,
    omega_min: float = 1.0,
    omega_max: float = 1.95,
    max_shift: float = 300.0,
    rtol: float = 1e-6,
    max_steps: int = 400,
    max_cost: float = 60.0,
    learning_rate: float = 4.0,
    baseline: float = 0.5,
    num_seeds: int = 20,
    context_bins: int = 6,
    seed: int = 0,
) -> ExperimentOutput:
    """Systems `(L + c_t I) x = b_t` with `L` the 2-D Poisson matrix (grid x grid interior),
    shifts `c_t ~ U(0, max_shift)` and Gaussian `b_t`. For the baselines every omega of the
    grid is run on every system (the cost table); the bandit sees only the cost (SOR
    iterations) of the omega it plays, system by system. Costs are normalised into [0, 1] by
    `max_cost` (clipped above; 0 means `max_steps`); `learning_rate` and `baseline` are the
    bandit's (see `OmegaBandit`). The contextual variant sees the shift `c_t` too and keeps
    one bandit per each of `context_bins` equal bins of [0, max_shift]."""
    dtype = jnp.float32
    key_shift, key_b, key_bandit = jax.random.split(jax.random.key(seed), 3)
    laplacian = _poisson_matrix(grid, dtype)
    size = grid * grid
    shifts = jax.random.uniform(key_shift, (num_systems,), dtype, 0.0, max_shift)
    rhs = jax.random.normal(key_b, (num_systems, size), dtype)
    omegas = jnp.linspace(omega_min, omega_max, num_omegas, dtype=dtype)
    eye = jnp.eye(size, dtype=dtype)

    @jax.jit
    def cost_table(shifts, rhs, omegas):
        def one_system(shift, b):
            def one_omega(omega):
                solver = linear.SOR(omega=omega, rtol=rtol, atol=0.0, max_steps=max_steps)
                sol = linear.solve(laplacian + shift * eye, b, solver, throw=False)
                return sol.stats["num_steps"]

            return jax.vmap(one_omega)(omegas)

        return lax.map(lambda sb: one_system(*sb), (shifts, rhs))  # (systems, omegas)

    ctx.status(f"SOR on {num_systems} systems x {num_omegas} omegas")
    start = time.perf_counter()
    costs = np.asarray(cost_table(shifts, rhs, omegas))
    table_seconds = time.perf_counter() - start

    normaliser = max_cost if max_cost > 0 else float(max_steps)
    bandit = linear.OmegaBandit(omegas, normaliser, learning_rate, baseline)

    @jax.jit
    def play(key, costs):
        def round_(state, inputs):
            key, row = inputs
            arm, probs = bandit.propose(state, key)
            cost = row[arm]
            return bandit.update(state, arm, cost, probs), (cost, arm)

        keys = jax.random.split(key, costs.shape[0])
        return lax.scan(round_, bandit.init(), (keys, costs))[1]

    edges = jnp.linspace(0.0, max_shift, context_bins + 1, dtype=dtype)[1:-1]
    contextual = linear.ContextualOmegaBandit(omegas, edges, normaliser, learning_rate, baseline)

    @jax.jit
    def play_contextual(key, costs, shifts):
        def round_(state, inputs):
            key, row, shift = inputs
            arm, probs = contextual.propose(state, shift, key)
            cost = row[arm]
            return contextual.update(state, shift, arm, cost, probs), cost

        keys = jax.random.split(key, costs.shape[0])
        return lax.scan(round_, contextual.init(), (keys, costs, shifts))[1]

    ctx.status(f"bandits over {num_seeds} seeds")
    seeds = jax.random.split(key_bandit, num_seeds)
    runs = [play(k, jnp.asarray(costs)) for k in seeds]
    bandit_costs = np.stack([np.asarray(c) for c, _ in runs]).astype(float)  # (seeds, T)
    bandit_arms = np.stack([np.asarray(a) for _, a in runs])
    contextual_costs = np.stack(
        [np.asarray(play_contextual(k, jnp.asarray(costs), shifts)) for k in seeds]
    ).astype(float)

    totals = costs.sum(axis=0).astype(float)  # per fixed omega
    best_arm = int(np.argmin(totals))
    best_fixed = costs[:, best_arm].astype(float)
    instance_optimal = costs.min(axis=1).astype(float)
    uniform = costs.mean(axis=1).astype(float)  # expected cost of a uniformly random omega
    bandit_total = bandit_costs.sum(axis=1)
    contextual_total = contextual_costs.sum(axis=1)

    rounds = np.arange(1, num_systems + 1)

    def running_mean(x):
        return np.cumsum(x, axis=-1) / rounds

    plot_avg = line_plot(
        ctx.path("learning_to_relax_average_iterations.png"),
        {
            "bandit (mean of seeds)": (rounds, running_mean(bandit_costs).mean(axis=0)),
            f"contextual bandit, {context_bins} bins": (
                rounds,
                running_mean(contextual_costs).mean(axis=0),
            ),
            f"best fixed omega={float(omegas[best_arm]):.3f}": (rounds, running_mean(best_fixed)),
            "instance-optimal omega": (rounds, running_mean(instance_optimal)),
            "uniformly random omega": (rounds, running_mean(uniform)),
        },
        title="Learning to Relax: average SOR iterations per system",
        xlabel="systems solved",
        ylabel="average iterations so far",
    )
    plot_omega = line_plot(
        ctx.path("learning_to_relax_totals.png"),
        {"total iterations": (np.asarray(omegas), totals)},
        title="Total SOR iterations of each fixed omega over the sequence",
        xlabel="omega",
        ylabel="total iterations",
    )

    table = [
        {"policy": f"fixed omega={float(w):.3f}", "total_iterations": int(t)}
        for w, t in zip(np.asarray(omegas), totals, strict=True)
    ]
    quarter = num_systems // 4
    late_ratio = bandit_costs[:, -quarter:].sum(axis=1).mean() / best_fixed[-quarter:].sum()
    early_ratio = bandit_costs[:, :quarter].sum(axis=1).mean() / best_fixed[:quarter].sum()
    table += [
        {"policy": "best fixed omega in hindsight", "total_iterations": int(best_fixed.sum())},
        {
            "policy": "instance-optimal omega (oracle)",
            "total_iterations": int(instance_optimal.sum()),
        },
        {"policy": "uniformly random omega (expected)", "total_iterations": int(uniform.sum())},
        {
            "policy": f"Tsallis-INF bandit (mean of {num_seeds} seeds)",
            "total_iterations": int(round(bandit_total.mean())),
        },
        {
            "policy": f"contextual bandit, {context_bins} shift bins (mean of {num_seeds} seeds)",
            "total_iterations": int(round(contextual_total.mean())),
        },
    ]
    summary = {
        "best_fixed_omega": float(omegas[best_arm]),
        "best_fixed_total": int(best_fixed.sum()),
        "bandit_total_mean": float(bandit_total.mean()),
        "bandit_total_std": float(bandit_total.std()),
        "bandit_over_best_fixed": float(bandit_total.mean() / best_fixed.sum()),
        "bandit_over_best_fixed_first_quarter": float(early_ratio),
        "bandit_over_best_fixed_last_quarter": float(late_ratio),
        "contextual_over_best_fixed": float(contextual_total.mean() / best_fixed.sum()),
        "contextual_over_best_fixed_last_quarter": float(
            contextual_costs[:, -quarter:].sum(axis=1).mean() / best_fixed[-quarter:].sum()
        ),
        "uniform_over_best_fixed": float(uniform.sum() / best_fixed.sum()),
        "instance_optimal_over_best_fixed": float(instance_optimal.sum() / best_fixed.sum()),
        "bandit_plays_best_arm_last_quarter": float(np.mean(bandit_arms[:, -quarter:] == best_arm)),
        "cost_normaliser": normaliser,
        "cost_table_seconds": table_seconds,
    }
    return ExperimentOutput(table=table, summary=summary, plots=[plot_avg, plot_omega])


# ---------------------------------------------------------------------------------------------
# Hyperparameter optimisation by implicit differentiation
# ---------------------------------------------------------------------------------------------


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
    num_features: int = 200,
    num_train: int = 400,
    num_val: int = 400,
    inner_steps: list[int] = [30, 100, 300, 1000, 3000],  # noqa: B006 - TOML-typed default
    outer_steps: int = 150,
    outer_learning_rate: float = 0.05,
    optimisation_inner_steps: int = 200,
    seed: int = 0,
) -> ExperimentOutput:
    """Hyperparameters `log_lam` (one per feature). For each inner step count K: the
    hypergradient of the validation loss by unrolling K accelerated-gradient steps, and by
    implicit differentiation (custom_root around the same loop, CG backward solve), each
    against the exact float64 hypergradient; the compiled temporary memory
    (`memory_analysis`) and the run time. Then `outer_steps` of Adam on `log_lam` with
    implicit hypergradients."""
    import optax

    dtype = jnp.float32
    (X64, y64, Xv64, yv64, Xt64, yt64), _ = _ridge_data(
        seed, num_train, num_val, num_features, dtype
    )
    X, y, Xv, yv, Xt, yt = (jnp.asarray(a, dtype) for a in (X64, y64, Xv64, yv64, Xt64, yt64))
    log_lam0 = jnp.full((num_features,), np.log(0.1), dtype)
    w_init = jnp.zeros((num_features,), dtype)

    def exact_hypergradient(log_lam):
        lam = np.exp(np.asarray(log_lam, np.float64))
        H = X64.T @ X64 / num_train + np.diag(lam)
        w = np.linalg.solve(H, X64.T @ y64 / num_train)
        g_w = Xv64.T @ (Xv64 @ w - yv64) / num_val
        # d L_val / d log_lam_j = -(H^{-1} g_w)_j * lam_j * w_j
        return -np.linalg.solve(H, g_w) * lam * w

    exact = exact_hypergradient(log_lam0)
    data_lipschitz = float(np.linalg.norm(X64, 2) ** 2 / num_train)
    backward = linear.CG(rtol=1e-6, atol=0.0, max_steps=1000)

    def make_hypergradient(num_steps, mode):
        solve = _inner_solver(num_steps, data_lipschitz)
        if mode == "implicit":
            solve = implicit.custom_root(_optimality, solve=backward, tags=("positive_definite",))(
                solve
            )

        def objective(log_lam):
            return _val_loss(solve(w_init, log_lam, X, y), Xv, yv)

        return jax.jit(jax.grad(objective))

    def timed(fn, *args, repeats=5):
        jax.block_until_ready(fn(*args))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    table = []
    grads = {}
    for num_steps in inner_steps:
        for mode in ("unrolled", "implicit"):
            ctx.status(f"hypergradient: {mode}, {num_steps} inner steps")
            fn = make_hypergradient(num_steps, mode)
            compiled = fn.lower(log_lam0).compile()
            memory = compiled.memory_analysis()
            temp_bytes = int(getattr(memory, "temp_size_in_bytes", 0)) if memory else -1
            grad = np.asarray(compiled(log_lam0), np.float64)
            rel_err = float(np.linalg.norm(grad - exact) / np.linalg.norm(exact))
            grads[num_steps, mode] = grad
            other = grads.get((num_steps, "unrolled"), grad)
            table.append(
                {
                    "inner_steps": num_steps,
                    "mode": mode,
                    "hypergradient_rel_error": rel_err,
                    "rel_difference_to_unrolled": float(
                        np.linalg.norm(grad - other) / np.linalg.norm(other)
                    ),
                    "temp_memory_kib": temp_bytes / 1024,
                    "run_ms": 1e3 * timed(compiled, log_lam0),
                }
            )

    # Outer optimisation with implicit hypergradients (Adam on log_lam).
    inner = _inner_solver(optimisation_inner_steps, data_lipschitz)
    inner_implicit = implicit.custom_root(_optimality, solve=backward, tags=("positive_definite",))(
        inner
    )

    @jax.jit
    def val_objective(log_lam):
        return _val_loss(inner_implicit(w_init, log_lam, X, y), Xv, yv)

    @jax.jit
    def test_loss(log_lam):  # held out: the hyperparameters never see it
        return _val_loss(inner_implicit(w_init, log_lam, X, y), Xt, yt)

    optimiser = optax.adam(outer_learning_rate)

    @jax.jit
    def outer_step(log_lam, opt_state):
        loss, grad = jax.value_and_grad(val_objective)(log_lam)
        updates, opt_state = optimiser.update(grad, opt_state)
        return optax.apply_updates(log_lam, updates), opt_state, loss

    ctx.status(f"{outer_steps} outer Adam steps on {num_features} hyperparameters")
    log_lam, opt_state = log_lam0, optimiser.init(log_lam0)
    losses = []
    for _ in range(outer_steps):
        log_lam, opt_state, loss = outer_step(log_lam, opt_state)
        losses.append(float(loss))
    final_loss = float(val_objective(log_lam))

    # The best single (scalar) lambda for comparison, by a grid search on validation loss.
    scalar_grid = np.logspace(-4, 1, 26)
    scalar_losses = [
        float(val_objective(jnp.full((num_features,), np.log(lam), dtype))) for lam in scalar_grid
    ]
    best_scalar = jnp.full(
        (num_features,), np.log(scalar_grid[int(np.argmin(scalar_losses))]), dtype
    )

    by_mode = {mode: [r for r in table if r["mode"] == mode] for mode in ("unrolled", "implicit")}
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
    plot_outer = line_plot(
        ctx.path("hyperparam_implicit_validation.png"),
        {
            f"per-feature lambda ({num_features} hyperparameters)": (
                np.arange(1, outer_steps + 1),
                losses,
            ),
            "best scalar lambda (grid search)": (
                np.array([1, outer_steps]),
                [min(scalar_losses)] * 2,
            ),
        },
        title="Validation loss, Adam on implicit hypergradients",
        xlabel="outer step",
        ylabel="validation loss",
    )
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
        "best_scalar_lambda": float(scalar_grid[int(np.argmin(scalar_losses))]),
        "test_loss_initial": float(test_loss(log_lam0)),
        "test_loss_per_feature": float(test_loss(log_lam)),
        "test_loss_best_scalar": float(test_loss(best_scalar)),
    }
    return ExperimentOutput(
        table=table, summary=summary, plots=[plot_memory, plot_error, plot_outer]
    )
