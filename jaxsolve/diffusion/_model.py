"""A diffusion model: a network plus its schedule and what it predicts, converted on demand."""

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .._core import check_option, hyperparameter
from ._schedules import AbstractSchedule

PREDICTIONS = ("eps", "x0", "v", "velocity", "score")


class Guidance(eqx.Module):
    """Classifier-free guidance (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2021).

    With guidance, the model's function is called as `fn(x, t, cond)` and `fn(x, t, uncond)`
    and the outputs are combined as `out_uncond + scale * (out_cond - out_uncond)`. Every
    parameterisation (eps, x0, v, velocity, score) is an affine function of the network output
    with coefficients that depend only on (x, t), so guiding the raw output is the same as
    guiding the noise prediction.

    **Arguments:**

    - `cond`: the conditioning input, any pytree (labels, embeddings, strings, modules); its
      array leaves are traced under `eqx.filter_jit`, the others are static.
    - `uncond`: the null conditioning input (any pytree `fn` accepts, e.g. `None`).
    - `scale`: the guidance weight w (1 = conditional model, 0 = unconditional); an array
      field, so a new value does not recompile.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction of data at `c` (the condition); `c = 0.0` is "unconditional"
    model = js.diffusion.Model(lambda x, t, c: (x - sched.alpha(t) * c) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8)
    guidance = js.diffusion.Guidance(cond=2.0, uncond=0.0, scale=3.0)
    x0 = js.diffusion.sample(js.diffusion.DDIM(), model, jnp.zeros(3), ts, guidance=guidance)
    assert jnp.allclose(x0, 0.0 + 3.0 * (2.0 - 0.0), atol=0.05)  # guided past the condition
    ```
    """

    cond: Any
    uncond: Any
    scale: Array = hyperparameter(1.0)


def check_output_shape(out, x, what: str):
    """Raise `ValueError` unless the network output `out` has the shape of `x`.

    Shapes are static, so this runs at trace time and holds under `jit` and `vmap` too, where a
    wrong shape would otherwise be broadcast silently into the sampler's arithmetic.
    """
    if jnp.shape(out) != jnp.shape(x):
        raise ValueError(
            f"the model's network `fn` must return an array shaped like `x` {jnp.shape(x)} "
            f"({what}), got shape {jnp.shape(out)}"
        )


class _GuidedFn(eqx.Module):
    fn: Callable
    guidance: Guidance

    def __call__(self, x, t):
        g = self.guidance
        out_cond = self.fn(x, t, g.cond)
        check_output_shape(out_cond, x, "with `cond`")
        out_uncond = self.fn(x, t, g.uncond)
        check_output_shape(out_uncond, x, "with `uncond`")
        return out_uncond + g.scale * (out_cond - out_uncond)


