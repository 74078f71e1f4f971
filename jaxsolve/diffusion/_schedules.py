"""Noise schedules: x_t = alpha(t) x_0 + sigma(t) eps, with the log signal-to-noise ratio.

Every schedule gives `alpha`, `sigma`, `logsnr = log(alpha / sigma)` and its inverse
`t_of_logsnr` in closed form. Formulas are written so that float32 keeps full relative precision
near t = 0 (where sigma -> 0) and near the noisy end: `expm1`/`log1p`/`softplus` instead of
`1 - exp(...)`, and products of sines instead of `1 - cos^2`.
"""

import abc
import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._core import check_option, hyperparameter


class AbstractSchedule(eqx.Module):
    """A diffusion noise schedule on t in [0, 1]: `x_t = alpha(t) x_0 + sigma(t) eps`.

    Subclasses implement `alpha`, `sigma`, `logsnr` (= log(alpha/sigma), decreasing in t) and
    `t_of_logsnr` (its inverse), all elementwise on arrays, plus the default sampling interval
    `t_start_default` (noisy end) and `t_end_default` (clean end). A user-defined schedule
    subclasses this directly; every sampler works through these four functions only.

    Time lives in `DOMAIN = [0, 1]` for every schedule: `sample` rejects grids that leave it
    (eagerly, and under `jit` through a traced check). Float parameters are
    `jaxsolve._core.hyperparameter` fields (arrays), so a schedule passed to a jitted function
    with new values does not recompile, and gradients flow to them.

    **Example:**

    ```python
    class Karras(js.diffusion.AbstractSchedule):  # a user's own schedule: alpha = 1
        sigma_max: float = 80.0

        def alpha(self, t):
            return jnp.ones_like(jnp.asarray(t, float))

        def sigma(self, t):
            return self.sigma_max * jnp.asarray(t, float)

        def logsnr(self, t):
            return -jnp.log(self.sigma(t))

        def t_of_logsnr(self, logsnr):
            return jnp.exp(-jnp.asarray(logsnr, float)) / self.sigma_max

        t_start_default = 1.0
        t_end_default = 1e-4

    sched = Karras()
    model = js.diffusion.Model(lambda x, t: (x - 2.0) / sched.sigma(t), sched)  # data at 2.0
    ts = js.diffusion.timesteps(sched, 6)
    x0 = js.diffusion.sample(js.diffusion.HeunEDM(), model, 80.0 * jnp.ones(3), ts)
    assert jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """

    @abc.abstractmethod
    def alpha(self, t: ArrayLike) -> Array:
        """The signal coefficient alpha(t)."""

    @abc.abstractmethod
    def sigma(self, t: ArrayLike) -> Array:
        """The noise coefficient sigma(t)."""

    @abc.abstractmethod
    def logsnr(self, t: ArrayLike) -> Array:
        """log(alpha(t) / sigma(t)); +inf where sigma = 0."""

    @abc.abstractmethod
    def t_of_logsnr(self, logsnr: ArrayLike) -> Array:
        """The inverse of `logsnr`."""

    @property
    @abc.abstractmethod
    def t_start_default(self) -> float | Array:
        """The default start (noisiest) time of sampling (an array if it depends on traced
        parameters)."""

    @property
    @abc.abstractmethod
    def t_end_default(self) -> float | Array:
        """The default end (cleanest) time of sampling; sigma > 0 there."""

    def alpha_sigma_derivatives(self, t: ArrayLike) -> tuple[Array, Array, Array, Array]:
        """`(alpha, sigma, d alpha/dt, d sigma/dt)` at scalar `t` (forward-mode autodiff)."""
        t = jnp.asarray(t)
        (alpha, sigma), (dalpha, dsigma) = jax.jvp(
            lambda s: (self.alpha(s), self.sigma(s)), (t,), (jnp.ones_like(t),)
        )
        return alpha, sigma, dalpha, dsigma


DOMAIN = (0.0, 1.0)  # the time interval of every schedule
INTERPOLATIONS = ("log_alpha", "sigma", "log_sigma")


def _float(t):
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    return t


