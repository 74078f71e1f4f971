"""DDIM (Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._core import hyperparameter
from ._model import dynamic_threshold
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

    **Arguments:** `eta` in [0, 1] (default 0.0); an array field, so a new value does not
    recompile. `stride` (default None): when given, step i goes from `ts[i]` to
    `ts[i] - stride` (the last step to `ts[-1]`) and the next step starts at `ts[i + 1]` with
    the same sample; `clip_sample` (default None): clip the denoised sample to
    [-clip_sample, clip_sample] (the noise prediction is kept); `threshold_ratio` (default
    None) and `sample_max_value` (default 1.0): Imagen's dynamic thresholding of the denoised
    sample per batch entry (leading axis; the noise prediction is kept). Both follow diffusers'
    `DDIMScheduler` semantics (`prev_timestep = t - T // n`),
    which differ from the grid when `timestep_spacing="linspace"` (or "trailing" with n not
    dividing T); `from_diffusers` sets it. A concrete `eta` decides in Python whether the sampler is stochastic; a traced
    one (the sampler passed into `jit`) uses the noise whenever a `key` is given (with
    `eta = 0` it then adds exactly nothing), and without a key it must be 0, which is checked
    at run time.

    One model evaluation per step. Song, Meng & Ermon, "Denoising Diffusion Implicit Models",
    ICLR 2021.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    x0 = js.diffusion.sample(js.diffusion.DDIM(), model, x_T, ts)
    assert x0.shape == (4, 3) and jnp.allclose(x0, 2.0, atol=0.05)
    # eta = 1 is ancestral (DDPM) sampling: it draws noise and needs a key
    x0 = js.diffusion.sample(js.diffusion.DDIM(eta=1.0), model, x_T, ts, key=jax.random.key(1))
    assert jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """

    eta: Array = hyperparameter(0.0)
    stride: Array | None = hyperparameter(None)
    clip_sample: Array | None = hyperparameter(None)
    threshold_ratio: Array | None = hyperparameter(None)
    sample_max_value: Array = hyperparameter(1.0)

    draws_noise = "eta"
    evaluations_per_step = 1

    def __check_init__(self):
        if jnp.shape(self.eta) != ():
            raise ValueError(f"`eta` must be a scalar in [0, 1], got shape {jnp.shape(self.eta)}")
        if not isinstance(self.eta, jax.core.Tracer) and not 0.0 <= float(self.eta) <= 1.0:
            raise ValueError(f"`eta` must be a scalar in [0, 1], got {float(self.eta)}")

    def _eta_is_traced(self) -> bool:
        return isinstance(self.eta, jax.core.Tracer)

    def init(self, model, x_T, ts, key):
        if self._eta_is_traced():
            if key is None:
                # The check rides on the scalar `eta` and reaches `x_T` through an exact `+ 0`:
                # carried on `x_T` itself, its host callback would gather a sharded batch onto
                # one device.
                eta = eqx.error_if(
                    self.eta,
                    self.eta != 0,
                    "jaxsolve.diffusion.DDIM: `eta` > 0 draws noise and needs a `key`",
                )
                x_T = x_T + jnp.zeros((), x_T.dtype) * eta.astype(x_T.dtype)
            return DDIMState(x_T, key)
        return DDIMState(x_T, key if self.is_stochastic() else None)

    def step(self, model, ts, i, state):
        x = state.x
        if self.stride is None:
            target = ts[i + 1]
        else:
            last = i == ts.shape[0] - 2
            target = jnp.where(last, ts[-1], ts[i] - self.stride.astype(ts.dtype))
        geom = step_geometry(model.schedule, ts[i], target)
        x0, eps = model.x0_and_eps(x, geom.s)
        if self.clip_sample is not None:
            bound = self.clip_sample.astype(x.dtype)
            x0 = jnp.clip(x0, -bound, bound)  # eps is kept, as in diffusers
        if self.threshold_ratio is not None:  # eps is kept, as in diffusers
            x0 = dynamic_threshold(x0, self.threshold_ratio, self.sample_max_value)
        if state.key is None:
            x_next = geom.alpha_t * x0 + geom.sigma_t * eps
        else:
            eta = self.eta.astype(x.dtype)
            frac = -jnp.expm1(-2.0 * geom.h)  # 1 - exp(-2h) in (0, 1]
            c = eta * geom.sigma_t * jnp.sqrt(frac)
            keep = geom.sigma_t * jnp.sqrt(1.0 - eta**2 * frac)
            z = jax.random.normal(jax.random.fold_in(state.key, i), x.shape, x.dtype)
            x_next = geom.alpha_t * x0 + keep * eps + c * z
        return DDIMState(finish_step(geom, x_next, x0), state.key)

    def output(self, state):
        return state.x
