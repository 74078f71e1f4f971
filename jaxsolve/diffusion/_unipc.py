"""UniPC (Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models", NeurIPS 2023)."""

from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._core import check_option
from ._history import init_history, push, select_order
from ._model import Model
from ._sampler import AbstractSampler, finish_step, lower_order, step_geometry


def check_unipc_options(order, variant) -> None:
    """The checks of the options UniPC shares with the samplers built on it (DC-Solver)."""
    if order not in (1, 2, 3):
        raise ValueError(f"`order` must be 1, 2 or 3, got {order!r}")
    check_option("variant", variant, ("bh1", "bh2"))


class UniPCState(eqx.Module):
    x: Array  # the predicted sample at ts[i] (not yet corrected)
    last_x: Array  # the corrected sample at ts[i - 1], where the previous step started
    history: Array  # model outputs (data or noise predictions) at ts[i - 1], ts[i - 2], ...
    lams: Array
    last_order: Array  # the order of the previous predictor step
    predictor: Any = None  # the state of `solver_p`, when it is the predictor


class _Recorded(eqx.Module):
    """A network that returns an output already computed, whatever its input."""

    out: Array

    def __call__(self, x, t):
        return self.out


class UniPC(AbstractSampler):
    """UniPC: the UniP-k predictor with the UniC corrector, in data (or noise) prediction.

    Step i evaluates the denoiser once at the predicted x_i. With `corrector=True` (and i > 0)
    that evaluation first corrects x_i (UniC: the previous step re-taken with the new
    evaluation included, which raises the order by one at no extra cost), then the UniP-k
    predictor uses it and the k - 1 previous evaluations to step to ts[i + 1]. The last step is
    not corrected (it would cost an extra evaluation). The coefficients solve the paper's
    linear system R rho = g(h) / B(h) with B(h) = h (`variant="bh1"`) or e^h - 1 ("bh2").

    Global order k + 1 with the corrector, k without. As for DPM-Solver++, the first steps (and
    the last ones, for fewer than 15 steps with `lower_order_final=True`) use lower orders; a
    final step to sigma = 0 returns alpha(t) times the denoised sample. One model evaluation
    per step.

    **Arguments:** `order` in {1, 2, 3} (default 2), `variant` "bh1" | "bh2" (default "bh2"),
    `corrector` (default True), `lower_order_final` (default True: the last orders are lowered
    for fewer than 15 steps; `"always"`: at any step count, as diffusers'
    `UniPCMultistepScheduler`, which at 25 steps ending at sigma_min is 10-50x more accurate
    than not lowering, per issue #13).

    Options of diffusers' `UniPCMultistepScheduler`:

    - `predict_x0` (default True): False runs UniPC on the noise prediction eps instead of the
      denoiser (the paper's UniPC with noise prediction): with h = lambda_t - lambda_s > 0,
      x_t = (alpha_t/alpha_s) x_s - sigma_t (e^h - 1) eps_s - sigma_t B(h) sum_m rho_m D_m,
      the same linear system with h in place of -h and B(h) = h or e^h - 1. Same orders. A final
      step to sigma = 0 returns alpha(t) (x_s - sigma_s eps_s) / alpha_s, the limit of the update
      (diffusers computes 0 * inf there and returns NaN).
    - `disable_corrector` (default `()`): the indices j of the steps whose prediction x_{j+1} is
      not corrected (diffusers' list of the same name, same indexing). The model output at
      x_{j+1} is still evaluated there and used by the following steps; the orders are unchanged.
    - `solver_p` (default None): a sampler whose step replaces the UniP predictor (UniC then
      corrects its result: "solver_p + UniC"). It must take one deterministic model evaluation
      per step and keep its sample in a state field `x` (DDIM, DPM-Solver(++), DEIS, PNDM, UniPC
      do). As in diffusers, its step receives the network output evaluated at the predicted
      sample x_i but starts from the corrected one (the output is converted to the data
      prediction with the corrected sample), and keeps its own history. No extra evaluation.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    x0 = js.diffusion.sample(js.diffusion.UniPC(order=2), model, x_T, ts)
    assert x0.shape == (4, 3) and jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """

    order: int = eqx.field(static=True, default=2)
    variant: Literal["bh1", "bh2"] = eqx.field(static=True, default="bh2")
    corrector: bool = eqx.field(static=True, default=True)
    lower_order_final: bool | Literal["always"] = eqx.field(static=True, default=True)
    predict_x0: bool = eqx.field(static=True, default=True)
    disable_corrector: tuple[int, ...] = eqx.field(
        static=True, default=(), converter=lambda d: tuple(int(j) for j in d)
    )
    solver_p: AbstractSampler | None = None

    draws_noise = False
    evaluations_per_step = 1

    def __check_init__(self):
        check_unipc_options(self.order, self.variant)
        if not isinstance(self.predict_x0, bool):
            raise TypeError(f"`predict_x0` must be a bool, got {self.predict_x0!r}")
        if any(j < 0 for j in self.disable_corrector):
            raise ValueError(
                f"`disable_corrector` must hold step indices >= 0, got {self.disable_corrector}"
            )
        if self.solver_p is not None:
            if not isinstance(self.solver_p, AbstractSampler):
                raise TypeError(f"`solver_p` must be a sampler, got {type(self.solver_p).__name__}")
            if self.solver_p.is_stochastic() or self.solver_p.num_evaluations(5) != 5:
                raise ValueError(
                    "`solver_p` must take one deterministic model evaluation per step, got "
                    f"{type(self.solver_p).__name__}"
                )
        if not isinstance(self.corrector, bool):
            raise TypeError(f"`corrector` must be a bool, got {self.corrector!r}")
        if self.lower_order_final not in (True, False, "always"):
            raise ValueError(
                "`lower_order_final` must be True, False or 'always', got "
                f"{self.lower_order_final!r}"
            )

    def init(self, model, x_T, ts, key):
        # The corrector of order k needs k - 1 outputs before the one it corrects with.
        history, lams = init_history(x_T, model.schedule.logsnr(ts[0]), self.order)
        predictor = None
        if self.solver_p is not None:
            predictor = self.solver_p.init(model, x_T, ts, None)
            if not (isinstance(predictor, jnp.ndarray) or hasattr(predictor, "x")):
                raise ValueError(
                    f"`solver_p` ({type(self.solver_p).__name__}) must keep its sample in a "
                    "state field `x`"
                )
        return UniPCState(x_T, x_T, history, lams, jnp.asarray(1), predictor)

    def _coefficients(self, h, rks, k):
        """b_n = h_phi_n n! / B(h), n = 1..k, and R[n, j] = rks[j]^n (hh = -h in data
        prediction, h in noise prediction)."""
        hh = -h if self.predict_x0 else h
        h_phi_1 = jnp.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        factorial = 1.0
        b_h = hh if self.variant == "bh1" else jnp.expm1(hh)
        rows, b = [], []
        for n in range(1, k + 1):
            rows.append(rks ** (n - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= n + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        return jnp.stack(rows), jnp.stack(b), h_phi_1, b_h

    def _update(self, g, x, m0, past, past_lams, k, model_t=None):
        """UniP-k (model_t None) or UniC-k (model_t given) from (x, m0) at s over g.h.
        `past`: k - 1 earlier outputs (newest first) with their log-SNRs."""
        h = g.h
        rks = [(lam - g.lam_s) / h for lam in past_lams] + [jnp.ones_like(h)]
        d1s = [(m - m0) / r for m, r in zip(past, rks[:-1])]
        rmat, b, h_phi_1, b_h = self._coefficients(h, jnp.stack(rks), k)
        if self.predict_x0:
            x_t_, scale = (g.sigma_t / g.sigma_s) * x - g.alpha_t * h_phi_1 * m0, g.alpha_t
        else:
            x_t_, scale = (g.alpha_t / g.alpha_s) * x - g.sigma_t * h_phi_1 * m0, g.sigma_t
        if model_t is None:
            if k == 1:
                return x_t_
            rhos = jnp.array([0.5], h.dtype) if k == 2 else jnp.linalg.solve(rmat[:-1, :-1], b[:-1])
            res = sum(rho * d for rho, d in zip(rhos, d1s))
            return x_t_ - scale * b_h * res
        rhos = jnp.array([0.5], h.dtype) if k == 1 else jnp.linalg.solve(rmat, b)
        res = sum((rho * d for rho, d in zip(rhos[:-1], d1s)), jnp.zeros_like(x))
        res = res + rhos[-1] * (model_t - m0)
        return x_t_ - scale * b_h * res

    def _corrects(self, i):
        """Whether step i corrects its starting sample x_i (the result of step i - 1)."""
        use = i > 0
        for j in self.disable_corrector:
            use = jnp.logical_and(use, i - 1 != j)
        return use

    def step(self, model, ts, i, state):
        sched = model.schedule
        num_steps = ts.shape[0] - 1
        x = state.x
        out, _ = model._out(x, ts[i])
        recorded = Model(_Recorded(out), sched, model.prediction)
        m_new = recorded.x0(x, ts[i]) if self.predict_x0 else recorded.eps(x, ts[i])
        if self.corrector:
            # Re-take the previous step ts[i-1] -> ts[i] with m_new included (UniC).
            g_prev = step_geometry(sched, ts[jnp.maximum(i - 1, 0)], ts[i])
            g_prev = g_prev._replace(h=jnp.where(i > 0, g_prev.h, 1.0))
            m_prev, lam_prev = state.history[0], state.lams[0]
            g_prev = g_prev._replace(lam_s=jnp.where(i > 0, g_prev.lam_s, lam_prev))
            cands = [
                self._update(
                    g_prev,
                    state.last_x,
                    m_prev,
                    list(state.history[1:k]),
                    list(state.lams[1:k]),
                    k,
                    model_t=m_new,
                )
                for k in range(1, self.order + 1)
            ]
            x_c = select_order(state.last_order, cands)
            x = jnp.where(self._corrects(i), x_c, x)
        history, lams = push(state.history, state.lams, m_new, sched.logsnr(ts[i]))
        g = step_geometry(sched, ts[i], ts[i + 1])
        if self.lower_order_final == "always":
            k = jnp.minimum(jnp.minimum(self.order, i + 1), num_steps - i)
        else:
            k = lower_order(self.order, i, num_steps, self.lower_order_final)
        k = jnp.asarray(k, state.last_order.dtype)
        if self.solver_p is not None:
            # The predictor's own step from the corrected x, fed the output at the predicted x.
            inner = state.predictor
            inner = x if isinstance(inner, jnp.ndarray) else eqx.tree_at(lambda s: s.x, inner, x)
            inner = self.solver_p.step(recorded, ts, i, inner)
            x_next = self.solver_p.output(inner)
            return UniPCState(x_next, x, history, lams, k, inner)
        cands = [
            self._update(g, x, m_new, list(history[1:k]), list(lams[1:k]), k)
            for k in range(1, self.order + 1)
        ]
        if self.predict_x0:
            x0 = m_new
        else:
            x0 = (x - sched.sigma(ts[i]) * m_new) / sched.alpha(ts[i])
        x_next = finish_step(g, select_order(k, cands), x0)
        return UniPCState(x_next, x, history, lams, k)

    def output(self, state):
        return state.x
