"""DPM-Solver, singlestep (Lu et al., "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic
Model Sampling in Around 10 Steps", NeurIPS 2022)."""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._core import check_option
from ._dpm_solver_pp import AbstractSinglestep
from ._multistep import AbstractMultistep
from ._sampler import AbstractSampler, finish_step, step_geometry


class DPMSolverState(eqx.Module):
    x: Array


class DPMSolver(AbstractSampler):
    """DPM-Solver-k: the singlestep exponential integrator in noise prediction.

    In lambda = log(alpha/sigma) the probability-flow ODE has the exact solution
    x_t = (alpha_t/alpha_s) x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-lambda} eps dlambda.
    DPM-Solver-1 is x_t = (alpha_t/alpha_s) x_s - sigma_t (e^h - 1) eps(x_s) (= DDIM);
    DPM-Solver-2 and -3 add intermediate evaluations at lambda_s + r h (r = 1/2; r = 1/3, 2/3)
    exactly as Algorithms 1 and 2 of the paper. Global order k, k model evaluations per step.
    A final step to sigma = 0 returns alpha(t) times the denoised sample.

    **Arguments:** `order` in {1, 2, 3} (default 3).

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 4)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    x0 = js.diffusion.sample(js.diffusion.DPMSolver(order=3), model, x_T, ts)
    assert x0.shape == (4, 3) and jnp.allclose(x0, 2.0, atol=0.05)
    assert js.diffusion.DPMSolver(order=3).num_evaluations(4) == 12
    ```
    """

    order: int = eqx.field(static=True, default=3)

    draws_noise = False
    evaluations_per_step = ("order", {1: 1, 2: 2, 3: 3})

    def __check_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"`order` must be 1, 2 or 3, got {self.order!r}")

    def init(self, model, x_T, ts, key):
        return DPMSolverState(x_T)

    def step(self, model, ts, i, state):
        x = state.x
        sched = model.schedule
        g = step_geometry(sched, ts[i], ts[i + 1])
        h = g.h
        eps_s = model.eps(x, g.s)
        x0_s = (x - g.sigma_s * eps_s) / g.alpha_s

        def intermediate(r):
            s1 = sched.t_of_logsnr(g.lam_s + r * h)
            return s1, sched.alpha(s1), sched.sigma(s1)

        ratio = g.alpha_t / g.alpha_s
        if self.order == 1:
            x_next = ratio * x - g.sigma_t * jnp.expm1(h) * eps_s
        elif self.order == 2:
            r1 = 0.5
            s1, a1, sig1 = intermediate(r1)
            u = (a1 / g.alpha_s) * x - sig1 * jnp.expm1(r1 * h) * eps_s
            eps_1 = model.eps(u, s1)
            x_next = (
                ratio * x
                - g.sigma_t * jnp.expm1(h) * eps_s
                - g.sigma_t / (2.0 * r1) * jnp.expm1(h) * (eps_1 - eps_s)
            )
        else:
            r1, r2 = 1.0 / 3.0, 2.0 / 3.0
            s1, a1, sig1 = intermediate(r1)
            s2, a2, sig2 = intermediate(r2)
            u1 = (a1 / g.alpha_s) * x - sig1 * jnp.expm1(r1 * h) * eps_s
            d1 = model.eps(u1, s1) - eps_s
            u2 = (
                (a2 / g.alpha_s) * x
                - sig2 * jnp.expm1(r2 * h) * eps_s
                - sig2 * (r2 / r1) * (jnp.expm1(r2 * h) / (r2 * h) - 1.0) * d1
            )
            d2 = model.eps(u2, s2) - eps_s
            x_next = (
                ratio * x
                - g.sigma_t * jnp.expm1(h) * eps_s
                - g.sigma_t / r2 * (jnp.expm1(h) / h - 1.0) * d2
            )
        return DPMSolverState(finish_step(g, x_next, x0_s))

    def output(self, state):
        return state.x


