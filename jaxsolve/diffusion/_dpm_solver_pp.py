"""DPM-Solver++ multistep (Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", 2022)."""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._core import check_option
from ._history import init_history, push, select_order
from ._multistep import AbstractMultistep
from ._sampler import AbstractSampler, finish_step, step_geometry


class DPMSolverPP(AbstractMultistep):
    """DPM-Solver++(kM): the multistep exponential integrator in data prediction.

    With lambda = log(alpha/sigma), h = lambda_t - lambda_s and D the denoiser, the exact
    solution x_t = (sigma_t/sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda D dlambda is
    approximated with D extrapolated from the last k grid points (k = `order`):

    - k = 1: x_t = (sigma_t/sigma_s) x_s - alpha_t phi_1 D_0, phi_1 = e^{-h} - 1 (= DDIM);
    - k = 2: adds -alpha_t phi_1 (D_0 - D_1) / (2 r), r = h_prev / h (2M);
    - k = 3: the third-order multistep update (3M) with phi_2 = phi_1/h + 1, phi_3 = phi_2/h - 1/2:
      x_t = (sigma_t/sigma_s) x_s - alpha_t phi_1 D_0 + alpha_t phi_2 D1 - 2 alpha_t phi_3 D2, with
      D1 ~ h D' and D2 = (D1_0 - D1_1)/(r_0 + r_1) ~ h^2 D''/2 the divided differences. The factor
      2 is the Taylor weight of D2 (integral of tau^2/2 e^{tau-h} = -h^2 phi_3); the widely copied
      reference multistep code uses `- alpha_t phi_3 D2`, which is only second order (our order
      test measures 2.0 with it and 3.0 with the factor).

    Global order k. The first steps use lower orders (not enough history) and, for fewer than
    15 steps with `lower_order_final=True`, so do the last ones (the stabilising choice of the
    paper). A final step to sigma = 0 returns alpha(t) times the denoised sample. One model
    evaluation per step. Data prediction makes it robust to large guidance scales.

    **Arguments:** `order` in {1, 2, 3} (default 2), `lower_order_final` (default True),
    `third_order`: `"taylor"` (default, the factor 2 above) or `"reference"` (the reference
    code's `- alpha_t phi_3 D2`, as diffusers' `DPMSolverMultistepScheduler`; order 2),
    `solver_type` of the 2M update: `"midpoint"` (default, `-alpha_t phi_1 D1 / 2`) or `"heun"`
    (`+alpha_t phi_2 D1`, with D1 = (D_0 - D_1)/r), as diffusers' option of that name;
    `min_step_ratio` (default None: off): a step whose ratio r = h_prev / h is below it is taken
    at first order (e.g. 0.5: a step more than twice as long in lambda as the previous one).

    Long last steps. On diffusers' linspace grid ending at sigma_min (t = 1/T) the last step is
    far longer in lambda than the others: at 25 steps (scaled_linear betas) h = 1.92 after
    steps of 0.40 and 0.27 (r = 0.21, r_1 = 0.14; h = 1.55, 1.22 at 50, 100 steps). Along the
    exact path D(lambda) approaches its limit like e^{-2 lambda} (Gaussian data), a variation on
    a lambda-scale of 1/2 that no polynomial extrapolated 2.7 times beyond its nodes follows:
    from the exact state, the local error of that step (data N(0.7, 0.6^2)) is 4.4e-2 at first
    order, 8.6e-2 with 2M, 1.6e-1 with the Taylor 3M and 4.6e-2 with the reference 3M (whose
    halved D2 term partly cancels the linear term's overshoot); on every earlier step the
    Taylor 3M has the smaller local error (e.g. 1.5e-4 vs 5.7e-4 at step 22). So the last step
    alone makes the Taylor 3M lose there (global 1.9e-1 vs 4.7e-2 at 25 steps);
    `min_step_ratio=0.5` takes that step at first order: 5.1e-2, 2.3e-2, 9.9e-3 at 25, 50, 100
    steps (reference 4.7e-2, 2.4e-2, 7.1e-3). Grids with slowly varying steps (Karras, log-SNR,
    uniform) never trigger it.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    x0 = js.diffusion.sample(js.diffusion.DPMSolverPP(order=2), model, x_T, ts)
    assert x0.shape == (4, 3) and jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """

    order: int = eqx.field(static=True, default=2)
    lower_order_final: bool = eqx.field(static=True, default=True)
    third_order: Literal["taylor", "reference"] = eqx.field(static=True, default="taylor")
    solver_type: Literal["midpoint", "heun"] = eqx.field(static=True, default="midpoint")
    min_step_ratio: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"`order` must be 1, 2 or 3, got {self.order!r}")
        check_option("third_order", self.third_order, ("taylor", "reference"))
        check_option("solver_type", self.solver_type, ("midpoint", "heun"))
        if self.min_step_ratio is not None and not 0.0 < self.min_step_ratio < 1.0:
            raise ValueError(
                f"`min_step_ratio` must be in (0, 1) or None, got {self.min_step_ratio}"
            )

    def candidates(self, model, g, state):
        x = state.x
        m0 = model.x0(x, g.s)
        phi1 = jnp.expm1(-g.h)
        base = (g.sigma_t / g.sigma_s) * x - g.alpha_t * phi1 * m0
        candidates = [base]
        if self.order >= 2:
            m1 = state.history[0]
            r0 = (g.lam_s - state.lams[0]) / g.h
            d1_0 = (m0 - m1) / r0
            if self.solver_type == "midpoint":
                candidates.append(base - 0.5 * g.alpha_t * phi1 * d1_0)
            else:  # the exact weight of a linear D: phi_2 = phi_1 / h + 1
                candidates.append(base + g.alpha_t * (phi1 / g.h + 1.0) * d1_0)
        if self.order >= 3:
            m2 = state.history[1]
            r1 = (state.lams[0] - state.lams[1]) / g.h
            d1_1 = (m1 - m2) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi2 = phi1 / g.h + 1.0
            phi3 = phi2 / g.h - 0.5
            # 2 * phi3: the Taylor weight of d2 ~ h^2 D''/2 (see the class docstring).
            weight = 2.0 if self.third_order == "taylor" else 1.0
            candidates.append(base + g.alpha_t * phi2 * d1 - weight * g.alpha_t * phi3 * d2)
        if self.min_step_ratio is not None and self.order >= 2:
            # a step much longer (in lambda) than the previous one: extrapolating D that far
            # is worse than not extrapolating it (see the class docstring): first order.
            long_step = (g.lam_s - state.lams[0]) / g.h < self.min_step_ratio
            candidates = [candidates[0]] + [jnp.where(long_step, base, c) for c in candidates[1:]]
        return candidates, m0, m0


