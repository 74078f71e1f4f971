"""Experiments of the linear / implicit pillar: Learning to Relax and the pillar's quickstart
section (implicit hyperparameter optimisation is in `_hyperparam`)."""

import dataclasses
import time
from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import implicit, linear
from ._plot import line_plot
from ._registry import ExperimentOutput, RunContext, check_row, quickstart_section, register
from ._schema import (
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
    Tolerance,
    UnitInterval,
)

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

# SOR converges for every symmetric positive definite system exactly when 0 < omega < 2.
SorOmega = Annotated[float, Range(0, 2, low_inclusive=False, high_inclusive=False)]


@register(
    "learning_to_relax",
    "Tune SOR's omega online over a sequence of shifted Poisson systems with a Tsallis-INF "
    "bandit that sees only iteration counts; compare with the best fixed omega in hindsight.",
    requires=[("omega_min <= omega_max", lambda p: p["omega_min"] <= p["omega_max"])],
)
def learning_to_relax(
    ctx: RunContext,
    grid: PositiveInt = 10,
    num_systems: Annotated[int, Range(4)] = 1000,
    num_omegas: PositiveInt = 12,
    omega_min: SorOmega = 1.0,
    omega_max: SorOmega = 1.95,
    max_shift: NonNegativeFloat = 300.0,
    rtol: Tolerance = 1e-6,
    max_steps: PositiveInt = 400,
    max_cost: NonNegativeFloat = 60.0,
    learning_rate: PositiveFloat = 4.0,
    baseline: UnitInterval = 0.5,
    num_seeds: PositiveInt = 20,
    context_bins: PositiveInt = 6,
    seed: Seed = 0,
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
    shifts = jax.random.uniform(key_shift, (num_systems,), dtype, 0.0, max_shift)
    rhs = jax.random.normal(key_b, (num_systems, grid * grid), dtype)
    omegas = jnp.linspace(omega_min, omega_max, num_omegas, dtype=dtype)

    ctx.status(f"SOR on {num_systems} systems x {num_omegas} omegas")
    start = time.perf_counter()
    costs = _sor_cost_table(laplacian, shifts, rhs, omegas, rtol, max_steps)
    table_seconds = time.perf_counter() - start

    normaliser = max_cost if max_cost > 0 else float(max_steps)
    bandit = linear.OmegaBandit(omegas, normaliser, learning_rate, baseline)
    edges = jnp.linspace(0.0, max_shift, context_bins + 1, dtype=dtype)[1:-1]
    contextual = linear.ContextualOmegaBandit(omegas, edges, normaliser, learning_rate, baseline)
    ctx.status(f"bandits over {num_seeds} seeds")
    seeds = jax.random.split(key_bandit, num_seeds)
    bandit_costs, bandit_arms = _play_bandit(bandit, seeds, costs)
    contextual_costs = _play_contextual_bandit(contextual, seeds, costs, shifts)

    policies = _RelaxPolicies.compare(
        np.asarray(omegas), costs, bandit_costs, bandit_arms, contextual_costs
    )
    plots = _relax_plots(ctx, policies, context_bins)
    summary = {
        **_relax_summary(policies),
        "cost_normaliser": normaliser,
        "cost_table_seconds": table_seconds,
    }
    return ExperimentOutput(
        table=_relax_table(policies, num_seeds, context_bins), summary=summary, plots=plots
    )


def _sor_cost_table(laplacian, shifts, rhs, omegas, rtol, max_steps) -> np.ndarray:
    """SOR iterations to `rtol` for every system `(laplacian + shift I) x = b` and every omega.

    **Returns:** an int array of shape (systems, omegas); `max_steps` where SOR did not converge.
    """
    eye = jnp.eye(laplacian.shape[0], dtype=laplacian.dtype)

    @jax.jit
    def cost_table(shifts, rhs, omegas):
        def one_system(shift, b):
            def one_omega(omega):
                solver = linear.SOR(omega=omega, rtol=rtol, atol=0.0, max_steps=max_steps)
                sol = linear.solve(laplacian + shift * eye, b, solver, throw=False)
                return sol.stats["num_steps"]

            return jax.vmap(one_omega)(omegas)

        # lax.map over systems, vmap over omegas: the whole table is one compiled program, and
        # memory holds one system's omegas at a time.
        return lax.map(lambda sb: one_system(*sb), (shifts, rhs))

    return np.asarray(cost_table(shifts, rhs, omegas))


def _play_bandit(bandit, seeds, costs) -> tuple[np.ndarray, np.ndarray]:
    """Run `bandit` over the sequence once per key of `seeds`, revealing only the cost of the
    omega it plays.

    **Returns:** `(costs, arms)`, each of shape (seeds, systems): the cost paid and the arm
    played at each round.
    """

    @jax.jit
    def play(key, costs):
        def round_(state, inputs):
            key, row = inputs
            arm, probs = bandit.propose(state, key)
            cost = row[arm]
            return bandit.update(state, arm, cost, probs), (cost, arm)

        keys = jax.random.split(key, costs.shape[0])
        return lax.scan(round_, bandit.init(), (keys, costs))[1]

    runs = [play(k, jnp.asarray(costs)) for k in seeds]
    paid = np.stack([np.asarray(c) for c, _ in runs]).astype(float)
    arms = np.stack([np.asarray(a) for _, a in runs])
    return paid, arms


def _play_contextual_bandit(contextual, seeds, costs, shifts) -> np.ndarray:
    """As `_play_bandit`, for a bandit that also sees each system's shift (its context).

    **Returns:** the costs paid, shape (seeds, systems).
    """

    @jax.jit
    def play(key, costs, shifts):
        def round_(state, inputs):
            key, row, shift = inputs
            arm, probs = contextual.propose(state, shift, key)
            cost = row[arm]
            return contextual.update(state, shift, arm, cost, probs), cost

        keys = jax.random.split(key, costs.shape[0])
        return lax.scan(round_, contextual.init(), (keys, costs, shifts))[1]

    return np.stack([np.asarray(play(k, jnp.asarray(costs), shifts)) for k in seeds]).astype(float)


@dataclasses.dataclass(frozen=True)
class _RelaxPolicies:
    """The per-system costs of every omega policy of Learning to Relax, side by side.

    Fixed policies have shape (systems,), the bandits (seeds, systems).
    """

    omegas: np.ndarray
    totals: np.ndarray  # total cost of each fixed omega
    best_arm: int
    best_fixed: np.ndarray  # the best fixed omega in hindsight
    instance_optimal: np.ndarray  # the best omega of each system (an oracle)
    uniform: np.ndarray  # the expected cost of an omega drawn uniformly at random
    bandit: np.ndarray
    bandit_arms: np.ndarray
    contextual: np.ndarray

    @classmethod
    def compare(cls, omegas, costs, bandit, bandit_arms, contextual) -> "_RelaxPolicies":
        """The baselines from the full cost table (systems, omegas), beside the bandits."""
        totals = costs.sum(axis=0).astype(float)
        best_arm = int(np.argmin(totals))
        return cls(
            omegas=omegas,
            totals=totals,
            best_arm=best_arm,
            best_fixed=costs[:, best_arm].astype(float),
            instance_optimal=costs.min(axis=1).astype(float),
            uniform=costs.mean(axis=1).astype(float),
            bandit=bandit,
            bandit_arms=bandit_arms,
            contextual=contextual,
        )

    def over_best_fixed(self, costs: np.ndarray, rounds: slice = slice(None)) -> float:
        """Total cost of `costs` over `rounds` (mean over seeds) / the best fixed omega's."""
        return float(costs[..., rounds].sum(axis=-1).mean() / self.best_fixed[rounds].sum())


def _relax_plots(ctx: RunContext, policies: _RelaxPolicies, context_bins: int) -> list[str]:
    """The running average cost of each policy, and the total cost of each fixed omega."""
    rounds = np.arange(1, policies.best_fixed.size + 1)

    def running_mean(x):
        return np.cumsum(x, axis=-1) / rounds

    best_omega = float(policies.omegas[policies.best_arm])
    plot_avg = line_plot(
        ctx.path("learning_to_relax_average_iterations.png"),
        {
            "bandit (mean of seeds)": (rounds, running_mean(policies.bandit).mean(axis=0)),
            f"contextual bandit, {context_bins} bins": (
                rounds,
                running_mean(policies.contextual).mean(axis=0),
            ),
            f"best fixed omega={best_omega:.3f}": (rounds, running_mean(policies.best_fixed)),
            "instance-optimal omega": (rounds, running_mean(policies.instance_optimal)),
            "uniformly random omega": (rounds, running_mean(policies.uniform)),
        },
        title="Learning to Relax: average SOR iterations per system",
        xlabel="systems solved",
        ylabel="average iterations so far",
        logx=True,  # the bandits learn over the first few dozen systems
    )
    plot_omega = line_plot(
        ctx.path("learning_to_relax_totals.png"),
        {"total iterations": (policies.omegas, policies.totals)},
        title="Total SOR iterations of each fixed omega over the sequence",
        xlabel="omega",
        ylabel="total iterations",
        logy=True,  # omega near 2 costs orders of magnitude more than the best
    )
    return [plot_avg, plot_omega]


def _relax_table(policies: _RelaxPolicies, num_seeds: int, context_bins: int) -> list[dict]:
    """One row per policy: its total SOR iterations over the sequence."""
    table = [
        {"policy": f"fixed omega={float(w):.3f}", "total_iterations": int(t)}
        for w, t in zip(policies.omegas, policies.totals, strict=True)
    ]
    table += [
        {
            "policy": "best fixed omega in hindsight",
            "total_iterations": int(policies.best_fixed.sum()),
        },
        {
            "policy": "instance-optimal omega (oracle)",
            "total_iterations": int(policies.instance_optimal.sum()),
        },
        {
            "policy": "uniformly random omega (expected)",
            "total_iterations": int(policies.uniform.sum()),
        },
        {
            "policy": f"Tsallis-INF bandit (mean of {num_seeds} seeds)",
            "total_iterations": int(round(policies.bandit.sum(axis=1).mean())),
        },
        {
            "policy": f"contextual bandit, {context_bins} shift bins (mean of {num_seeds} seeds)",
            "total_iterations": int(round(policies.contextual.sum(axis=1).mean())),
        },
    ]
    return table


def _relax_summary(policies: _RelaxPolicies) -> dict:
    """Headline ratios to the best fixed omega, overall and in the first and last quarter (how
    fast the bandits learn)."""
    quarter = policies.best_fixed.size // 4
    first, last = slice(None, quarter), slice(-quarter, None)
    bandit_total = policies.bandit.sum(axis=1)
    best_fixed_total = policies.best_fixed.sum()
    return {
        "best_fixed_omega": float(policies.omegas[policies.best_arm]),
        "best_fixed_total": int(best_fixed_total),
        "bandit_total_mean": float(bandit_total.mean()),
        "bandit_total_std": float(bandit_total.std()),
        "bandit_over_best_fixed": float(bandit_total.mean() / best_fixed_total),
        "bandit_over_best_fixed_first_quarter": policies.over_best_fixed(policies.bandit, first),
        "bandit_over_best_fixed_last_quarter": policies.over_best_fixed(policies.bandit, last),
        "contextual_over_best_fixed": float(
            policies.contextual.sum(axis=1).mean() / best_fixed_total
        ),
        "contextual_over_best_fixed_last_quarter": policies.over_best_fixed(
            policies.contextual, last
        ),
        "uniform_over_best_fixed": float(policies.uniform.sum() / best_fixed_total),
        "instance_optimal_over_best_fixed": float(
            policies.instance_optimal.sum() / best_fixed_total
        ),
        "bandit_plays_best_arm_last_quarter": float(
            np.mean(policies.bandit_arms[:, last] == policies.best_arm)
        ),
    }
