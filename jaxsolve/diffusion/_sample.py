"""`sample`: validate eagerly, then run a sampler's steps in `lax.scan`."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import RESULTS, check_floating, check_result, scan_steps
from ._model import Guidance, Model
from ._sampler import AbstractSampler


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def validate_sampling_inputs(sampler, model, x_T, ts, key, guidance):
    """The eager checks shared by `sample` and `invert`; returns (model, x_T, ts)."""
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(
            f"`sampler` must be a jaxsolve.diffusion sampler (an AbstractSampler), got "
            f"{type(sampler).__name__}"
        )
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a jaxsolve.diffusion.Model, got {type(model).__name__}")
    x_T = jnp.asarray(x_T)
    check_floating("x_T", x_T)
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"`ts` must be a 1-D array of at least 2 times, got shape {ts.shape}")
    check_floating("ts", ts)
    if _is_concrete(ts):
        values = np.asarray(ts, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("`ts` must be finite")
        if not np.all(np.diff(np.asarray(ts.astype(x_T.dtype), np.float64)) < 0):
            raise ValueError(
                "`ts` must be strictly decreasing (from noise to data) with no duplicate times "
                f"in the dtype of `x_T` ({x_T.dtype}), got {values}"
            )
    if guidance is not None:
        if not isinstance(guidance, Guidance):
            raise TypeError(
                f"`guidance` must be a jaxsolve.diffusion.Guidance or None, got "
                f"{type(guidance).__name__}"
            )
        model = model.guided(guidance)
    if sampler.is_stochastic() and key is None:
        raise ValueError(
            f"{type(sampler).__name__} is stochastic and needs a `key` (a jax.random key)"
        )
    # The grid follows the state's dtype: a float64 grid with float32 samples would promote.
    return model, x_T, ts.astype(x_T.dtype)


def sample(
    sampler: AbstractSampler,
    model: Model,
    x_T: ArrayLike,
    ts: Float[ArrayLike, " num_steps+1"],
    *,
    key: PRNGKeyArray | None = None,
    guidance: Guidance | None = None,
    checkpoint: bool = False,
    throw: bool = True,
) -> Array:
    """Draw a sample by running `sampler` along the decreasing time grid `ts`.

    **Arguments:**

    - `sampler`: any `AbstractSampler` (`DDIM()`, `DPMSolverPP(order=2)`, `UniPC()`, ...).
    - `model`: a `Model` (network, schedule, parameterisation).
    - `x_T`: the starting noise at time `ts[0]`, any shape (a batch is just a leading axis the
      network understands).
    - `ts`: 1-D, strictly decreasing, `num_steps + 1` times (see `timesteps`); cast to the dtype
      of `x_T`. The last time may have sigma = 0 (an explicit final denoising step).
    - `key`: a `jax.random` key, required by stochastic samplers.
    - `guidance`: optional classifier-free `Guidance(cond, uncond, scale)`; the model's `fn` is
      then called as `fn(x, t, cond)`.
    - `checkpoint`: rematerialise each step on the backward pass (memory O(1) steps' activations
      instead of O(num_steps)).
    - `throw`: raise (also under `jit`) if the sample is not finite; with `throw=False` a
      non-finite sample is returned as is.

    **Returns:** the sample at `ts[-1]`, shaped like `x_T`.

    Everything is a pure function of its inputs: `sample` can be jitted, vmapped (also over
    per-sample `ts`) and differentiated with respect to `x_T`, `ts` and model parameters.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    model = js.diffusion.Model(net, sched, prediction="eps")
    ts = js.diffusion.timesteps(sched, 10)
    x0 = js.diffusion.sample(js.diffusion.DPMSolverPP(order=2), model, x_T, ts)
    ```
    """
    model, x_T, ts = validate_sampling_inputs(sampler, model, x_T, ts, key, guidance)
    num_steps = ts.shape[0] - 1
    state = sampler.init(model, x_T, ts, key)

    def body(state, i):
        return sampler.step(model, state, i, ts), None

    state, _ = scan_steps(body, state, jnp.arange(num_steps), checkpoint=checkpoint)
    x = sampler.output(state)
    if not throw:
        return x
    finite = jnp.all(jnp.isfinite(x))
    result = RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)
    return check_result(x, result, throw, "jaxsolve.diffusion.sample")


def run_steps(sampler, model, state, ts):
    """Run all steps of `ts` from `state` (no validation); a building block for other drivers
    (`invert`)."""

    def body(state, i):
        return sampler.step(model, state, i, ts), None

    return lax.scan(body, state, jnp.arange(ts.shape[0] - 1))[0]