class SinglestepState(eqx.Module):
    x: Array
    x_start: Array  # the sample where the current singlestep group started
    t_start: Array
    history: Array  # the denoised outputs of the previous steps, newest first
    lams: Array


def singlestep_orders(order: int, num_steps: int, lower_order_final: bool) -> list[int]:
    """diffusers' order schedule of singlestep DPM-Solver: groups (1, 2, ..., order) in turn,
    with `lower_order_final` ending on lower orders so that the last group completes."""
    groups, rest = divmod(num_steps, order)
    if not lower_order_final:
        return ([*range(1, order + 1)] * groups + [*range(1, rest + 1)])[:num_steps]
    if order == 3 and rest == 0:
        return [1, 2, 3] * (groups - 1) + [1, 2, 1]
    if order == 2 and rest == 0:
        return [1, 2] * (groups - 1) + [1, 1]
    return [*range(1, order + 1)] * groups + [*range(1, rest + 1)]


class AbstractSinglestep(AbstractSampler):
    """Diffusers' singlestep DPM-Solver(++) on the sampling grid: the fields, checks and loop
    shared by `DPMSolverPPSinglestep` (data prediction) and `DPMSolverSinglestep` (noise
    prediction); a subclass sets the class attribute `predict_x0`."""

    order: int = eqx.field(static=True, default=2)
    solver_type: Literal["midpoint", "heun"] = eqx.field(static=True, default="midpoint")
    lower_order_final: bool = eqx.field(static=True, default=False)

    draws_noise = False
    evaluations_per_step = 1
    predict_x0 = True

    def __check_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"`order` must be 1, 2 or 3, got {self.order!r}")
        check_option("solver_type", self.solver_type, ("midpoint", "heun"))

    def init(self, model, x_T, ts, key):
        history, lams = init_history(x_T, model.schedule.logsnr(ts[0]), 2)
        return SinglestepState(x_T, x_T, ts[0], history, lams)

    def step(self, model, ts, i, state):
        return singlestep_step(self, model, ts, i, state)

    def output(self, state):
        return state.x


