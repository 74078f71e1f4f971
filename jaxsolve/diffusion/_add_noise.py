"""The forward (noising) process of a schedule: x_t = alpha(t) x0 + sigma(t) noise."""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .._core import check_floating, check_shape
from ._schedules import AbstractSchedule


def add_noise(schedule: AbstractSchedule, x0: ArrayLike, noise: ArrayLike, t: ArrayLike) -> Array:
    """Noise clean samples to time `t`: `x_t = alpha(t) x0 + sigma(t) noise`.

    The training-time forward process of a diffusion model, and the start of image-to-image
    sampling (noise an image to `ts[0]`, then `sample` from there). For the schedule of
    `from_diffusers`, diffusers' `scheduler.add_noise(x0, noise, timesteps)` with integer
    training steps `k` is `add_noise(schedule, x0, noise, (k + 1) / T)` (T the number of
    training steps); on a grid `ts` of `from_diffusers`, `t = ts[i]` matches the `i`-th
    timestep of a multistep scheduler (which reads its own sigma grid there). Differentiable
    in `x0`, `noise`, `t` and the schedule's parameters; jit- and vmap-able.

    **Arguments:**

    - `schedule`: an `AbstractSchedule`.
    - `x0`: clean samples, any shape, floating point.
    - `noise`: standard normal noise, the shape of `x0`.
    - `t`: a scalar time, or one time per sample (a 1-D array of length `x0.shape[0]`,
      broadcast over the other axes).

    **Returns:** the noisy samples, the shape and dtype of `x0`.

    **Example:**

    ```python
    sched = js.diffusion.VPDiscrete.scaled_linear()
    x0, noise = jnp.ones((2, 3)), jnp.zeros((2, 3))
    x_t = js.diffusion.add_noise(sched, x0, noise, jnp.array([0.5, 1.0]))
    assert jnp.allclose(x_t[1], sched.alpha(1.0))  # no noise: alpha(t) x0
    ```
    """
    if not isinstance(schedule, AbstractSchedule):
        raise TypeError(f"`schedule` must be an AbstractSchedule, got {type(schedule).__name__}")
    x0, noise = jnp.asarray(x0), jnp.asarray(noise)
    check_floating("x0", x0)
    check_shape("noise", noise.shape, x0.shape, "x0")
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(x0.dtype)
    if t.ndim == 1:
        if x0.ndim == 0:
            raise ValueError("a 1-D `t` needs `x0` with a leading batch axis")
        check_shape("t", t.shape, x0.shape[:1], "the batch axis of x0")
        t = t.reshape(t.shape + (1,) * (x0.ndim - 1))
    elif t.ndim != 0:
        raise ValueError(f"`t` must be a scalar or 1-D (one time per sample), got shape {t.shape}")
    alpha = schedule.alpha(t).astype(x0.dtype)
    sigma = schedule.sigma(t).astype(x0.dtype)
    return alpha * x0 + sigma * noise.astype(x0.dtype)
