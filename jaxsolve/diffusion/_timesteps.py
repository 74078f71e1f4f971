"""Time grids for sampling: decreasing, num_steps + 1 points, no zero-length steps."""

import math
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


def _check_sigma_range(sigma_min, sigma_max, num):
    if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 1:
        raise ValueError(f"`num` must be a positive Python int, got {num!r}")
    lo, hi = jnp.asarray(sigma_min), jnp.asarray(sigma_max)
    if not isinstance(lo, jax.core.Tracer) and not isinstance(hi, jax.core.Tracer):
        if not 0 < float(lo) <= float(hi):
            raise ValueError(
                f"need 0 < sigma_min <= sigma_max, got sigma_min={float(lo)}, sigma_max={float(hi)}"
            )


def karras_sigmas(sigma_min, sigma_max, num: int, rho: float = 7.0, *, dtype=None) -> Array:
    """EDM's noise levels: `num` values from `sigma_max` down to `sigma_min`, uniform in
    `sigma^(1/rho)` (Karras et al., "Elucidating the Design Space of Diffusion-Based
    Generative Models", 2022, eq. 5).

    Noise levels are in the variance-exploding units `s = sigma/alpha = exp(-logsnr)`; turn
    them into times with `schedule.t_of_logsnr(-jnp.log(s))`. Differentiable in the endpoints.

    **Arguments:** `sigma_min`, `sigma_max` (0 < sigma_min <= sigma_max), `num` (a positive
    int), `rho` (default 7), `dtype` (default JAX's default float).

    **Returns:** a decreasing 1-D array of `num` noise levels (exact endpoints).

    **Example:**

    ```python
    s = js.diffusion.karras_sigmas(0.002, 80.0, 5)
    assert s.shape == (5,) and jnp.allclose(s[jnp.array([0, -1])], jnp.array([80.0, 0.002]))
    sched = js.diffusion.VPLinear()
    ts = sched.t_of_logsnr(-jnp.log(js.diffusion.karras_sigmas(0.01, 10.0, 8)))
    x0 = js.diffusion.sample(js.diffusion.HeunEDM(), js.diffusion.Model(
        lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched), jnp.ones(3), ts)
    assert jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """
    _check_sigma_range(sigma_min, sigma_max, num)
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    ramp = jnp.linspace(0.0, 1.0, num, dtype=dtype)
    lo = jnp.asarray(sigma_min, dtype) ** (1.0 / rho)
    hi = jnp.asarray(sigma_max, dtype) ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def exponential_sigmas(sigma_min, sigma_max, num: int, *, dtype=None) -> Array:
    """Noise levels uniform in `log sigma`: `num` values from `sigma_max` down to `sigma_min`.

    In the units `s = sigma/alpha` this is the grid uniform in log-SNR (DPM-Solver's
    "logSNR" spacing, Lu et al. 2022), which diffusers calls `use_exponential_sigmas` (and,
    for DPM-Solver, `use_lu_lambdas`). Differentiable in the endpoints.

    **Arguments:** `sigma_min`, `sigma_max` (0 < sigma_min <= sigma_max), `num` (a positive
    int), `dtype` (default JAX's default float).

    **Returns:** a decreasing 1-D array of `num` noise levels.

    **Example:**

    ```python
    s = js.diffusion.exponential_sigmas(0.01, 100.0, 5)
    assert jnp.allclose(s, jnp.array([100.0, 10.0, 1.0, 0.1, 0.01]))
    ```
    """
    _check_sigma_range(sigma_min, sigma_max, num)
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    lo = jnp.log(jnp.asarray(sigma_min, dtype))
    hi = jnp.log(jnp.asarray(sigma_max, dtype))
    return jnp.exp(jnp.linspace(hi, lo, num, dtype=dtype))


def _betainc_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        # the even and the odd coefficient of step m
        for coef in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + coef * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coef / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) in float64 (Python floats)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        a * math.log(x)
        + b * math.log1p(-x)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betainc_cf(a, b, x) / a
    return 1.0 - front * _betainc_cf(b, a, 1.0 - x) / b


def beta_ppf(q, a: float, b: float) -> np.ndarray:
    """The quantile function (inverse CDF) of the Beta(a, b) distribution, in float64 numpy.

    The incomplete beta function is evaluated by its continued fraction and inverted by
    bisection to the last bit (the same values as `scipy.stats.beta.ppf` to about 1e-15,
    without depending on scipy). Runs on concrete values, in Python: a grid builder, not a
    traced function.

    **Arguments:** `q`, probabilities in [0, 1] (scalar or array); `a`, `b` > 0.

    **Returns:** a float64 numpy array shaped like `q`.

    **Example:**

    ```python
    x = js.diffusion.beta_ppf([0.0, 0.5, 1.0], 0.6, 0.6)
    assert np.allclose(x, [0.0, 0.5, 1.0])  # symmetric: the median is 1/2
    ```
    """
    a, b = float(a), float(b)
    if not (a > 0 and b > 0):
        raise ValueError(f"Beta parameters must be > 0, got a={a}, b={b}")
    q = np.asarray(q, np.float64)
    if np.any(~((q >= 0) & (q <= 1))):
        raise ValueError("`q` must lie in [0, 1]")
    out = np.empty_like(q)
    for index, p in np.ndenumerate(q):
        lo, hi = 0.0, 1.0
        if p <= 0.0 or p >= 1.0:
            out[index] = float(p >= 1.0)
            continue
        while True:
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if _betainc(a, b, mid) < p:
                lo = mid
            else:
                hi = mid
        out[index] = hi
    return out