class VPLinear(AbstractSchedule):
    """The variance-preserving schedule with linear beta(t) (DDPM / score SDE, continuous time).

    `log alpha(t) = -beta_min t / 2 - (beta_max - beta_min) t^2 / 4`, `sigma = sqrt(1 - alpha^2)`.

    **Arguments:** `beta_min=0.1`, `beta_max=20.0` (Song et al., "Score-Based Generative Modeling
    through Stochastic Differential Equations", ICLR 2021); array fields, a new value does not
    recompile.

    Sampling runs by default from t = 1 to t = 1e-3; t = 0 (sigma = 0) is allowed as an
    explicit final step.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear(beta_min=0.1, beta_max=20.0)
    t = jnp.linspace(0.1, 0.9, 5)
    assert jnp.allclose(sched.alpha(t) ** 2 + sched.sigma(t) ** 2, 1.0)  # variance preserving
    assert jnp.allclose(sched.t_of_logsnr(sched.logsnr(t)), t)
    ```
    """

    beta_min: Array = hyperparameter(0.1)
    beta_max: Array = hyperparameter(20.0)

    def _neg_log_alpha2(self, t):
        t = _float(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def alpha(self, t):
        return jnp.exp(-0.5 * self._neg_log_alpha2(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(-self._neg_log_alpha2(t)))

    def logsnr(self, t):
        m = self._neg_log_alpha2(t)
        return -0.5 * m - 0.5 * jnp.log(-jnp.expm1(-m))

    def t_of_logsnr(self, logsnr):
        # alpha^2 / sigma^2 = e^{2 lam}  =>  m = -log alpha^2 = softplus(-2 lam); then the stable
        # root of (beta_max - beta_min) t^2 / 2 + beta_min t - m = 0.
        m = jax.nn.softplus(-2.0 * _float(logsnr))
        delta = self.beta_max - self.beta_min
        return 2.0 * m / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * delta * m))

    @property
    def t_start_default(self):
        return 1.0

    @property
    def t_end_default(self):
        return 1e-3


class VPCosine(AbstractSchedule):
    """The cosine variance-preserving schedule with log-SNR clipping.

    `alpha(t) = cos(theta_t) / cos(theta_0)`, `theta_t = (pi/2) (t + s) / (1 + s)`,
    `sigma = sqrt(1 - alpha^2)` (Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic
    Models", ICML 2021). At t = 1 alpha vanishes and the log-SNR is -inf, so the schedule is
    clipped: times after `t_max`, where the log-SNR reaches `logsnr_min`, are treated as `t_max`
    (the default `logsnr_min=-5.0` gives t_max ~= 0.9957, close to the 0.9946 that DPM-Solver
    uses in place of Improved DDPM's beta <= 0.999 clipping).

    **Arguments:** `s=0.008`, `logsnr_min=-5.0` (array fields: a new value does not recompile).

    **Example:**

    ```python
    sched = js.diffusion.VPCosine()
    t = jnp.linspace(0.0, 0.9, 4)
    assert jnp.allclose(sched.alpha(t) ** 2 + sched.sigma(t) ** 2, 1.0)
    assert jnp.allclose(sched.logsnr(1.0), -5.0, atol=1e-4)  # clipped at logsnr_min
    ```
    """

    s: Array = hyperparameter(0.008)
    logsnr_min: Array = hyperparameter(-5.0)

    def _theta(self, t):
        return 0.5 * math.pi * (t + self.s) / (1.0 + self.s)

    def _raw_t_of_logsnr(self, lam):
        theta0 = self._theta(0.0)
        sin_theta = jnp.sqrt(
            jnp.sin(theta0) ** 2 + jnp.cos(theta0) ** 2 * jax.nn.sigmoid(-2.0 * lam)
        )
        cos_theta = jnp.cos(theta0) * jnp.sqrt(jax.nn.sigmoid(2.0 * lam))
        theta = jnp.arctan2(sin_theta, cos_theta)
        return theta * (1.0 + self.s) / (0.5 * math.pi) - self.s

    @property
    def t_max(self):
        """The time after which the schedule is clipped (log-SNR = `logsnr_min`)."""
        return self._raw_t_of_logsnr(jnp.asarray(self.logsnr_min))

    def _clip(self, t):
        return jnp.minimum(_float(t), self.t_max)

    def alpha(self, t):
        return jnp.cos(self._theta(self._clip(t))) / jnp.cos(self._theta(0.0))

    def _sigma2(self, t):
        # 1 - cos^2(theta_t)/cos^2(theta_0) = sin(theta_t - theta_0) sin(theta_t + theta_0) / cos^2(theta_0)
        theta, theta0 = self._theta(t), self._theta(0.0)
        return jnp.sin(theta - theta0) * jnp.sin(theta + theta0) / jnp.cos(theta0) ** 2

    def sigma(self, t):
        return jnp.sqrt(self._sigma2(self._clip(t)))

    def logsnr(self, t):
        t = self._clip(t)
        return jnp.log(self.alpha(t)) - 0.5 * jnp.log(self._sigma2(t))

    def t_of_logsnr(self, logsnr):
        return self._raw_t_of_logsnr(jnp.maximum(_float(logsnr), self.logsnr_min))

    @property
    def t_start_default(self):
        t_max = self.t_max
        # Under `jit` with traced parameters the clipping time is only known at run time.
        return t_max if isinstance(t_max, jax.core.Tracer) else float(t_max)

    @property
    def t_end_default(self):
        return 1e-3


