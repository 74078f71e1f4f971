"""BOSS: Bellman-optimal step sizes, chosen by dynamic programming over a fine time grid."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core import check_floating
from ._dpm_solver_pp import DPMSolverPP
from ._model import Model
from ._sample import validate_sampling_inputs
from ._sampler import AbstractSampler
from ._timesteps import timesteps


def sample_path(sampler: AbstractSampler, model: Model, x_T: Array, ts: Array) -> Array:
    """The sampler's samples at every time of `ts`, stacked: shape `(len(ts), *x_T.shape)`
    (no validation; the caller has checked the inputs)."""
    state = sampler.init(model, x_T, ts, None)

    def body(state, i):
        state = sampler.step(model, ts, i, state)
        return state, sampler.output(state)

    _, path = jax.lax.scan(body, state, jnp.arange(ts.shape[0] - 1))
    return jnp.concatenate([x_T[None], path])


def euler_costs(model: Model, path: Array, ts: Array) -> Array:
    """`C[j, k]`: the mean (over the batch) local error of one frozen-prediction (DDIM) step
    from `path[j]` at `ts[j]` to `ts[k]`, for `k > j` (inf elsewhere). On `FlowMatching`
    (shift 1) that step is exactly Euler's `x + (t_k - t_j) v(x, t_j)`."""
    n = ts.shape[0]
    sched = model.schedule
    alphas = jax.vmap(sched.alpha)(ts)
    sigmas = jax.vmap(sched.sigma)(ts)
    extra = (1,) * (path.ndim - 1)

    def row(j):
        x0, eps = model.x0_and_eps(path[j], ts[j])
        moved = alphas.reshape(n, *extra) * x0 + sigmas.reshape(n, *extra) * eps
        # The norm of each sample's error (axis 0 of x_T is the batch), averaged over it.
        diff = (moved - path).reshape(n, path.shape[1], -1)
        err = jnp.mean(jnp.sqrt(jnp.sum(diff * diff, axis=-1)), axis=-1)
        return jnp.where(jnp.arange(n) > j, err, jnp.inf)

    return jax.lax.map(row, jnp.arange(n))


def bellman_path(costs: Array, num_steps: int) -> Array:
    """The indices `0 = p_0 < p_1 < ... < p_K = n - 1` (K = `num_steps`) minimising
    `sum_k costs[p_{k-1}, p_k]`: Bellman's recursion `D_s(m) = min_l D_{s-1}(l) + C[l, m]`."""
    n = costs.shape[0]
    start = jnp.full((n,), jnp.inf, costs.dtype).at[0].set(0.0)

    def forward(d, _):
        cand = d[:, None] + costs
        return jnp.min(cand, axis=0), jnp.argmin(cand, axis=0)

    _, argmins = jax.lax.scan(forward, start, None, length=num_steps)

    def backward(m, argmin):
        return argmin[m], argmin[m]

    _, previous = jax.lax.scan(backward, n - 1, argmins, reverse=True)
    return jnp.append(previous, n - 1)


