"""SDE-DPM-Solver++ (orders 1 and 2), its noise drawn from a virtual Brownian tree."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .. import brownian
from .._core import as_hyperparameter
from ._sampler import AbstractSampler, finish_step, lower_order, step_geometry


def _per_sample(fn, key, x, batch_ndim: int):
    """`fn(sample_key, event_shape)` for each sample, the key folded with the sample's index.

    So the noise of sample `j` depends on `(key, j)` only: the same key gives the same sample
    whatever the batch size.
    """
    batch_shape = x.shape[:batch_ndim]
    event_shape = x.shape[batch_ndim:]
    if batch_ndim == 0:
        return fn(key, event_shape)
    size = math.prod(batch_shape)
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(size, dtype=jnp.uint32))
    out = jax.vmap(lambda k: fn(k, event_shape))(keys)
    return out.reshape(batch_shape + event_shape)


def per_sample_normal(key, i, x, batch_ndim: int) -> Array:
    """Standard normal noise shaped like `x` for step `i`, independent of the batch size."""
    step_key = jax.random.fold_in(key, i)
    return _per_sample(
        lambda k, shape: jax.random.normal(k, shape, x.dtype), step_key, x, batch_ndim
    )


class _SDEState(eqx.Module):
    x: Array
    x0_prev: Array  # the previous data prediction (order 2)
    lam_prev: Array  # its log-SNR
    noise: Array  # (num_steps, *x.shape): each step's standard normal noise


class SDEDPMSolverPP(AbstractSampler):
    """SDE-DPM-Solver++: the exponential integrator of the reverse SDE in data prediction.

    Over a step `s → t` with `h = λ_t - λ_s` (`λ` = log-SNR), the reverse diffusion SDE has the
    exact variation-of-constants form

    `x_t = (σ_t/σ_s) e^{-h} x_s + 2 α_t ∫ e^{-2(λ_t-λ)} x̂0(λ) dλ + σ_t √(1 - e^{-2h}) z`.

    Order 1 freezes `x̂0`; order 2 (multistep, "2M") extrapolates it linearly from the previous
    step, integrating the linear term exactly: `+ α_t (1 - (1 - e^{-2h})/(2h)) D1`. The first
    step and (with `lower_order_final`, fewer than 15 steps) the last step use order 1. A final
    step to `σ = 0` returns the data prediction (no noise, no NaN).

    The noise `z` of a step is the increment of a Brownian motion in log-SNR time over the step,
    normalised, `z = (W(λ_t) - W(λ_s)) / √h`, taken from a `jaxsolve.brownian.VirtualBrownianTree`
    per sample whose key is `key` folded with the sample index: the same key gives the same
    sample whatever the batch size, and refining the grid refines one Brownian path.

    **Arguments:**

    - `order`: 1 or 2.
    - `lower_order_final`: first order on the last step of short runs (as DPM-Solver++).
    - `batch_ndim`: how many leading axes of `x_T` index independent samples (default 1).
    - `tol`: the Brownian tree's leaf length in log-SNR (steps longer than `tol` get noise with
      exactly the right law).
    - `logsnr_range`: the log-SNR interval `(low, high)` the Brownian tree spans; a step entirely
      outside it draws no noise. A static option (Python floats): it lays out the Brownian
      tree, i.e. which random numbers each step sees, so a new range is a new program.

    `tol` is an array field: a new value does not recompile. It must be concrete when the
    sampler is built, because it fixes the depth of the Brownian tree,
    `ceil(log2((high - low) / tol))`, a static int; the noise depends on `tol` only through
    that depth, so only a `tol` giving a new depth is a new program (and new noise). The tree
    itself is built inside the sampling run, so `ts` may be traced.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    # a coarse Brownian tree (tol in log-SNR) keeps this small example quick to compile
    sampler = js.diffusion.SDEDPMSolverPP(order=2, tol=0.1)
    x0 = js.diffusion.sample(sampler, model, x_T, ts, key=jax.random.key(1))
    assert x0.shape == (4, 3) and jnp.allclose(x0, 2.0, atol=0.05)
    ```

    **Reference:** Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver++: Fast Solver for Guided Sampling
    of Diffusion Probabilistic Models", 2022 (the SDE variant, Appendix); Gonzalez et al.,
    "SEEDS", 2023 for the exact noise term.
    """

    order: int = eqx.field(static=True)
    lower_order_final: bool = eqx.field(static=True)
    batch_ndim: int = eqx.field(static=True)
    tol: Array
    logsnr_range: tuple[float, float] = eqx.field(static=True)
    depth: int = eqx.field(static=True, init=False)  # of the Brownian tree, from the two above

    draws_noise = True
    evaluations_per_step = 1

    def __init__(
        self,
        order: int = 2,
        lower_order_final: bool = True,
        batch_ndim: int = 1,
        tol: float | ArrayLike = 1e-4,
        logsnr_range: tuple[float, float] = (-25.0, 25.0),
    ):
        if order not in (1, 2) or isinstance(order, bool):
            raise ValueError(f"`order` must be 1 or 2, got {order!r}")
        if not isinstance(batch_ndim, int) or isinstance(batch_ndim, bool) or batch_ndim < 0:
            raise ValueError(f"`batch_ndim` must be a non-negative int, got {batch_ndim!r}")
        tol = as_hyperparameter(tol)
        if isinstance(tol, jax.core.Tracer):
            raise ValueError(
                "`tol` must be concrete: it fixes the depth of the Brownian tree. Build the "
                "sampler outside `jit` and pass it in as an argument."
            )
        if jnp.shape(tol) != () or not float(tol) > 0:
            raise ValueError(f"`tol` must be a scalar > 0, got {tol}")
        low, high = (float(v) for v in logsnr_range)
        if not low < high:
            raise ValueError(f"`logsnr_range` must be increasing, got {logsnr_range}")
        self.order = order
        self.lower_order_final = lower_order_final
        self.batch_ndim = batch_ndim
        self.tol = tol
        self.logsnr_range = (low, high)
        # VirtualBrownianTree's own rule, so that the tree built in `_noise` has this depth.
        ratio = (high - low) / float(tol)
        self.depth = max(0, math.ceil(math.log2(ratio) - 1e-12)) if ratio > 1 else 0

    def init(self, model, x_T: ArrayLike, ts: Array, key: PRNGKeyArray | None = None):
        if key is None:
            raise ValueError("`key` is required: SDEDPMSolverPP draws noise")
        x_T = jnp.asarray(x_T)
        if x_T.ndim < self.batch_ndim:
            raise ValueError(
                f"`x_T` must have at least `batch_ndim`={self.batch_ndim} axes, got shape {x_T.shape}"
            )
        noise = self._noise(key, model.schedule.logsnr(jnp.asarray(ts, x_T.dtype)), x_T)
        return _SDEState(x_T, jnp.zeros_like(x_T), jnp.zeros((), x_T.dtype), noise)

    def _noise(self, key, lams, x):
        """Each step's noise `(W(λ_{i+1}) - W(λ_i)) / √h_i`, from one tree descent per sample.

        The noise is a reparameterisation: it is held fixed when differentiating with respect to
        the grid (the Brownian path has no derivative in time).
        """
        lo, hi = self.logsnr_range
        lams = jnp.clip(lax.stop_gradient(lams), lo, hi)  # a final sigma = 0 (+inf) clips too
        widths = lams[1:] - lams[:-1]
        positive = widths > 0
        # The tree's numbers depend on its tolerance only through its depth: a concrete leaf
        # length giving `self.depth` keeps the traced `tol` out of its (concrete) construction.
        leaf = (hi - lo) / 2.0**self.depth

        def one(k, event_shape):
            tree = brownian.VirtualBrownianTree(lo, hi, leaf, event_shape, k, dtype=x.dtype)
            return tree.increments(lams).W  # (num_steps, *event_shape)

        batch_shape = x.shape[: self.batch_ndim]
        event_shape = x.shape[self.batch_ndim :]
        if self.batch_ndim == 0:
            dw = one(key, event_shape)
        else:
            size = math.prod(batch_shape)
            indices = jnp.arange(size, dtype=jnp.uint32)
            keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(indices)
            dw = jax.vmap(lambda k: one(k, event_shape), out_axes=1)(keys)
            dw = dw.reshape((widths.shape[0], *batch_shape, *event_shape))
        scale = jnp.where(positive, 1 / jnp.sqrt(jnp.where(positive, widths, 1.0)), 0.0)
        return dw * scale.reshape((-1,) + (1,) * x.ndim)

    def step(self, model, ts: Array, i, state: _SDEState) -> _SDEState:
        x = state.x
        dtype = x.dtype
        geom = step_geometry(model.schedule, ts[i], ts[i + 1])
        x0 = model.x0(x, geom.s)
        h = geom.h
        decay = jnp.exp(-h)
        one_minus = -jnp.expm1(-2.0 * h)
        x_next = (geom.sigma_t / geom.sigma_s) * decay * x + geom.alpha_t * one_minus * x0
        if self.order == 2:
            k = lower_order(2, i, ts.shape[0] - 1, self.lower_order_final)
            h_prev = geom.lam_s - state.lam_prev
            safe_h_prev = jnp.where(k >= 2, h_prev, 1.0)
            d1 = (h / safe_h_prev) * (x0 - state.x0_prev)
            coeff = 1.0 - one_minus / (2.0 * h)
            x_next = x_next + jnp.where(k >= 2, geom.alpha_t * coeff, 0.0) * d1
        z = state.noise[i]
        x_next = x_next + geom.sigma_t * jnp.sqrt(one_minus) * z
        x_next = finish_step(geom, x_next, x0)
        return _SDEState(x_next, x0, geom.lam_s.astype(dtype), state.noise)

    def output(self, state: _SDEState) -> Array:
        return state.x