class VPDiscrete(AbstractSchedule):
    """A variance-preserving schedule given by discrete betas (DDPM, Stable Diffusion).

    `alpha_bar_k = prod_{j<=k} (1 - beta_j)` for k = 0..N-1 is placed at t = (k + 1) / N, with
    alpha = 1 at t = 0, and `log alpha_bar` is interpolated linearly in between (the
    continuous-time view of DPM-Solver, Lu et al. 2022). A network trained on integer steps k
    is called with `k = t * N - 1`.

    **Arguments:** `betas`, a 1-D array of the N per-step variances in (0, 1) (the last may be
    1: a zero terminal SNR, as `rescale_betas_zero_snr` makes); `interpolation` between the
    training steps: `"log_alpha"` (default, linear in log alpha_bar), `"sigma"` (linear in
    s = sigma/alpha, diffusers' Euler/Heun schedulers) or `"log_sigma"` (linear in log s,
    diffusers' Karras/exponential sigma grids); all three agree at the training steps. Constructors:
    `VPDiscrete.ddpm_linear(num_train_steps=1000, beta_start=1e-4, beta_end=0.02)` (Ho et al.
    2020) and `VPDiscrete.scaled_linear(num_train_steps=1000, beta_start=0.00085,
    beta_end=0.012)` (Stable Diffusion).

    **Example:**

    ```python
    sched = js.diffusion.VPDiscrete.scaled_linear()  # 1000 training steps
    alphas_cumprod = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    k = np.array([0, 499, 999])  # training step k sits at t = (k + 1) / 1000
    assert np.allclose(sched.alpha((k + 1) / 1000.0) ** 2, alphas_cumprod[k])
    ```
    """

    neg_log_alpha2: Array  # -log alpha_bar at t_grid, increasing, starting at 0
    t_grid: Array
    interpolation: Literal["log_alpha", "sigma", "log_sigma"] = eqx.field(
        static=True, default="log_alpha"
    )

    def __init__(self, betas: ArrayLike, interpolation: str = "log_alpha"):
        check_option("interpolation", interpolation, INTERPOLATIONS)
        self.interpolation = interpolation
        betas = jnp.asarray(betas)
        if betas.ndim != 1 or betas.shape[0] < 2:
            raise ValueError(f"`betas` must be a 1-D array of length >= 2, got shape {betas.shape}")
        if not jnp.issubdtype(betas.dtype, jnp.floating):
            betas = betas.astype(jnp.result_type(float))
        if not isinstance(betas, jax.core.Tracer):
            b = np.asarray(betas)
            if not (np.all(b > 0) and np.all(b[:-1] < 1) and b[-1] <= 1):
                raise ValueError(
                    "`betas` must lie in (0, 1); the last one may be 1 (zero terminal SNR)"
                )
        num = betas.shape[0]
        zero = jnp.zeros((1,), betas.dtype)
        self.neg_log_alpha2 = jnp.concatenate([zero, -jnp.cumsum(jnp.log1p(-betas))])
        self.t_grid = jnp.arange(num + 1, dtype=betas.dtype) / num

    @classmethod
    def ddpm_linear(cls, num_train_steps: int = 1000, beta_start=1e-4, beta_end=0.02):
        """DDPM's linear betas (Ho et al., 2020)."""
        return cls(np.linspace(beta_start, beta_end, num_train_steps))

    @classmethod
    def scaled_linear(cls, num_train_steps: int = 1000, beta_start=0.00085, beta_end=0.012):
        """Stable Diffusion's "scaled linear" betas: linear in sqrt(beta)."""
        return cls(np.linspace(beta_start**0.5, beta_end**0.5, num_train_steps) ** 2)

    def _m(self, t):
        # The tables follow the query's dtype (float32 queries stay float32).
        t = _float(t)
        grid, table = self.t_grid.astype(t.dtype), self.neg_log_alpha2.astype(t.dtype)
        # A final beta = 1 makes the last entry +inf: on the last interval alpha_bar is then
        # interpolated linearly (to 0 at t = 1) instead of its logarithm.
        zero_snr = jnp.isinf(table[-1])
        safe = table.at[-1].set(jnp.where(zero_snr, table[-2] + 1.0, table[-1]))
        m = jnp.interp(t, grid, safe)
        w = jnp.clip((t - grid[-2]) / (grid[-1] - grid[-2]), 0.0, 1.0)
        last = table[-2] - jnp.log1p(-w)
        return jnp.where(zero_snr & (t > grid[-2]), last, m)

    def _s_table(self, dtype):
        """s_k = sigma_k / alpha_k = sqrt(1/alpha_bar_k - 1) at `t_grid` (inf where beta = 1)."""
        return jnp.sqrt(jnp.expm1(self.neg_log_alpha2.astype(dtype)))

    def _log_s(self, t):
        """log(sigma/alpha) at t for the "sigma" and "log_sigma" interpolations."""
        t = _float(t)
        grid, s = self.t_grid.astype(t.dtype), self._s_table(t.dtype)
        lin = jnp.interp(t, grid, s)
        if self.interpolation == "sigma":
            return jnp.log(lin)
        # log-linear from the first training step on, linear in s on [0, t_1] (s = 0 at t = 0)
        safe_t = jnp.maximum(t, grid[1])
        log_lin = jnp.interp(safe_t, grid[1:], jnp.log(s[1:]))
        return jnp.where(t < grid[1], jnp.log(lin), log_lin)

    def alpha(self, t):
        if self.interpolation == "log_alpha":
            return jnp.exp(-0.5 * self._m(t))
        return jnp.exp(-0.5 * jax.nn.softplus(2.0 * self._log_s(t)))

    def sigma(self, t):
        if self.interpolation == "log_alpha":
            return jnp.sqrt(-jnp.expm1(-self._m(t)))
        return jnp.exp(-0.5 * jax.nn.softplus(-2.0 * self._log_s(t)))

    def logsnr(self, t):
        if self.interpolation != "log_alpha":
            return -self._log_s(t)
        m = self._m(t)
        return -0.5 * m - 0.5 * jnp.log(-jnp.expm1(-m))

    def t_of_logsnr(self, logsnr):
        lam = _float(logsnr)
        if self.interpolation == "log_alpha":
            m = jax.nn.softplus(-2.0 * lam)
            grid, table = self.t_grid.astype(m.dtype), self.neg_log_alpha2.astype(m.dtype)
            t = jnp.interp(m, table, grid)
            # the zero-terminal-SNR interval (see `_m`): alpha_bar linear in t
            w = -jnp.expm1(table[-2] - m)
            last = grid[-2] + w * (grid[-1] - grid[-2])
            return jnp.where(jnp.isinf(table[-1]) & (m > table[-2]), last, t)
        grid, s = self.t_grid.astype(lam.dtype), self._s_table(lam.dtype)
        if self.interpolation == "sigma":
            return jnp.interp(jnp.exp(-lam), s, grid)
        log_t = jnp.interp(-lam, jnp.log(s[1:]), grid[1:])
        return jnp.where(-lam < jnp.log(s[1]), jnp.interp(jnp.exp(-lam), s[:2], grid[:2]), log_t)

    @property
    def t_start_default(self):
        return 1.0

    @property
    def t_end_default(self):
        return 1.0 / (self.t_grid.shape[0] - 1)


