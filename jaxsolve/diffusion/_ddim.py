"""DDIM (Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._sampler import AbstractSampler, finish_step, step_geometry


class DDIMState(eqx.Module):
    x: Array
    key: Array | None


class DDIM(AbstractSampler):
    """DDIM: x_t = alpha_t x0_hat + sqrt(sigma_t^2 - c^2) eps_hat + c z.

    `c = eta * sigma_t * sqrt(1 - exp(-2 h))` with h = lambda_t - lambda_s: `eta=0` is the
    deterministic DDIM (first-order exponential integrator of the probability-flow ODE, the same
    as `DPMSolver(order=1)`), `eta=1` is ancestral DDPM sampling. With `eta > 0` a `key` is
    needed; the noise of step i is drawn from `jax.random.fold_in(key, i)`.

    **Arguments:** `eta` in [0, 1] (default 0.0); traced, so a new value does not recompile.

    One model evaluation per step. Song, Meng & Ermon, "Denoising Diffusion Implicit Models",
    ICLR 2021.

    **Example:** `js.diffusion.sample(js.diffusion.DDIM(), model, x_T, ts)`.
    """

    eta: float | Array = 0.0

    def __check_init__(self):
        if not isinstance(self.eta, jax.core.Tracer):
            eta = np.asarray(self.eta)
            if eta.shape != () or not (0.0 <= float(eta) <= 1.0):
                raise ValueError(f"`eta` must be a scalar in [0, 1], got {self.eta}")

    def is_stochastic(self) -> bool:
        if isinstance(self.eta, jax.core.Tracer):
            return True
        return float(np.asarray(self.eta)) > 0.0

    def num_evaluations(self, num_steps: int) -> int:
        return num_steps

    def init(self, model, x_T, ts, key):
        return DDIMState(x_T, key if self.is_stochastic() else None)

    def step(self, model, state, i, ts):
        x = state.x
        geom = step_geometry(model.schedule, ts[i], ts[i + 1])
        x0, eps = model.x0_and_eps(x, geom.s)
        if state.key is None:
            x_next = geom.alpha_t * x0 + geom.sigma_t * eps
        else:
            frac = -jnp.expm1(-2.0 * geom.h)  # 1 - exp(-2h) in (0, 1]
            c = self.eta * geom.sigma_t * jnp.sqrt(frac)
            keep = geom.sigma_t * jnp.sqrt(1.0 - self.eta**2 * frac)
            z = jax.random.normal(jax.random.fold_in(state.key, i), x.shape, x.dtype)
            x_next = geom.alpha_t * x0 + keep * eps + c * z
        return DDIMState(finish_step(geom, x_next, x0), state.key)

    def output(self, state):
        return state.x
