"""DC-Solver: UniPC with dynamic compensation of its predictor-corrector misalignment."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float

from ._boss import sample_path
from ._dpm_solver_pp import DPMSolverPP
from ._history import select_order
from ._model import Model
from ._sample import validate_sampling_inputs
from ._sampler import AbstractSampler, finish_step, lower_order, step_geometry
from ._unipc import UniPC, UniPCState, check_unipc_options

# The compensation interpolates the latest three data predictions (a quadratic in t).
DC_ORDER = 2


def compensate(m, ts, i, ratio):
    """The Lagrange interpolant through `m[j]` at `ts[i - j]` (j = 0, 1, 2; `m` newest first),
    evaluated at `tau = ts[i - 1] + ratio (ts[i] - ts[i - 1])`; `ratio = 1` gives `m[0]`."""
    # Before the warm-up is over (masked out by the caller) the times are fake but distinct,
    # so that values and gradients stay finite.
    times = [
        jnp.where(i >= j, ts[jnp.maximum(i - j, 0)], ts[0] + jnp.asarray(j - i).astype(ts.dtype))
        for j in range(DC_ORDER + 1)
    ]
    tau = times[1] + ratio * (times[0] - times[1])
    out = jnp.zeros_like(m[0])
    for j in range(DC_ORDER + 1):
        weight = jnp.ones_like(tau)
        for k in range(DC_ORDER + 1):
            if k != j:
                weight = weight * (tau - times[k]) / (times[j] - times[k])
        out = out + weight * m[j]
    return out


class DCSolver(AbstractSampler):
    """DC-Solver: UniPC whose data prediction is dynamically compensated before each step.

    In a predictor-corrector sampler the model output at `t_i` is evaluated at the
    *predicted* sample, but the next step starts from the *corrected* one: the two are
    misaligned. DC-Solver replaces that output, once three are known, by the quadratic
    Lagrange interpolant (in t) of the latest three data predictions evaluated at
    `tau_i = t_{i-1} + rho_i (t_i - t_{i-1})`, the compensation ratio `rho_i` fitted per step
    (`fit_dc_ratios`) so that the sampler follows reference trajectories. `rho_i = 1` is
    plain UniPC (the first two steps are never compensated). No extra model evaluation.

    Built on `UniPC(order, variant)` (the corrector on, the last step uncorrected, lower orders
    on the final steps as in `UniPC`).

    **Arguments:**

    - `ratios`: the compensation ratios, one per step (`num_steps` = `len(ts) - 1`); an array
      field (new values do not recompile). Default: all 1 for any grid (plain UniPC).
    - `order`, `variant`: as for `UniPC`.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # Gaussian data N(1, 0.25): its exact denoiser
    model = js.diffusion.Model(
        lambda x, t: 1.0 + 0.25 * sched.alpha(t) * (x - sched.alpha(t))
        / (0.25 * sched.alpha(t) ** 2 + sched.sigma(t) ** 2), sched, prediction="x0")
    ts = js.diffusion.timesteps(sched, 8)
    x_fit = jax.random.normal(jax.random.key(0), (16, 2))  # a few reference trajectories
    dc = js.diffusion.fit_dc_ratios(js.diffusion.DCSolver(order=3), model, x_fit, ts)
    x_T = jax.random.normal(jax.random.key(1), (128, 2))
    fine = js.diffusion.timesteps(sched, 200)
    exact = js.diffusion.sample(js.diffusion.DPMSolverPP(order=3), model, x_T, fine)
    err = lambda s: jnp.mean(jnp.abs(js.diffusion.sample(s, model, x_T, ts) - exact))
    assert err(dc) < err(js.diffusion.UniPC(order=3))  # same 8 NFE, smaller error
    ```

    **Reference:** Zhao, Wang, Zhou, Lu, "DC-Solver: Improving Predictor-Corrector Diffusion
    Sampler via Dynamic Compensation", ECCV 2024 (arXiv:2409.03755), Section 3.2 (the
    cascade polynomial regression of the ratios, Section 3.3, is not implemented).
    """

    ratios: Array | None = eqx.field(
        default=None, converter=lambda r: None if r is None else jnp.asarray(r)
    )
    order: int = eqx.field(static=True, default=2)
    variant: str = eqx.field(static=True, default="bh2")

    draws_noise = False
    evaluations_per_step = 1

    def __check_init__(self):
        check_unipc_options(self.order, self.variant)
        if self.ratios is not None and jnp.ndim(self.ratios) != 1:
            raise ValueError(f"`ratios` must be 1-D, got shape {jnp.shape(self.ratios)}")

    def _unipc(self):
        return UniPC(order=self.order, variant=self.variant)

    def _ratio(self, ts, i):
        if self.ratios is None:
            return jnp.ones((), ts.dtype)
        return jnp.asarray(self.ratios, ts.dtype)[i]

    def init(self, model, x_T, ts, key=None):
        if self.ratios is not None and jnp.shape(self.ratios)[0] != ts.shape[0] - 1:
            raise ValueError(
                f"`ratios` has {jnp.shape(self.ratios)[0]} entries; the grid has "
                f"{ts.shape[0] - 1} steps"
            )
        return self._unipc().init(model, x_T, ts, key)

    def step(self, model, ts, i, state):
        # UniPC's step (see `UniPC.step`), with the data prediction at ts[i] compensated after
        # it has served the corrector, before the predictor and the history use it.
        base = self._unipc()
        sched = model.schedule
        num_steps = ts.shape[0] - 1
        x = state.x
        m_new = model.x0(x, ts[i])
        g_prev = step_geometry(sched, ts[jnp.maximum(i - 1, 0)], ts[i])
        g_prev = g_prev._replace(h=jnp.where(i > 0, g_prev.h, 1.0))
        g_prev = g_prev._replace(lam_s=jnp.where(i > 0, g_prev.lam_s, state.lams[0]))
        cands = [
            base._update(
                g_prev,
                state.last_x,
                state.history[0],
                list(state.history[1:k]),
                list(state.lams[1:k]),
                k,
                model_t=m_new,
            )
            for k in range(1, self.order + 1)
        ]
        x = jnp.where(i > 0, select_order(state.last_order, cands), x)
        # Dynamic compensation, once the latest three predictions are known.
        if state.history.shape[0] >= DC_ORDER:
            m_dc = compensate(
                [m_new, state.history[0], state.history[1]], ts, i, self._ratio(ts, i)
            )
            m_new = jnp.where(i >= DC_ORDER, m_dc, m_new)
        history = jnp.concatenate([m_new[None], state.history[:-1]], axis=0)
        lams = jnp.concatenate(
            [sched.logsnr(ts[i])[None].astype(state.lams.dtype), state.lams[:-1]]
        )
        g = step_geometry(sched, ts[i], ts[i + 1])
        cands = [
            base._update(g, x, m_new, list(history[1:k]), list(lams[1:k]), k)
            for k in range(1, self.order + 1)
        ]
        k = lower_order(self.order, i, num_steps, True)
        x_next = finish_step(g, select_order(k, cands), m_new)
        return UniPCState(x_next, x, history, lams, jnp.asarray(k, state.last_order.dtype))

    def output(self, state):
        return state.x


def fit_dc_ratios(
    sampler: DCSolver,
    model: Model,
    x_T: ArrayLike,
    ts: Float[ArrayLike, " num_steps+1"],
    *,
    substeps: int = 20,
    reference: AbstractSampler | None = None,
    num_iterations: int = 40,
    learning_rate: float = 0.1,
) -> DCSolver:
    """Fit `DCSolver`'s compensation ratios on a few reference trajectories (DC-Solver's search).

    The reference trajectories from the noise `x_T` are computed with `reference` (default
    `DPMSolverPP(order=3)`) on `ts` refined `substeps` times per interval. Step by step, the
    ratio `rho_i` is fitted by Adam (`num_iterations` iterations at `learning_rate`, from 1) to
    minimise the mean squared distance between the sampler's corrected sample at `ts[i + 1]`
    (its output after the last step) and the reference there, the earlier ratios fixed.

    **Arguments:** `sampler` (its `order`, `variant`), `model`, `x_T` (a small batch: the
    paper uses 10 samples), `ts` (the grid the ratios are for) and the search settings.

    **Returns:** the `DCSolver` with its fitted `ratios`.

    **Example** (a short search; `DCSolver`'s example measures the gain):

    ```python
    sched = js.diffusion.VPLinear()
    model = js.diffusion.Model(lambda x, t: jnp.tanh(x) * sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 5)
    x_fit = jax.random.normal(jax.random.key(0), (4, 2))
    dc = js.diffusion.fit_dc_ratios(js.diffusion.DCSolver(), model, x_fit, ts, num_iterations=5)
    assert dc.ratios.shape == (5,) and bool(jnp.all(dc.ratios[:2] == 1.0))
    ```
    """
    if not isinstance(sampler, DCSolver):
        raise TypeError(f"`sampler` must be a DCSolver, got {type(sampler).__name__}")
    if not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"`substeps` must be a positive int, got {substeps!r}")
    reference = DPMSolverPP(order=3) if reference is None else reference
    model, x_T, ts = validate_sampling_inputs(reference, model, x_T, ts, None, None)
    num_steps = ts.shape[0] - 1
    frac = jnp.linspace(0.0, 1.0, substeps + 1, dtype=ts.dtype)[:-1]
    fine = jnp.append((ts[:-1, None] + frac * (ts[1:, None] - ts[:-1, None])).ravel(), ts[-1])
    targets = sample_path(reference, model, x_T, fine)[::substeps]
    with_ratios = lambda ratios: DCSolver(ratios, order=sampler.order, variant=sampler.variant)
    optimizer = optax.adam(learning_rate)

    def loss(ratio, ratios, state, i, last):
        s = with_ratios(ratios.at[i].set(ratio))
        state = s.step(model, ts, i, state)
        # The corrected sample at ts[i + 1] needs the next step's evaluation (not its ratio);
        # the last step is not corrected.
        x = s.output(state) if last else s.step(model, ts, i + 1, state).last_x
        return jnp.mean((x - targets[i + 1]) ** 2)

    @functools.partial(jax.jit, static_argnums=3)
    def fit_one(ratios, state, i, last):
        def body(carry, _):
            ratio, opt_state = carry
            grad = jax.grad(loss)(ratio, ratios, state, i, last)
            updates, opt_state = optimizer.update(grad, opt_state)
            return (optax.apply_updates(ratio, updates), opt_state), None

        ratio = jnp.ones((), ts.dtype)
        (ratio, _), _ = jax.lax.scan(body, (ratio, optimizer.init(ratio)), None, num_iterations)
        return ratios.at[i].set(ratio)

    @jax.jit
    def advance(ratios, state, i):
        return with_ratios(ratios).step(model, ts, i, state)

    ratios = jnp.ones(num_steps, ts.dtype)
    state = with_ratios(ratios).init(model, x_T, ts, None)
    with jax.numpy_dtype_promotion("standard"):
        for i in range(num_steps):
            if i >= DC_ORDER:
                ratios = fit_one(ratios, state, jnp.asarray(i), i == num_steps - 1)
            state = advance(ratios, state, jnp.asarray(i))
    return with_ratios(ratios)