class VE(AbstractSchedule):
    """The variance-exploding schedule: alpha = 1, sigma(t) = sigma_min (sigma_max/sigma_min)^t.

    **Arguments:** `sigma_min=0.002`, `sigma_max=80.0` (Song et al., ICLR 2021; defaults as in
    Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models", 2022);
    array fields, a new value does not recompile.

    **Example:**

    ```python
    sched = js.diffusion.VE(sigma_min=0.01, sigma_max=50.0)
    model = js.diffusion.Model(lambda x, t: (x - 2.0) / sched.sigma(t), sched)  # data at 2.0
    ts = js.diffusion.timesteps(sched, 8)
    x_T = 50.0 * jax.random.normal(jax.random.key(0), (4, 3))
    x0 = js.diffusion.sample(js.diffusion.DPMSolverPP(), model, x_T, ts)
    assert jnp.allclose(x0, 2.0, atol=0.1)
    ```
    """

    sigma_min: Array = hyperparameter(0.002)
    sigma_max: Array = hyperparameter(80.0)

    def _log_sigma(self, t):
        lo = jnp.log(jnp.asarray(self.sigma_min))
        hi = jnp.log(jnp.asarray(self.sigma_max))
        return lo + _float(t) * (hi - lo)

    def alpha(self, t):
        return jnp.ones_like(_float(t))

    def sigma(self, t):
        return jnp.exp(self._log_sigma(t))

    def logsnr(self, t):
        return -self._log_sigma(t)

    def t_of_logsnr(self, logsnr):
        lo = jnp.log(jnp.asarray(self.sigma_min))
        hi = jnp.log(jnp.asarray(self.sigma_max))
        return (-_float(logsnr) - lo) / (hi - lo)

    @property
    def t_start_default(self):
        return 1.0

    @property
    def t_end_default(self):
        return 0.0