class DPMSolverMultistep(AbstractMultistep):
    """Multistep DPM-Solver in noise prediction (diffusers' `algorithm_type="dpmsolver"`).

    As `DPMSolverPP` but extrapolating the noise prediction eps instead of the denoised sample,
    with the exact solution x_t = (alpha_t/alpha_s) x_s - alpha_t int e^{-lambda} eps dlambda:

    - k = 1: x_t = (alpha_t/alpha_s) x_s - sigma_t (e^h - 1) eps_0 (= DDIM);
    - k = 2: adds -sigma_t (e^h - 1) D1 / 2 (`solver_type="midpoint"`) or
      -sigma_t ((e^h - 1)/h - 1) D1 (`"heun"`), D1 = (eps_0 - eps_1) / r;
    - k = 3: -sigma_t (e^h - 1) eps_0 - sigma_t ((e^h - 1)/h - 1) D1 - w sigma_t
      ((e^h - 1 - h)/h^2 - 1/2) D2 with the divided differences of `DPMSolverPP`; `w = 2` for
      `third_order="taylor"` (default, order 3) and `w = 1` for `"reference"` (diffusers).

    First steps (and, below 15 steps with `lower_order_final`, the last ones) use lower orders;
    a final step to sigma = 0 returns alpha(t) times the denoised sample. One evaluation per
    step.

    **Arguments:** `order` in {1, 2, 3} (default 2), `lower_order_final` (default True),
    `solver_type` "midpoint" | "heun" (default "midpoint"), `third_order` "taylor" |
    "reference" (default "taylor").

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8)
    x0 = js.diffusion.sample(js.diffusion.DPMSolverMultistep(order=3), model, jnp.ones(3), ts)
    assert jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """

    order: int = eqx.field(static=True, default=2)
    lower_order_final: bool = eqx.field(static=True, default=True)
    solver_type: Literal["midpoint", "heun"] = eqx.field(static=True, default="midpoint")
    third_order: Literal["taylor", "reference"] = eqx.field(static=True, default="taylor")

    def __check_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"`order` must be 1, 2 or 3, got {self.order!r}")
        check_option("solver_type", self.solver_type, ("midpoint", "heun"))
        check_option("third_order", self.third_order, ("taylor", "reference"))

    def candidates(self, model, g, state):
        x = state.x
        x0, e0 = model.x0_and_eps(x, g.s)
        em1 = jnp.expm1(g.h)  # e^h - 1
        base = (g.alpha_t / g.alpha_s) * x - g.sigma_t * em1 * e0
        candidates = [base]
        if self.order >= 2:
            e1 = state.history[0]
            r0 = (g.lam_s - state.lams[0]) / g.h
            d1_0 = (e0 - e1) / r0
            if self.solver_type == "midpoint":
                candidates.append(base - 0.5 * g.sigma_t * em1 * d1_0)
            else:
                candidates.append(base - g.sigma_t * (em1 / g.h - 1.0) * d1_0)
        if self.order >= 3:
            e2 = state.history[1]
            r1 = (state.lams[0] - state.lams[1]) / g.h
            d1_1 = (e1 - e2) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            psi2 = em1 / g.h - 1.0
            psi3 = psi2 / g.h - 0.5  # (e^h - 1 - h)/h^2 - 1/2
            weight = 2.0 if self.third_order == "taylor" else 1.0
            candidates.append(base - g.sigma_t * psi2 * d1 - weight * g.sigma_t * psi3 * d2)
        return candidates, e0, x0


class DPMSolverSinglestep(AbstractSinglestep):
    """Singlestep DPM-Solver-2/3 in noise prediction on the sampling grid (diffusers'
    `DPMSolverSinglestepScheduler` with `algorithm_type="dpmsolver"`).

    `DPMSolverPPSinglestep`'s scheme (groups of `order` grid steps, each step of a group
    restarting from the group's start sample with the outputs at the group's points so far) on
    the noise prediction eps instead of the denoised sample: with s the group start,
    h = lambda_t - lambda_s > 0, psi_1 = e^h - 1, psi_2 = psi_1/h - 1, psi_3 = psi_2/h - 1/2
    and D the divided differences of eps at the group's points (fractions r_i of h),

    - order 1: x_t = (alpha_t/alpha_s) x_s - sigma_t psi_1 eps_s (= DDIM);
    - order 2: - sigma_t psi_1 D0 - sigma_t psi_1 D1 / 2 (`solver_type="midpoint"`) or
      - sigma_t psi_2 D1 (`"heun"`), D0 = eps_s, D1 = (eps_1 - eps_s)/r_1;
    - order 3: - sigma_t psi_1 D0 - sigma_t psi_2 D1 (midpoint, with the last point's
      difference) or - sigma_t psi_1 D0 - sigma_t psi_2 D1 - sigma_t psi_3 D2 (heun),

    as in Lu et al. 2022 (DPM-Solver, Algorithms 4-5). A final step to sigma = 0 returns
    alpha(t) times the denoised sample at the last point (diffusers computes 0 * inf there and
    returns NaN). One evaluation per step.

    **Arguments:** `order` in {1, 2, 3} (default 2), `solver_type` "midpoint" | "heun"
    (default "midpoint"), `lower_order_final` (default False; see `DPMSolverPPSinglestep`).

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 9)
    x0 = js.diffusion.sample(js.diffusion.DPMSolverSinglestep(order=3), model, jnp.ones(3), ts)
    assert jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """

    predict_x0 = False