class Model(eqx.Module):
    """A denoising network with its noise schedule and parameterisation.

    **Arguments:**

    - `fn`: `fn(x, t) -> array shaped like x` (`fn(x, t, cond)` when used with `Guidance`).
      `t` is a scalar of x's dtype. Use an `equinox.Module` (e.g. a module wrapping an
      `eqx.nn.MLP`, or `jax.tree_util.Partial`) to hold trainable parameters: they are then
      leaves of the model, so `eqx.filter_jit` traces them and `eqx.filter_grad` differentiates
      `sample` with respect to them. An output of another shape than `x` raises `ValueError`
      (at trace time, so also under `jit`).
    - `schedule`: an `AbstractSchedule`, x_t = alpha(t) x_0 + sigma(t) eps.
    - `prediction`: what `fn` predicts:
        - `"eps"`: the noise eps;
        - `"x0"`: the clean data x_0 (the denoiser D);
        - `"v"`: v = alpha eps - sigma x_0 (Salimans & Ho, "Progressive Distillation", 2022);
        - `"velocity"`: dx_t/dt = alpha'(t) x_0 + sigma'(t) eps (flow matching / rectified flow);
        - `"score"`: grad log p_t(x) = -eps / sigma.

    Samplers ask for `eps`, `x0` or `velocity`; the conversions are exact identities of
    x = alpha x_0 + sigma eps.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    x, t = jnp.array([0.3, -1.0]), 0.5
    assert jnp.allclose(model.x0(x, t), 2.0)  # every parameterisation, converted exactly
    # the same data, as a network that predicts the clean sample
    same = js.diffusion.Model(lambda x, t: jnp.full_like(x, 2.0), sched, prediction="x0")
    assert jnp.allclose(same.eps(x, t), model.eps(x, t))
    assert jnp.allclose(same.velocity(x, t), model.velocity(x, t))
    ```
    """

    fn: Callable
    schedule: AbstractSchedule
    prediction: Literal["eps", "x0", "v", "velocity", "score"] = eqx.field(
        static=True, default="eps"
    )

    def __check_init__(self):
        check_option("prediction", self.prediction, PREDICTIONS)
        if not isinstance(self.schedule, AbstractSchedule):
            raise TypeError(
                "`schedule` must be a jaxsolve.diffusion schedule (an AbstractSchedule), got "
                f"{type(self.schedule).__name__}"
            )
        if not callable(self.fn):
            raise TypeError(f"`fn` must be callable, got {type(self.fn).__name__}")

    def guided(self, guidance: Guidance) -> "Model":
        """This model under classifier-free guidance (its `fn` must take `(x, t, cond)`)."""
        return Model(_GuidedFn(self.fn, guidance), self.schedule, self.prediction)

    def _out(self, x, t):
        t = jnp.asarray(t, jnp.result_type(x))
        out = self.fn(x, t)
        check_output_shape(out, x, "called as fn(x, t)")
        return out, t

    def x0_and_eps(self, x: ArrayLike, t: ArrayLike) -> tuple[Array, Array]:
        """The predicted clean data and noise at (x, t), from one network evaluation."""
        out, t = self._out(x, t)
        sched = self.schedule
        if self.prediction == "velocity":
            alpha, sigma, dalpha, dsigma = sched.alpha_sigma_derivatives(t)
            det = alpha * dsigma - sigma * dalpha
            return (dsigma * x - sigma * out) / det, (alpha * out - dalpha * x) / det
        alpha, sigma = sched.alpha(t), sched.sigma(t)
        if self.prediction == "eps":
            return (x - sigma * out) / alpha, out
        if self.prediction == "x0":
            return out, (x - alpha * out) / sigma
        if self.prediction == "score":
            eps = -sigma * out
            return (x - sigma * eps) / alpha, eps
        # v = alpha eps - sigma x0 and x = alpha x0 + sigma eps.
        norm = alpha * alpha + sigma * sigma
        return (alpha * x - sigma * out) / norm, (sigma * x + alpha * out) / norm

    def x0(self, x: ArrayLike, t: ArrayLike) -> Array:
        """The predicted clean data (denoiser) at (x, t)."""
        out, t = self._out(x, t)
        if self.prediction == "x0":
            return out
        return self._from(out, x, t)[0]

    def eps(self, x: ArrayLike, t: ArrayLike) -> Array:
        """The predicted noise at (x, t)."""
        out, t = self._out(x, t)
        if self.prediction == "eps":
            return out
        return self._from(out, x, t)[1]

    def _from(self, out, x, t):
        # Reuse x0_and_eps' algebra on an already computed output.
        return Model(lambda _x, _t: out, self.schedule, self.prediction).x0_and_eps(x, t)

    def velocity(self, x: ArrayLike, t: ArrayLike) -> Array:
        """The probability-flow ODE velocity dx/dt = alpha'(t) x0 + sigma'(t) eps at (x, t)."""
        out, t = self._out(x, t)
        if self.prediction == "velocity":
            return out
        x0, eps = self._from(out, x, t)
        _, _, dalpha, dsigma = self.schedule.alpha_sigma_derivatives(t)
        return dalpha * x0 + dsigma * eps

    def score(self, x: ArrayLike, t: ArrayLike) -> Array:
        """The score grad log p_t(x) = -eps / sigma at (x, t)."""
        out, t = self._out(x, t)
        if self.prediction == "score":
            return out
        return -self._from(out, x, t)[1] / self.schedule.sigma(t)


def dynamic_threshold(x0: Array, ratio, max_value) -> Array:
    """Imagen's dynamic thresholding of a denoised batch (Saharia et al. 2022), as diffusers.

    Per sample (leading axis), s = the `ratio` quantile of |x0| clipped to [1, max_value];
    x0 is clipped to [-s, s] and divided by s.
    """
    flat = jnp.reshape(x0, (x0.shape[0], -1))
    s = jnp.quantile(jnp.abs(flat), ratio, axis=1)
    s = jnp.clip(s, 1.0, max_value)[:, None]
    return jnp.reshape(jnp.clip(flat, -s, s) / s, x0.shape)


def thresholded(model: Model, ratio, max_value) -> Model:
    """`model` with its denoised sample dynamically thresholded (an x0-prediction `Model`)."""
    return Model(
        lambda x, t: dynamic_threshold(model.x0(x, t), ratio, max_value), model.schedule, "x0"
    )