class FlowMatching(AbstractSchedule):
    """The rectified-flow / flow-matching path: alpha = 1 - tau, sigma = tau.

    `tau(t) = shift t / (1 + (shift - 1) t)` is the resolution-dependent time shift of Esser et
    al. ("Scaling Rectified Flow Transformers", 2024); `shift=1` gives alpha = 1 - t,
    sigma = t (Liu et al., "Flow Straight and Fast", 2022; Lipman et al., "Flow Matching for
    Generative Modeling", 2022). Then `logsnr = log(1 - t) - log(t) - log(shift)`.

    The default sampling interval is [1e-3, 1 - 1e-3] (finite log-SNR at both ends, which the
    log-SNR spacing needs); Euler-type samplers may start at t = 1 and end at t = 0
    (`timesteps(..., spacing="uniform", t_start=1.0, t_end=0.0)`).

    **Example:**

    ```python
    sched = js.diffusion.FlowMatching()
    # the exact velocity when all data sit at 2.0: x = (1 - t) * 2.0 + t * eps
    model = js.diffusion.Model(lambda x, t: (x - 2.0) / t, sched, prediction="velocity")
    ts = js.diffusion.timesteps(sched, 4, spacing="uniform")  # from t = 0.999 to t = 0.001
    x0 = js.diffusion.sample(js.diffusion.EulerEDM(), model, jnp.ones(3), ts)
    assert jnp.allclose(x0, 2.0, atol=0.01)  # straight paths: Euler is exact
    ```
    """

    shift: Array = hyperparameter(1.0)

    def _tau(self, t):
        t = _float(t)
        return self.shift * t / (1.0 + (self.shift - 1.0) * t)

    def alpha(self, t):
        t = _float(t)
        return (1.0 - t) / (1.0 + (self.shift - 1.0) * t)

    def sigma(self, t):
        return self._tau(t)

    def logsnr(self, t):
        t = _float(t)
        return jnp.log1p(-t) - jnp.log(t) - jnp.log(jnp.asarray(self.shift, t.dtype))

    def t_of_logsnr(self, logsnr):
        lam = _float(logsnr)
        return jax.nn.sigmoid(-lam - jnp.log(jnp.asarray(self.shift, lam.dtype)))

    @property
    def t_start_default(self):
        return 1.0 - 1e-3

    @property
    def t_end_default(self):
        return 1e-3
