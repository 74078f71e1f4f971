"""A 2-D Gaussian mixture with its exact noised score: the analytic 'model' of the diffusion
experiments (no network, so sampler error is the only error)."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import diffusion


class GaussianMixture(eqx.Module):
    """Data p = sum_k w_k N(mu_k, S_k); at time t, x_t ~ sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I).

    `score(x, t)` is the exact score of the noised law; `eps` and `x0` are the noise prediction
    (-sigma * score) and the denoiser (Tweedie: (x + sigma^2 score) / alpha), so the mixture can
    stand for a perfectly trained model of either parameterisation.
    """

    schedule: diffusion.AbstractSchedule
    log_weights: jax.Array
    means: jax.Array
    covs: jax.Array

    def __init__(self, schedule, weights, means, covs, dtype=jnp.float64):
        self.schedule = schedule
        self.log_weights = jnp.log(jnp.asarray(weights, dtype))
        self.means = jnp.asarray(means, dtype)
        self.covs = jnp.asarray(covs, dtype)

    def score(self, x, t):
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        covs = a * a * self.covs + s * s * jnp.eye(self.means.shape[-1], dtype=self.covs.dtype)
        chol = jnp.linalg.cholesky(covs)
        diff = x[..., None, :] - a * self.means
        sol = jax.scipy.linalg.cho_solve((chol, True), diff[..., None])[..., 0]
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        logp = self.log_weights - 0.5 * jnp.sum(diff * sol, axis=-1) - 0.5 * logdet
        return -jnp.sum(jax.nn.softmax(logp, axis=-1)[..., None] * sol, axis=-2)

    def eps(self, x, t):
        return -self.schedule.sigma(t) * self.score(x, t)

    def x0(self, x, t):
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        return (x + s * s * self.score(x, t)) / a
