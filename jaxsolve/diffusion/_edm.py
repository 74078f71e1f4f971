"""EDM's Euler and Heun samplers, with optional stochastic churn (Karras et al., 2022)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._core import hyperparameter
from ._sampler import AbstractSampler
from ._sde_dpm_solver_pp import per_sample_normal


class _EDMState(eqx.Module):
    x: Array
    key: PRNGKeyArray | None


def _check_churn(s_churn, s_tmin, s_tmax, s_noise):
    for name, value in (("s_churn", s_churn), ("s_tmin", s_tmin), ("s_noise", s_noise)):
        if not isinstance(value, jax.core.Tracer) and not float(value) >= 0:
            raise ValueError(f"`{name}` must be >= 0, got {float(value)}")
    if not isinstance(s_tmax, jax.core.Tracer) and not float(s_tmax) > 0:
        raise ValueError(f"`s_tmax` must be > 0, got {float(s_tmax)}")


def _churn_key(s_churn, key):
    """The key the churn draws from, or None for the deterministic sampler.

    Without a key the sampler is deterministic. A concrete positive churn without a key is an
    error; under `jit` (churn traced) a missing key simply means no churn.
    """
    if key is None:
        if not isinstance(s_churn, jax.core.Tracer) and float(s_churn) > 0:
            raise ValueError("`key` is required when `s_churn` > 0 (the churn adds noise)")
        return None
    if not isinstance(s_churn, jax.core.Tracer) and float(s_churn) == 0:
        return None
    return key


def _edm_step(sampler, model, ts, i, state, heun: bool):
    """One step of EDM's Algorithm 2 in the scaled variable x/alpha, noise level sigma/alpha.

    Working with `x̃ = x / α` and `σ̃ = σ / α` turns every schedule into the variance-exploding
    form of EDM, where the probability-flow ODE is `dx̃/dσ̃ = (x̃ - D(x̃)) / σ̃`.
    """
    schedule = model.schedule
    t, t_next = ts[i], ts[i + 1]
    x = state.x
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    alpha_next, sigma_next = schedule.alpha(t_next), schedule.sigma(t_next)
    sig, sig_next = sigma / alpha, sigma_next / alpha_next
    x_tilde = x / alpha

    num_steps = ts.shape[0] - 1
    key = state.key
    if key is not None:
        gamma = jnp.where(
            (sig >= sampler.s_tmin) & (sig <= sampler.s_tmax),
            jnp.minimum(sampler.s_churn / num_steps, math.sqrt(2.0) - 1.0),
            0.0,
        ).astype(x.dtype)
        sig_hat = sig * (1 + gamma)
        noise = per_sample_normal(key, i, x, sampler.batch_ndim)
        # sqrt(sig_hat^2 - sig^2) written so that its gradient is finite when gamma = 0.
        raised = gamma > 0
        spread = jnp.where(raised, jnp.sqrt(jnp.where(raised, gamma * (2 + gamma), 1.0)), 0.0)
        x_tilde = x_tilde + sig * spread * sampler.s_noise * noise
        # The model is evaluated at the time whose noise level is the raised one.
        t_hat = jnp.where(gamma > 0, schedule.t_of_logsnr(-jnp.log(sig_hat)), t).astype(t.dtype)
    else:
        sig_hat, t_hat = sig, t

    alpha_hat = schedule.alpha(t_hat)
    denoised = _denoise(model, alpha_hat * x_tilde, t_hat)
    slope = (x_tilde - denoised) / sig_hat
    x_next = x_tilde + (sig_next - sig_hat) * slope
    if heun:
        # EDM's rule: the step to sigma = 0 stays Euler. The double `where` keeps the unused
        # branch finite so that gradients stay free of NaN.
        positive = sig_next > 0
        safe_sig_next = jnp.where(positive, sig_next, 1.0)
        safe_t_next = jnp.where(positive, t_next, t_hat)
        safe_alpha = jnp.where(positive, alpha_next, alpha_hat)
        denoised_next = _denoise(model, safe_alpha * x_next, safe_t_next)
        slope_next = (x_next - denoised_next) / safe_sig_next
        x_heun = x_tilde + (sig_next - sig_hat) * 0.5 * (slope + slope_next)
        x_next = jnp.where(positive, x_heun, x_next)
    return _EDMState(alpha_next * x_next, key)


def _denoise(model, x, t):
    return model.x0(x, t)


class _AbstractEDM(AbstractSampler):
    """EDM's Algorithm 2 with its hyperparameters; `heun` chooses the second-order correction.

    Euler and Heun share every field, check and method; a final subclass only declares which
    step it takes and what that costs.
    """

    s_churn: Array = hyperparameter(0.0)
    s_tmin: Array = hyperparameter(0.0)
    s_tmax: Array = hyperparameter(float("inf"))
    s_noise: Array = hyperparameter(1.0)
    batch_ndim: int = eqx.field(static=True, default=1)

    heun: eqx.AbstractClassVar[bool]
    # Deterministic unless churn is on; a traced churn counts as on only with a key.
    draws_noise = "s_churn"

    def __check_init__(self):
        _check_churn(self.s_churn, self.s_tmin, self.s_tmax, self.s_noise)

    def init(self, model, x_T: ArrayLike, ts: Array, key: PRNGKeyArray | None = None):
        return _EDMState(jnp.asarray(x_T), _churn_key(self.s_churn, key))

    def step(self, model, ts: Array, i, state: _EDMState) -> _EDMState:
        return _edm_step(self, model, ts, i, state, heun=self.heun)

    def output(self, state: _EDMState) -> Array:
        return state.x


class EulerEDM(_AbstractEDM):
    """Euler's method on the probability-flow ODE in EDM's variables, with optional churn.

    In the scaled variables `x̃ = x/α`, `σ̃ = σ/α` the probability-flow ODE of any schedule is
    `dx̃/dσ̃ = (x̃ - D(x̃; σ̃))/σ̃` with `D` the denoiser (x0-prediction). Each step optionally
    raises the noise level first, `σ̂ = σ̃(1 + γ)` with `γ = min(s_churn/N, √2 - 1)` when
    `s_tmin <= σ̃ <= s_tmax`, adding fresh noise of variance `σ̂² - σ̃²` ("churn"), then takes
    an Euler step from `σ̂` to the next level. Without churn this is DDIM (first order).

    **Arguments:**

    - `s_churn`: the total amount of churn (0 gives a deterministic sampler).
    - `s_tmin`, `s_tmax`: churn is applied only for `σ̃` in this range.
    - `s_noise`: scales the added noise (slightly above 1 in EDM's image experiments).
    - `batch_ndim`: how many leading axes of `x_T` index independent samples (noise for a sample
      depends only on its index, not on the batch size).

    Hyperparameters are array fields: a new value does not recompile.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 10)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    x0 = js.diffusion.sample(js.diffusion.EulerEDM(), model, x_T, ts)
    assert x0.shape == (4, 3) and jnp.allclose(x0, 2.0, atol=0.05)
    # with churn it draws noise, and needs a key
    x0 = js.diffusion.sample(js.diffusion.EulerEDM(s_churn=10.0), model, x_T, ts,
                             key=jax.random.key(1))
    assert jnp.allclose(x0, 2.0, atol=0.05)
    ```

    **Reference:** Karras, Aittala, Aila, Laine, "Elucidating the Design Space of
    Diffusion-Based Generative Models", NeurIPS 2022, Algorithm 2.
    """

    heun = False
    evaluations_per_step = 1


class HeunEDM(_AbstractEDM):
    """Heun's second-order method on the probability-flow ODE (EDM), with optional churn.

    As [`EulerEDM`][], plus Heun's correction: after the Euler step to `σ̃_{i+1}` the denoiser is
    evaluated there and the two slopes are averaged. The step to `σ = 0` stays an Euler step
    (no model call at zero noise), so there is no NaN at the end. Two model calls per step
    (one on the final step to zero noise); second order without churn.

    **Arguments:** as [`EulerEDM`][].

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 18, spacing="karras")
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    x0 = js.diffusion.sample(js.diffusion.HeunEDM(), model, x_T, ts)
    assert x0.shape == (4, 3) and jnp.allclose(x0, 2.0, atol=0.05)
    assert js.diffusion.HeunEDM().num_evaluations(18) == 36
    ```

    **Reference:** Karras, Aittala, Aila, Laine, "Elucidating the Design Space of
    Diffusion-Based Generative Models", NeurIPS 2022, Algorithms 1 and 2.
    """

    heun = True
    evaluations_per_step = 2