class DPMSolverPPSinglestep(AbstractSinglestep):
    """Singlestep DPM-Solver++(2S/3S) on the sampling grid itself (diffusers' variant).

    The grid is cut into groups of `order` steps; within a group the update of its j-th step
    restarts from the sample at the group's start and uses the denoised outputs at the group's
    points so far (orders 1, 2, ..., `order`), so the intermediate points of the singlestep
    solver are grid points and every step costs one evaluation. With s the group start,
    h = lambda_t - lambda_s, r_i the fractions of h at the group's points and D the divided
    differences of the outputs, order 2 adds -alpha_t phi_1 D1 / 2 (`solver_type="midpoint"`)
    or alpha_t phi_2 D1 (`"heun"`); order 3 adds alpha_t phi_2 D1 (midpoint, with the last
    point's difference) or alpha_t phi_2 D1 - alpha_t phi_3 D2 (heun), as in Lu et al. 2022,
    DPM-Solver++ Algorithm 1 and diffusers' `DPMSolverSinglestepScheduler`. A final step to
    sigma = 0 returns alpha(t) times the denoised sample (order 1 there).

    **Arguments:** `order` in {1, 2, 3} (default 2), `solver_type` "midpoint" | "heun"
    (default "midpoint"), `lower_order_final` (default False; see `singlestep_orders`).

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 9)
    x0 = js.diffusion.sample(js.diffusion.DPMSolverPPSinglestep(order=3), model, jnp.ones(3), ts)
    assert jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """

    predict_x0 = True


def singlestep_step(sampler, model, ts, i, state):
    """One step of diffusers' singlestep DPM-Solver(++) on its grid (`DPMSolverPPSinglestep`,
    `DPMSolverSinglestep`), on the denoised sample (`sampler.predict_x0`) or on the noise
    prediction.

    With hh = -h (data) or h (noise), psi_1 = e^hh - 1, psi_2 = psi_1/hh - 1 and
    psi_3 = psi_2/hh - 1/2, both read x_t = c x_s - w (psi_1 D0 + psi_2 D1 + psi_3 D2) (terms up
    to the order; midpoint: psi_1/2 D1 at order 2, psi_2 D1 with the last point's difference
    at order 3), with (c, w) = (sigma_t/sigma_s, alpha_t) or (alpha_t/alpha_s, sigma_t)."""
    sched = model.schedule
    num_steps = ts.shape[0] - 1
    orders = singlestep_orders(sampler.order, num_steps, sampler.lower_order_final)
    k = jnp.asarray(orders)[i]
    predict_x0 = sampler.predict_x0
    x = state.x
    x0, eps = model.x0_and_eps(x, ts[i])
    m0 = x0 if predict_x0 else eps
    # the group starts here at order 1
    x_start = jnp.where(k == 1, x, state.x_start)
    t_start = jnp.where(k == 1, ts[i], state.t_start)
    g = step_geometry(sched, t_start, ts[i + 1])
    lam_0 = sched.logsnr(ts[i])
    hh = -g.h if predict_x0 else g.h
    psi1 = jnp.expm1(hh)
    psi2 = psi1 / hh - 1.0
    if predict_x0:
        base, w = (g.sigma_t / g.sigma_s) * x_start, g.alpha_t
    else:
        base, w = (g.alpha_t / g.alpha_s) * x_start, g.sigma_t
    cands = [base - w * psi1 * m0]
    midpoint = sampler.solver_type == "midpoint"
    if sampler.order >= 2:
        m1 = state.history[0]
        r0 = (lam_0 - g.lam_s) / g.h
        d1 = (m0 - m1) / r0
        coef = 0.5 * psi1 if midpoint else psi2
        cands.append(base - w * psi1 * m1 - w * coef * d1)
    if sampler.order >= 3:
        m2, m1 = state.history[1], state.history[0]
        r0 = (lam_0 - g.lam_s) / g.h
        r1 = (state.lams[0] - g.lam_s) / g.h
        d1_0, d1_1 = (m1 - m2) / r1, (m0 - m2) / r0
        three = base - w * psi1 * m2
        if midpoint:
            cands.append(three - w * psi2 * d1_1)
        else:
            d1 = (r0 * d1_0 - r1 * d1_1) / (r0 - r1)
            d2 = 2.0 * (d1_1 - d1_0) / (r0 - r1)
            psi3 = psi2 / hh - 0.5
            cands.append(three - w * psi2 * d1 - w * psi3 * d2)
    # a final step to sigma = 0: alpha(t) x0_hat(x_i) (the limit of the update at order 1)
    x_next = finish_step(g, select_order(k, cands), x0)
    history, lams = push(state.history, state.lams, m0, lam_0)
    return SinglestepState(x_next, x_start, t_start, history, lams)
