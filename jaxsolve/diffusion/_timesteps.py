"""Time grids for sampling: decreasing, num_steps + 1 points, no zero-length steps."""

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._core import check_option
from ._schedules import AbstractSchedule

SPACINGS = ("logsnr", "uniform", "quadratic", "karras")


def timesteps(
    schedule: AbstractSchedule,
    num_steps: int,
    spacing: Literal["logsnr", "uniform", "quadratic", "karras"] = "logsnr",
    t_start: float | None = None,
    t_end: float | None = None,
    *,
    rho: float = 7.0,
    dtype=None,
) -> Float[Array, " num_steps+1"]:
    """A decreasing grid of `num_steps + 1` times from `t_start` (noisy) to `t_end` (clean).

    **Arguments:**

    - `schedule`: the noise schedule.
    - `num_steps`: a positive Python int, the number of sampler steps.
    - `spacing`:
        - `"logsnr"` (default): uniform in log-SNR lambda = log(alpha/sigma), the natural time of
          exponential integrators (Lu et al., DPM-Solver, 2022);
        - `"uniform"`: uniform in t (DDIM);
        - `"quadratic"`: t_i = (linspace(sqrt(t_start), sqrt(t_end)))^2 (DDIM's quadratic grid);
        - `"karras"`: EDM's sigma_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho
          in s = sigma/alpha = exp(-lambda), rho = 7 (Karras et al. 2022).
    - `t_start`, `t_end`: the interval; default the schedule's `t_start_default`,
      `t_end_default`. `"logsnr"` and `"karras"` need finite log-SNR at both ends; for an
      explicit final step to sigma = 0 append it: `jnp.append(ts, 0.0)`, or use `"uniform"` /
      `"quadratic"` with `t_end=0.0`.
    - `rho`: the Karras exponent.
    - `dtype`: the grid's dtype (default: JAX's default float).

    **Returns:** a 1-D array of `num_steps + 1` strictly decreasing times.

    Endpoints are placed exactly at `t_start` and `t_end`. The grid is differentiable with
    respect to the schedule's parameters and the endpoints, and may be built inside `jit` from a
    schedule passed in as an argument (its checks then run in `sample`, on the traced grid).

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    ts = js.diffusion.timesteps(sched, 10)  # uniform in log-SNR, from t = 1 to t = 1e-3
    assert ts.shape == (11,) and bool(jnp.all(jnp.diff(ts) < 0))
    assert jnp.allclose(jnp.diff(sched.logsnr(ts)), (sched.logsnr(1e-3) - sched.logsnr(1.0)) / 10)
    # EDM's grid, and a grid that ends with an explicit step to clean data (sigma = 0)
    karras = js.diffusion.timesteps(sched, 18, spacing="karras")
    to_zero = js.diffusion.timesteps(sched, 10, spacing="uniform", t_end=0.0)
    assert float(sched.sigma(to_zero[-1])) == 0.0
    ```
    """
    check_option("spacing", spacing, SPACINGS)
    if not isinstance(schedule, AbstractSchedule):
        raise TypeError(f"`schedule` must be an AbstractSchedule, got {type(schedule).__name__}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer) or num_steps < 1:
        raise ValueError(f"`num_steps` must be a positive Python int, got {num_steps!r}")
    num_steps = int(num_steps)
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    t_start = schedule.t_start_default if t_start is None else t_start
    t_end = schedule.t_end_default if t_end is None else t_end
    t0 = jnp.asarray(t_start, dtype)
    t1 = jnp.asarray(t_end, dtype)
    concrete = not isinstance(t0, jax.core.Tracer) and not isinstance(t1, jax.core.Tracer)
    if concrete and not float(t0) > float(t1):
        raise ValueError(
            f"`t_start` must be greater than `t_end` (sampling runs from noise to data), got "
            f"t_start={float(t0)}, t_end={float(t1)}"
        )
    u = jnp.arange(num_steps + 1, dtype=dtype) / num_steps
    if spacing == "uniform":
        ts = t0 + u * (t1 - t0)
    elif spacing == "quadratic":
        if concrete and float(t1) < 0:
            raise ValueError(f"`t_end` must be >= 0 for quadratic spacing, got {float(t1)}")
        ts = (jnp.sqrt(t0) + u * (jnp.sqrt(t1) - jnp.sqrt(t0))) ** 2
    else:
        lam0 = schedule.logsnr(t0)
        lam1 = schedule.logsnr(t1)
        # A schedule passed into `jit` has traced parameters: its log-SNR is traced too.
        concrete = concrete and not isinstance(lam0, jax.core.Tracer)
        if concrete and not (np.isfinite(float(lam0)) and np.isfinite(float(lam1))):
            raise ValueError(
                f"spacing={spacing!r} needs finite log-SNR at both ends, got logsnr(t_start)="
                f"{float(lam0)}, logsnr(t_end)={float(lam1)}; move the endpoint inside the "
                "schedule, or append a final sigma = 0 step with jnp.append(ts, 0.0)"
            )
        if spacing == "logsnr":
            lams = lam0 + u * (lam1 - lam0)
        else:
            inv = 1.0 / rho
            s_max, s_min = jnp.exp(-lam0 * inv), jnp.exp(-lam1 * inv)
            lams = -rho * jnp.log(s_max + u * (s_min - s_max))
        ts = schedule.t_of_logsnr(lams).astype(dtype)
    # Exact endpoints (t_of_logsnr(logsnr(t)) may differ from t in the last bit).
    ts = ts.at[0].set(t0).at[-1].set(t1)
    if concrete and not isinstance(ts, jax.core.Tracer):
        diffs = np.diff(np.asarray(ts))
        if not np.all(diffs < 0):
            raise ValueError(
                f"the {spacing!r} grid of {num_steps} steps on [{float(t1)}, {float(t0)}] has "
                "duplicate or zero-length steps in dtype "
                f"{dtype}; use fewer steps, a wider interval or float64"
            )
    return ts