def beta_sigmas(
    sigma_min, sigma_max, num: int, alpha: float = 0.6, beta: float = 0.6, *, dtype=None
) -> Array:
    """Noise levels at the quantiles of a Beta(alpha, beta) law: `num` values from `sigma_max`
    down to `sigma_min` (Lee et al., "Beta Sampling is All You Need", 2024).

    `sigma_i = sigma_min + F^{-1}(1 - i/(num-1)) (sigma_max - sigma_min)` with `F` the Beta CDF
    (diffusers' `use_beta_sigmas`); with alpha = beta < 1 the steps cluster at both ends.
    Units and conversion to times as in `karras_sigmas`. The quantiles are computed eagerly
    (`beta_ppf`), so `alpha`, `beta` and `num` must be concrete; differentiable in the
    endpoints.

    **Arguments:** `sigma_min`, `sigma_max` (0 < sigma_min <= sigma_max), `num` (a positive
    int), `alpha`, `beta` (> 0, default 0.6), `dtype` (default JAX's default float).

    **Returns:** a decreasing 1-D array of `num` noise levels.

    **Example:**

    ```python
    s = js.diffusion.beta_sigmas(0.03, 14.6, 10)
    assert jnp.allclose(s[jnp.array([0, -1])], jnp.array([14.6, 0.03]))
    assert bool(jnp.all(jnp.diff(s) < 0))
    ```
    """
    _check_sigma_range(sigma_min, sigma_max, num)
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    q = 1.0 - np.linspace(0.0, 1.0, num)
    ppf = jnp.asarray(beta_ppf(q, alpha, beta), dtype)
    lo, hi = jnp.asarray(sigma_min, dtype), jnp.asarray(sigma_max, dtype)
    return lo + ppf * (hi - lo)


def shifted_flow_sigmas(sigmas, shift: float, kind: str = "shift") -> np.ndarray:
    """Flow-matching noise levels (times of `FlowMatching()`, sigma = t) moved by a time shift.

    - `kind="shift"`: `shift * s / (1 + (shift - 1) s)`, the resolution-dependent shift of
      Esser et al. ("Scaling Rectified Flow Transformers", 2024; diffusers' `flow_shift`), the
      same map as `FlowMatching(shift=shift)`'s `tau`;
    - `kind="exponential"`: `e^mu / (e^mu + 1/s - 1)` with `mu = shift` (diffusers' dynamic
      shifting, `mu` from the image size): the shift `e^mu`;
    - `kind="linear"`: `mu / (mu + 1/s - 1)` with `mu = shift`: the shift `mu`.

    Evaluated eagerly in float64 numpy (a grid builder; the formulas as diffusers evaluates
    them, for bitwise-close grids).

    **Arguments:** `sigmas`, levels in (0, 1]; `shift` (the shift, or `mu`); `kind`.

    **Returns:** the shifted levels (float64 numpy), still in (0, 1] and in the same order.

    **Example:**

    ```python
    s = np.linspace(1.0, 0.1, 4)
    shifted = js.diffusion.shifted_flow_sigmas(s, 3.0)
    assert np.allclose(shifted, js.diffusion.FlowMatching(shift=3.0).sigma(s))
    assert np.allclose(js.diffusion.shifted_flow_sigmas(s, np.log(3.0), "exponential"), shifted)
    ```
    """
    s = np.asarray(sigmas, np.float64)
    if kind == "shift":
        return shift * s / (1 + (shift - 1) * s)
    if kind == "exponential":
        return math.exp(shift) / (math.exp(shift) + (1 / s - 1) ** 1.0)
    if kind == "linear":
        return shift / (shift + (1 / s - 1) ** 1.0)
    raise ValueError(f"`kind` must be 'shift', 'exponential' or 'linear', got {kind!r}")


def stretched_flow_sigmas(sigmas, terminal: float) -> np.ndarray:
    """Flow-matching levels stretched so that the last one is `terminal` (diffusers'
    `shift_terminal`): `1 - (1 - s) (1 - terminal) / (1 - s[-1])`, first level kept at 1
    when it is 1.

    **Arguments:** `sigmas`, decreasing levels in (0, 1]; `terminal` in (0, 1).

    **Returns:** the stretched levels (float64 numpy).

    **Example:**

    ```python
    s = js.diffusion.stretched_flow_sigmas(np.linspace(1.0, 0.2, 5), 0.1)
    assert np.isclose(s[0], 1.0) and np.isclose(s[-1], 0.1)
    ```
    """
    s = np.asarray(sigmas, np.float64)
    one_minus = 1 - s
    return 1 - one_minus / (one_minus[-1] / (1 - terminal))
