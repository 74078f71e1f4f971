"""PNDM (Liu et al., "Pseudo Numerical Methods for Diffusion Models on Manifolds", ICLR 2022)."""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
from jax import lax

from .._core import check_option
from ._history import init_history, push, select_order
from ._multistep import MultistepState
from ._sampler import AbstractSampler, finish_step, step_geometry

# Adams-Bashforth coefficients (newest first) on a uniform grid, orders 1..4.
_AB = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def _transfer(sched, x, eps, s, t):
    """The DDIM transfer phi(x, eps, s -> t), the "pseudo" step of PNDM."""
    a_s, sig_s, a_t, sig_t = sched.alpha(s), sched.sigma(s), sched.alpha(t), sched.sigma(t)
    x0 = (x - sig_s * eps) / a_s
    return a_t * x0 + sig_t * eps


class PNDM(AbstractSampler):
    """PNDM: pseudo linear multistep (PLMS) with the DDIM transfer as the pseudo step.

    Each step moves x with DDIM's transfer phi(x, eps', s -> t), where eps' combines the last
    four noise predictions with the fixed Adams-Bashforth-4 weights (55, -59, 37, -9)/24. The
    first three steps need a warm-up: `warmup="prk"` (the paper's pseudo Runge-Kutta, four
    evaluations per step) or `warmup="plms"` (lower-order Adams-Bashforth weights, one
    evaluation per step) or `warmup="heun"` (diffusers' `PNDMScheduler(skip_prk_steps=True)`,
    the one Stable Diffusion pipelines use: a first pseudo improved-Euler step, two
    evaluations, averaging the noise predictions at both ends; then Adams-Bashforth orders
    2, 3, 4). The fixed weights assume a uniform grid (in t: use `spacing="uniform"`). A final
    step to sigma = 0 is the transfer itself: alpha(t) times the sample denoised with the
    combined noise (as diffusers does).

    `warmup="prk"` is diffusers' `PNDMScheduler(skip_prk_steps=False)`: its twelve warm-up
    calls are the 4 evaluations of each of the first three steps, at t_i, twice at the
    midpoint, and at t_{i+1} (the midpoint is diffusers' timestep t - T // (2 n), the exact
    half-step when T // n is even).

    `convert_output` says where a network that does not predict eps is converted to eps:
    `"each"` (default, the natural choice) converts every output at the point (x, t) where it
    was evaluated, then combines the noises; `"combined"` combines the raw outputs with the
    same weights and converts the combination once, at the step's start (x_s, s): what
    diffusers' `PNDMScheduler` does with `prediction_type="v_prediction"`
    (eps = alpha_s v + sigma_s x_s for the averaged v). The two differ for outputs evaluated
    elsewhere than (x_s, s): the Heun/RK stages and the past steps of the multistep formula
    (e.g. the Heun warm-up's second v, evaluated at the predicted x_{i+1} and t_{i+1}, is
    converted with alpha_s, sigma_s and x_s). For eps models both are the same.

    **Arguments:** `warmup` "prk" | "plms" | "heun" (default "prk"), `convert_output`
    "each" | "combined" (default "each").

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8, spacing="uniform")
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    x0 = js.diffusion.sample(js.diffusion.PNDM(), model, x_T, ts)
    assert x0.shape == (4, 3) and jnp.allclose(x0, 2.0, atol=0.05)
    assert js.diffusion.PNDM().num_evaluations(8) == 4 * 3 + 5
    ```
    """

    warmup: Literal["prk", "plms", "heun"] = eqx.field(static=True, default="prk")
    convert_output: Literal["each", "combined"] = eqx.field(static=True, default="each")

    draws_noise = False
    evaluations_per_step = ("warmup", {"prk": (4, 4, 4, 1), "plms": 1, "heun": (2, 1)})

    def __check_init__(self):
        check_option("warmup", self.warmup, ("prk", "plms", "heun"))
        check_option("convert_output", self.convert_output, ("each", "combined"))

    def init(self, model, x_T, ts, key):
        history, lams = init_history(x_T, model.schedule.logsnr(ts[0]), 3)
        return MultistepState(x_T, history, lams)

    def step(self, model, ts, i, state):
        sched = model.schedule
        x = state.x
        g = step_geometry(sched, ts[i], ts[i + 1])
        s, t = g.s, g.t
        if self.convert_output == "combined" and model.prediction != "eps":
            # raw outputs are combined, and converted at the step's start
            out0, _ = model._out(x, s)
            evaluate = lambda y, tau: model._out(y, tau)[0]  # noqa: E731
            to_eps = lambda out: model._from(out, x, s)[1]  # noqa: E731
        else:
            out0 = model.eps(x, s)
            evaluate, to_eps = model.eps, lambda out: out
        past = [out0] + [state.history[j] for j in range(3)]

        def plms(_):
            cands = [sum(c * e for c, e in zip(coef, past)) for coef in _AB]
            return select_order(jnp.minimum(i + 1, 4), cands)

        if self.warmup == "plms":
            combined = plms(None)
        elif self.warmup == "heun":

            def heun(_):
                e1 = evaluate(_transfer(sched, x, to_eps(out0), s, t), t)
                return 0.5 * (out0 + e1)

            combined = lax.cond(i == 0, heun, plms, None)
        else:

            def prk(_):
                mid = 0.5 * (s + t)
                e2 = evaluate(_transfer(sched, x, to_eps(out0), s, mid), mid)
                e3 = evaluate(_transfer(sched, x, to_eps(e2), s, mid), mid)
                e4 = evaluate(_transfer(sched, x, to_eps(e3), s, t), t)
                return (out0 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0

            combined = lax.cond(i < 3, prk, plms, None)
        eps_prime = to_eps(combined)
        x0 = (x - g.sigma_s * eps_prime) / g.alpha_s
        x_next = finish_step(g, _transfer(sched, x, eps_prime, s, t), x0)
        history, lams = push(state.history, state.lams, out0, g.lam_s)
        return MultistepState(x_next, history, lams)

    def output(self, state):
        return state.x