def boss_timesteps(
    model: Model,
    x_T: ArrayLike,
    num_steps: int,
    *,
    num_fine: int = 100,
    spacing: str = "uniform",
    t_start: float | None = None,
    t_end: float | None = None,
    reference: AbstractSampler | None = None,
) -> Float[Array, " num_steps+1"]:
    """Bellman-optimal step sizes (BOSS) for `num_steps` first-order steps.

    A fine grid of `num_fine + 1` times (`timesteps(model.schedule, num_fine, spacing,
    t_start, t_end)`) is sampled accurately from the noise samples `x_T` with `reference`
    (default `DPMSolverPP(order=3)`). The cost of a step from fine time `t_j` to `t_k` is the
    batch-mean norm of the local error of a frozen-prediction step from the reference path,
    `E ||x(t_k) - [α(t_k) x̂0(x(t_j)) + σ(t_k) ε̂(x(t_j))]||`; on `FlowMatching` this is Euler's
    `x(t_k) - x(t_j) - (t_k - t_j) v(x(t_j), t_j)`, BOSS's cost (other schedules: DDIM's). The
    `num_steps`-step sub-grid minimising the summed local errors (a bound on the global error)
    is found exactly by dynamic programming, `O(num_steps num_fine^2)`. Sample with it using
    `DDIM()` (Euler on `FlowMatching`).

    Costs `num_fine` reference steps plus `num_fine + 1` model evaluations on the batch, once;
    the grid can be reused for any later noise. Jit-able (with `num_steps`, `num_fine`,
    `spacing` static); the grid is a subset of the fine grid, so it is not differentiable.

    **Arguments:**

    - `model`: the `Model` (e.g. a flow-matching velocity network with `FlowMatching`).
    - `x_T`: a batch of noise samples at `t_start`, shaped as `sample`'s `x_T`.
    - `num_steps`: the number of steps (= NFE for DDIM), `1 <= num_steps <= num_fine`.
    - `num_fine`, `spacing`, `t_start`, `t_end`: the fine grid the steps are chosen from.
    - `reference`: the deterministic sampler giving the reference paths on the fine grid.

    **Returns:** `num_steps + 1` decreasing times from `t_start` to `t_end`.

    **Example:**

    ```python
    sched = js.diffusion.FlowMatching()
    # Gaussian data N(1, 0.3) in 2-D: its exact denoiser, so its paths are curved
    def x0(x, t):
        a, s = sched.alpha(t), sched.sigma(t)
        return 1.0 + 0.3 * a * (x - a) / (0.3 * a**2 + s**2)
    model = js.diffusion.Model(x0, sched, prediction="x0")
    x_T = jax.random.normal(jax.random.key(0), (128, 2))
    ts = js.diffusion.boss_timesteps(model, x_T, 4, num_fine=50)
    assert ts.shape == (5,) and jnp.all(jnp.diff(ts) < 0)
    # Euler (DDIM) error against the exact flow, on new noise: BOSS beats uniform steps
    x_new = jax.random.normal(jax.random.key(1), (128, 2))
    fine = js.diffusion.timesteps(sched, 200, spacing="uniform")
    exact = js.diffusion.sample(js.diffusion.DPMSolverPP(order=3), model, x_new, fine)
    def error(ts):
        return jnp.mean(jnp.abs(js.diffusion.sample(js.diffusion.DDIM(), model, x_new, ts) - exact))
    assert error(ts) < error(js.diffusion.timesteps(sched, 4, spacing="uniform"))
    ```

    **Reference:** Nguyen, Nguyen, Nguyen, "Bellman Optimal Stepsize Straightening of
    Flow-Matching Models", ICLR 2024 (arXiv:2312.16414), Section 3.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"`num_steps` must be a positive int, got {num_steps!r}")
    if not isinstance(num_fine, int) or isinstance(num_fine, bool) or num_fine < num_steps:
        raise ValueError(
            f"`num_fine` must be an int >= `num_steps` ({num_steps}), got {num_fine!r}"
        )
    x_T = jnp.asarray(x_T)
    check_floating("x_T", x_T)
    if x_T.ndim == 0:
        raise ValueError("`x_T` must be a batch of noise samples (at least 1-D)")
    reference = DPMSolverPP(order=3) if reference is None else reference
    if reference.is_stochastic():
        raise ValueError(f"`reference` must be deterministic, got {type(reference).__name__}")
    fine = timesteps(model.schedule, num_fine, spacing, t_start, t_end, dtype=x_T.dtype)
    model, x_T, fine = validate_sampling_inputs(reference, model, x_T, fine, None, None)
    path = sample_path(reference, model, x_T, fine)
    indices = bellman_path(euler_costs(model, path, fine), num_steps)
    return fine[indices]
