"""DPM-Solver-v3 (Zheng, Lu, Bao, Zhu, "DPM-Solver-v3: Improved Diffusion ODE Solver with
Empirical Model Statistics", NeurIPS 2023).

In log-SNR time lambda, with y = x / alpha, the probability-flow ODE reads
dy/dlambda = -(sigma/alpha) eps. For any per-element functions l, s, b of lambda (the
empirical model statistics, EMS) it can be rewritten exactly as

    dy/dlambda = -l y - f,        f = (sigma eps - l x) / alpha,
    f = e^{S(lambda)} (g + B(lambda)),  S = int_{lambda_s} s,  B = int_{lambda_s} e^{-S} b,

so that g' = e^{-S} (f' - s f - b). The solver integrates the linear part exactly and expands
only g in a Taylor series around the step's start; choosing l to minimise the size of the
Jacobian of f in x, and (s, b) to minimise the least-squares residual of f' against s f + b
along the trajectories, makes g as close to constant (and the model "as linear") as the
model's own statistics allow. l = 1, s = b = 0 gives f = -x0 and DPM-Solver++ back.
"""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import is_concrete
from ._history import init_history, push, select_order
from ._model import Model
from ._sampler import AbstractSampler, StepGeometry, finish_step, lower_order, step_geometry


def _trapezoid_cumulative(lams, values):
    """int_{lams[0]}^{lams[k]} of the piecewise-linear interpolant of `values` (exact)."""
    dl = jnp.reshape(lams[1:] - lams[:-1], (-1,) + (1,) * (values.ndim - 1))
    pieces = 0.5 * dl * (values[1:] + values[:-1])
    return jnp.concatenate([jnp.zeros_like(values[:1]), jnp.cumsum(pieces, axis=0)], axis=0)


class DPMSolverV3Statistics(eqx.Module):
    """The empirical model statistics (EMS) l, s, b of DPM-Solver-v3 on a log-SNR grid.

    Between grid points the statistics are the piecewise-linear interpolants of the values
    (constant beyond the grid's ends), and their integrals are computed exactly; any choice of
    l, s, b keeps the solver exact in the limit, so this interpolation costs accuracy only
    through how well the statistics linearise the model.

    **Arguments:**

    - `lams`: the strictly increasing log-SNRs lambda_k of the grid, shape (n,).
    - `l`, `s`, `b`: the statistics at the grid points, shape (n, *sample_shape) (per element
      of one sample; they broadcast against a batch with leading axes).

    The interpolants have kinks at the nodes, so a sample is only one-sidedly differentiable
    with respect to a sampling time that falls exactly on a node (gradients elsewhere are
    exact).

    Build them from a model and data with `dpm_solver_v3_statistics`; `l = 1, s = b = 0`
    everywhere makes `DPMSolverV3` a data-prediction (DPM-Solver++-type) multistep method.

    **Example:**

    ```python
    lams = jnp.linspace(-6.0, 8.0, 50)
    ones = jnp.ones((50, 3))
    stats = js.diffusion.DPMSolverV3Statistics(lams, ones, 0 * ones, 0 * ones)
    assert stats.value("l", jnp.asarray(0.3)).shape == (3,)
    ```
    """

    lams: Float[Array, " n"]
    l: Array
    s: Array
    b: Array
    l_cumulative: Array
    s_cumulative: Array

    def __init__(self, lams: ArrayLike, l: ArrayLike, s: ArrayLike, b: ArrayLike):
        lams = jnp.asarray(lams)
        l, s, b = jnp.asarray(l), jnp.asarray(s), jnp.asarray(b)
        if lams.ndim != 1 or lams.shape[0] < 2:
            raise ValueError(f"`lams` must be 1-D with at least 2 points, got shape {lams.shape}")
        for name, arr in (("l", l), ("s", s), ("b", b)):
            if arr.ndim < 1 or arr.shape[0] != lams.shape[0]:
                raise ValueError(
                    f"`{name}` must have shape (len(lams), *sample_shape), got {arr.shape}"
                )
        if not (l.shape == s.shape == b.shape):
            raise ValueError(f"`l`, `s`, `b` shapes differ: {l.shape}, {s.shape}, {b.shape}")
        if is_concrete(lams) and not np.all(np.diff(np.asarray(lams)) > 0):
            raise ValueError("`lams` must be strictly increasing")
        self.lams = lams
        self.l, self.s, self.b = l, s, b
        self.l_cumulative = _trapezoid_cumulative(lams, l)
        self.s_cumulative = _trapezoid_cumulative(lams, s)

    def _locate(self, lam):
        lams = self.lams
        n = lams.shape[0]
        clipped = jnp.clip(lam, lams[0], lams[-1])
        k = jnp.clip(jnp.searchsorted(lams, clipped, side="right") - 1, 0, n - 2)
        d = clipped - lams[k]
        width = lams[k + 1] - lams[k]
        return k, d, width, lam - clipped

    def _expand(self, v):
        """`v` with trailing unit axes for the sample's shape (to broadcast against l, s, b)."""
        return jnp.reshape(v, jnp.shape(v) + (1,) * (self.l.ndim - 1))

    def value(self, name: Literal["l", "s", "b"], lam: ArrayLike) -> Array:
        """The statistic `name` at log-SNR(s) `lam`: shape (*lam.shape, *sample_shape)."""
        arr = getattr(self, name)
        lam = jnp.asarray(lam, arr.dtype)
        k, d, width, _ = self._locate(lam)
        w = self._expand(d / width)
        return (1.0 - w) * arr[k] + w * arr[k + 1]

    def integral(self, name: Literal["l", "s"], lam: ArrayLike) -> Array:
        """int_{lams[0]}^{lam} of the statistic `name` (exact for the interpolant)."""
        arr = getattr(self, name)
        cum = getattr(self, f"{name}_cumulative")
        lam = jnp.asarray(lam, arr.dtype)
        k, d, width, excess = self._locate(lam)
        d_, w_, e_ = (self._expand(v) for v in (d, width, excess))
        inside = cum[k] + arr[k] * d_ + (arr[k + 1] - arr[k]) * d_ * d_ / (2.0 * w_)
        edge = jnp.where(e_ > 0, arr[-1], arr[0])
        return inside + edge * e_


def _gauss_legendre(num: int, dtype):
    nodes, weights = np.polynomial.legendre.leggauss(num)
    return jnp.asarray(nodes, dtype), jnp.asarray(weights, dtype)


class _StepIntegrals(eqx.Module):
    """The EMS integrals of one step lambda_s -> lambda_t (or towards a past point)."""

    stats: DPMSolverV3Statistics
    lam_s: Array
    l_s: Array  # int^{lambda_s} l (from the grid start)
    s_s: Array
    nodes: Array
    weights: Array

    def s_rel(self, lam):
        return self.stats.integral("s", lam) - self.s_s

    def l_rel(self, lam):
        return self.stats.integral("l", lam) - self.l_s

    def b_part(self, lam):
        """B(lam) = int_{lambda_s}^{lam} e^{-S(r)} b(r) dr for lam of shape (q,), by
        Gauss-Legendre on each [lambda_s, lam] (signed)."""
        half = 0.5 * (lam - self.lam_s)  # (q,)
        r = self.lam_s + half[:, None] * (self.nodes[None, :] + 1.0)  # (q, m)
        integrand = jnp.exp(-self.s_rel(r)) * self.stats.value("b", r)  # (q, m, *shape)
        w = self.stats._expand(half[:, None] * self.weights[None, :])
        return jnp.sum(w * integrand, axis=1)

    def g(self, f, lam):
        """g at a point lam (scalar) where the model gave f: e^{-S} f - B."""
        lam1 = jnp.reshape(lam, (1,))
        return jnp.exp(-self.s_rel(lam1))[0] * f - self.b_part(lam1)[0]

    def update(self, x_s, alpha_s, alpha_t, lam_t, coeffs):
        """x_t for g(lambda) = sum_k coeffs[k] (lambda - lambda_s)^k on the step."""
        h = lam_t - self.lam_s
        u = self.lam_s + 0.5 * h * (self.nodes + 1.0)  # (q,)
        wu = 0.5 * h * self.weights
        lt = self.l_rel(jnp.reshape(lam_t, (1,)))[0]
        kernel = jnp.exp(self.l_rel(u) - lt + self.s_rel(u))  # (q, *shape)
        wk = self.stats._expand(wu) * kernel
        rel = self.stats._expand(u - self.lam_s)
        y = jnp.exp(-lt) * x_s / alpha_s - jnp.sum(wk * self.b_part(u), axis=0)
        power = jnp.ones_like(rel)
        for c in coeffs:
            y = y - c * jnp.sum(wk * power, axis=0)
            power = power * rel
        return alpha_t * y


def _taylor_coefficients(g0, points, lam_s, pseudo: bool):
    """Coefficients c_0 = g0, c_1..c_n of g(lambda) ~ sum c_k (lambda - lambda_s)^k from the
    values `points` = [(g_j, lambda_j)], j = 1..n: the interpolating polynomial (Vandermonde
    solve) or, with `pseudo`, the Newton divided differences g[lambda_s, ..., lambda_k] used
    as if they were Taylor coefficients (the paper's pseudo-order: the k-th derivative from
    k + 1 points only, less accurate but more stable at very few steps)."""
    n = len(points)
    if n == 0:
        return [g0]
    if pseudo:
        lams = [lam_s] + [lam for _, lam in points]
        table = [g0] + [g for g, _ in points]
        coeffs = [g0]
        for order in range(1, n + 1):
            table = [
                (table[j + 1] - table[j]) / (lams[j + order] - lams[j])
                for j in range(len(table) - 1)
            ]
            coeffs.append(table[0])
        return coeffs
    deltas = jnp.stack([lam - lam_s for _, lam in points])  # (n,)
    vander = deltas[:, None] ** jnp.arange(1, n + 1, dtype=deltas.dtype)[None, :]
    rhs = jnp.stack([jnp.reshape(g - g0, (-1,)) for g, _ in points])  # (n, size)
    sol = jnp.linalg.solve(vander, rhs)
    return [g0] + [jnp.reshape(sol[k], g0.shape) for k in range(n)]


class DPMSolverV3State(eqx.Module):
    x: Array  # the predicted sample at ts[i] (not yet corrected)
    last_x: Array  # the (corrected) sample at ts[i - 1]
    history: Array  # f at ts[i - 1], ts[i - 2], ... (newest first)
    lams: Array
    last_order: Array


class DPMSolverV3(AbstractSampler):
    """DPM-Solver-v3: the multistep predictor-corrector solver on the EMS-reparameterised ODE.

    With the statistics l, s, b (`DPMSolverV3Statistics`), f = (sigma eps - l x) / alpha and
    g = e^{-S} f - B (see the module docstring), one step from lambda_s to lambda_t is

        x_t / alpha_t = e^{-(L_t - L_s)} x_s / alpha_s
                        - int e^{L(u) - L_t + S(u) - S_s} (B(u) + sum_k c_k (u - lambda_s)^k) du,

    with c_0 = g(lambda_s) and c_1..c_{k-1} from the previous k - 1 evaluations (the
    interpolating polynomial of g through them, or Newton divided differences with
    `predictor_pseudo=True`: the paper's pseudo-order). All integrals of the statistics are
    computed per step (exact piecewise-quadratic L and S, Gauss-Legendre with
    `quadrature_nodes` nodes for the outer and the nested B integral), so any grid `ts` works,
    traced or not, and gradients flow to `ts`, `x_T`, the model and the statistics.

    With `corrector=True` each evaluation at a predicted x_i first corrects it by re-taking
    the previous step with the new value included (the points used: the start, the new one
    and, for corrector order k, the k - 2 before the start; `corrector_order="same"`, the
    paper's default, keeps the previous predictor order, `"raise"` adds one point as UniC).
    The last step is not corrected. The first steps (and the last ones, for fewer than 15
    steps with `lower_order_final=True`) use lower orders; a final step to sigma = 0 returns
    alpha(t) times the denoised sample. One model evaluation per step.

    Statistics l = 1, s = b = 0 make the predictor the data-prediction multistep method
    DPM-Solver++(kM) with exact Taylor weights (for k = 2 `DPMSolverPP(solver_type="heun")`).

    **Arguments:**

    - `statistics`: a `DPMSolverV3Statistics` (see `dpm_solver_v3_statistics`); its log-SNR
      range should cover the sampling grid (the statistics are held constant beyond it).
    - `order` in {1, 2, 3} (default 3), `corrector` (default True), `corrector_order`
      "same" | "raise" (default "same"), `predictor_pseudo` (default False; the paper uses
      it at 5 NFE), `lower_order_final` (default True), `quadrature_nodes` (default 12).

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    data = 2.0 + 0.5 * jax.random.normal(jax.random.key(1), (256, 3))  # data ~ N(2, 0.25)
    model = js.diffusion.Model(
        lambda x, t: (x - sched.alpha(t) * 2.0) / (sched.sigma(t) + 0.25 * sched.alpha(t) ** 2
        / sched.sigma(t)), sched)
    stats = js.diffusion.dpm_solver_v3_statistics(
        model, data, js.diffusion.timesteps(sched, 100), key=jax.random.key(0))
    ts = js.diffusion.timesteps(sched, 6)
    x0 = js.diffusion.sample(js.diffusion.DPMSolverV3(stats), model, jnp.zeros((4, 3)), ts)
    assert jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """

    statistics: DPMSolverV3Statistics
    order: int = eqx.field(static=True, default=3)
    corrector: bool = eqx.field(static=True, default=True)
    corrector_order: Literal["same", "raise"] = eqx.field(static=True, default="same")
    predictor_pseudo: bool = eqx.field(static=True, default=False)
    lower_order_final: bool = eqx.field(static=True, default=True)
    quadrature_nodes: int = eqx.field(static=True, default=12)

    draws_noise = False
    evaluations_per_step = 1

    def __check_init__(self):
        if not isinstance(self.statistics, DPMSolverV3Statistics):
            raise TypeError(
                "`statistics` must be a DPMSolverV3Statistics (see dpm_solver_v3_statistics), "
                f"got {type(self.statistics).__name__}"
            )
        if self.order not in (1, 2, 3):
            raise ValueError(f"`order` must be 1, 2 or 3, got {self.order!r}")
        if self.corrector_order not in ("same", "raise"):
            raise ValueError(
                f"`corrector_order` must be 'same' or 'raise', got {self.corrector_order!r}"
            )
        for name in ("corrector", "predictor_pseudo", "lower_order_final"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.quadrature_nodes, int) or self.quadrature_nodes < 2:
            raise ValueError(
                f"`quadrature_nodes` must be an int >= 2, got {self.quadrature_nodes!r}"
            )

    def _max_corrector_order(self):
        return self.order + (1 if self.corrector_order == "raise" else 0)

    def init(self, model, x_T, ts, key):
        history, lams = init_history(x_T, model.schedule.logsnr(ts[0]), self._max_corrector_order())
        return DPMSolverV3State(x_T, x_T, history, lams, jnp.asarray(1))

    def _integrals(self, stats, lam_s):
        nodes, weights = _gauss_legendre(self.quadrature_nodes, lam_s.dtype)
        return _StepIntegrals(
            stats,
            lam_s,
            stats.integral("l", lam_s),
            stats.integral("s", lam_s),
            nodes,
            weights,
        )

    def _update(self, stats, g: StepGeometry, x_s, f_s, others, pseudo):
        """The step g.lam_s -> g.lam_t from (x_s, f_s), with the other points
        `others` = [(f_j, lambda_j)] for the derivative estimates."""
        ints = self._integrals(stats, g.lam_s)
        points = [(ints.g(f, lam), lam) for f, lam in others]
        coeffs = _taylor_coefficients(f_s, points, g.lam_s, pseudo)
        return ints.update(x_s, g.alpha_s, g.alpha_t, g.lam_t, coeffs)

    def _f(self, stats, model, x, t):
        sched = model.schedule
        x0, eps = model.x0_and_eps(x, t)
        alpha, sigma = sched.alpha(t), sched.sigma(t)
        lam = sched.logsnr(t)
        return (sigma * eps - stats.value("l", lam) * x) / alpha, x0

    def step(self, model, ts, i, state):
        sched = model.schedule
        num_steps = ts.shape[0] - 1
        stats = jax.tree.map(lambda a: a.astype(state.x.dtype), self.statistics)
        x = state.x
        f_new, x0_new = self._f(stats, model, x, ts[i])
        lam_i = sched.logsnr(ts[i])
        if self.corrector:
            g_prev = step_geometry(sched, ts[jnp.maximum(i - 1, 0)], ts[i])
            # At i = 0 there is no previous step: keep the (discarded) branch finite.
            g_prev = g_prev._replace(
                lam_s=jnp.where(i > 0, g_prev.lam_s, state.lams[0]),
                alpha_s=jnp.where(i > 0, g_prev.alpha_s, 1.0),
            )
            f_prev = state.history[0]
            kc = state.last_order + (1 if self.corrector_order == "raise" else 0)
            cands = [x]  # order 1: no correction
            for k in range(2, self._max_corrector_order() + 1):
                others = [(f_new, lam_i)] + [
                    (state.history[j], state.lams[j]) for j in range(1, k - 1)
                ]
                cands.append(self._update(stats, g_prev, state.last_x, f_prev, others, False))
            x_c = select_order(kc, cands)
            x = jnp.where(i > 0, x_c, x)
        history, lams = push(state.history, state.lams, f_new, lam_i)
        g = step_geometry(sched, ts[i], ts[i + 1])
        cands = []
        for k in range(1, self.order + 1):
            others = [(history[j], lams[j]) for j in range(1, k)]
            cands.append(self._update(stats, g, x, f_new, others, self.predictor_pseudo))
        k = lower_order(self.order, i, num_steps, self.lower_order_final)
        x_next = finish_step(g, select_order(k, cands), x0_new)
        return DPMSolverV3State(x_next, x, history, lams, jnp.asarray(k, state.last_order.dtype))

    def output(self, state):
        return state.x


def _central_gradient(lams, values):
    """d values / d lambda on a non-uniform grid (second-order differences: central inside,
    one-sided three-point at the ends)."""
    shape = (-1,) + (1,) * (values.ndim - 1)
    h0 = jnp.reshape(lams[1:-1] - lams[:-2], shape)
    h1 = jnp.reshape(lams[2:] - lams[1:-1], shape)
    inner = (h0 * h0 * values[2:] - h1 * h1 * values[:-2] + (h1 * h1 - h0 * h0) * values[1:-1]) / (
        h0 * h1 * (h0 + h1)
    )
    a, c = lams[1] - lams[0], lams[2] - lams[1]
    first = (
        -(2 * a + c) / (a * (a + c)) * values[0]
        + (a + c) / (a * c) * values[1]
        - a / (c * (a + c)) * values[2]
    )
    a, c = lams[-1] - lams[-2], lams[-2] - lams[-3]
    last = (
        (2 * a + c) / (a * (a + c)) * values[-1]
        - (a + c) / (a * c) * values[-2]
        + a / (c * (a + c)) * values[-3]
    )
    return jnp.concatenate([first[None], inner, last[None]], axis=0)


def dpm_solver_v3_statistics(
    model: Model,
    data: ArrayLike,
    ts: Float[ArrayLike, " n"],
    *,
    key: PRNGKeyArray,
    num_probes: int | None = None,
) -> DPMSolverV3Statistics:
    """The empirical model statistics (EMS) of DPM-Solver-v3, from the model on data samples.

    At each log-SNR lambda of the grid, x_lambda = alpha x_0 + sigma z with x_0 the data and
    z ~ N(0, I) (one draw per data sample), and with eps the model's noise prediction:

    - l_lambda = sigma E[diag(d eps / d x)]: the per-element l minimising
      E ||d(sigma eps - l x)/dx||_F^2 (the Jacobian of the nonlinear part), the diagonal
      computed with forward-mode `jax.jvp`: exactly (one jvp per element of a sample) when
      `num_probes` is None, else estimated with `num_probes` Rademacher probes v, E[v * J v];
    - f = (sigma eps - l x) / alpha and f' = df/dlambda along the probability-flow ODE
      (a `jax.jvp` in (x, lambda) in the ODE's direction, l' by finite differences on the
      grid); then per element s = Cov(f', f) / Var(f) and b = E[f'] - s E[f], the least
      squares fit f' ~ s f + b.

    **Arguments:**

    - `model`: a `Model`; its network is called on the whole batch `(N, *sample_shape)`.
    - `data`: data samples, shape `(N, *sample_shape)`, N >= 2.
    - `ts`: the time grid of the statistics (e.g. `timesteps(schedule, 200)`, log-SNR
      uniform), strictly monotone, sigma > 0 at every point; it should cover the sampling
      grids the statistics will be used with.
    - `key`: a `jax.random` key for the noise (and the probes).
    - `num_probes`: None (exact diagonal; cost: sample size jvps per grid point) or the
      number of Rademacher probes per grid point (for high-dimensional data).

    **Returns:** a `DPMSolverV3Statistics` on the grid's log-SNRs (sorted increasing).

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction of standard normal data: eps = sigma x
    model = js.diffusion.Model(lambda x, t: sched.sigma(t) * x, sched)
    data = jax.random.normal(jax.random.key(0), (64, 2))
    stats = js.diffusion.dpm_solver_v3_statistics(
        model, data, js.diffusion.timesteps(sched, 20), key=jax.random.key(1))
    # sigma eps - l x = 0 exactly for l = sigma^2 (the model is linear in x)
    lam = stats.lams[5]
    assert jnp.allclose(stats.value("l", lam), jax.nn.sigmoid(-2 * lam), rtol=1e-6)
    ```
    """
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a jaxsolve.diffusion.Model, got {type(model).__name__}")
    data = jnp.asarray(data)
    if data.ndim < 2 or data.shape[0] < 2:
        raise ValueError(f"`data` must have shape (N, *sample_shape) with N >= 2, got {data.shape}")
    if num_probes is not None and (not isinstance(num_probes, int) or num_probes < 1):
        raise ValueError(f"`num_probes` must be None or a positive int, got {num_probes!r}")
    ts = jnp.asarray(ts, data.dtype)
    if ts.ndim != 1 or ts.shape[0] < 3:
        raise ValueError(f"`ts` must be 1-D with at least 3 times, got shape {ts.shape}")
    sched = model.schedule
    lams = sched.logsnr(ts)
    if is_concrete(lams):
        diffs = np.diff(np.asarray(lams))
        if not (np.all(diffs > 0) or np.all(diffs < 0)) or not np.all(np.isfinite(lams)):
            raise ValueError("`ts` must be strictly monotone with sigma > 0 (finite log-SNR)")
    order = jnp.argsort(lams)
    lams = lams[order]
    sample_shape = data.shape[1:]
    size = int(np.prod(sample_shape))

    def phi(x, lam):
        t = sched.t_of_logsnr(lam)
        return sched.sigma(t) * model.eps(x, t)

    # One noise draw per data sample (and one set of probes), shared by every grid point:
    # common random numbers make the estimates smooth functions of lambda, which the
    # high-order expansion of g needs (independent draws per point make s and b rough).
    noise_key, probe_key = jax.random.split(key)
    z = jax.random.normal(noise_key, data.shape, data.dtype)
    if num_probes is not None:
        probes = jax.random.rademacher(probe_key, (num_probes, *data.shape), data.dtype)

    def noised(lam):
        t = sched.t_of_logsnr(lam)
        return sched.alpha(t) * data + sched.sigma(t) * z

    def l_at(lam):
        x = noised(lam)
        jvp = lambda v: jax.jvp(lambda y: phi(y, lam), (x,), (v,))[1]
        if num_probes is None:
            basis = jnp.eye(size, dtype=data.dtype)

            def diag_entry(e):
                v = jnp.broadcast_to(jnp.reshape(e, sample_shape), data.shape)
                return jnp.sum(jnp.reshape(v * jvp(v), (data.shape[0], -1)), axis=-1)

            diag = jax.lax.map(diag_entry, basis)  # (size, N)
            return jnp.reshape(jnp.mean(diag, axis=1), sample_shape)
        est = jax.lax.map(lambda v: v * jvp(v), probes)
        return jnp.mean(est, axis=(0, 1))

    l = jax.lax.map(l_at, lams)
    dl = _central_gradient(lams, l)
    log_alpha = lambda lam: jnp.log(sched.alpha(sched.t_of_logsnr(lam)))

    def sb_at(args):
        lam, l_k, dl_k = args
        x = noised(lam)
        alpha = sched.alpha(sched.t_of_logsnr(lam))
        dlog_alpha = jax.grad(log_alpha)(lam)
        p = phi(x, lam)
        dx = dlog_alpha * x - p  # the probability-flow ODE in lambda
        _, dp = jax.jvp(phi, (x, lam), (dx, jnp.ones_like(lam)))
        f = (p - l_k * x) / alpha
        df = (dp - dl_k * x - l_k * dx) / alpha - dlog_alpha * f
        f_c = f - jnp.mean(f, axis=0)
        df_c = df - jnp.mean(df, axis=0)
        var = jnp.mean(f_c * f_c, axis=0)
        cov = jnp.mean(f_c * df_c, axis=0)
        # A ridge on Var(f), sqrt(eps) relative to the size of f's two terms: where f is
        # (nearly) deterministic, e.g. a model linear in x, s is undetermined (a ratio of
        # rounding errors) and goes to 0; elsewhere the bias is negligible.
        terms = (jnp.abs(p) + jnp.abs(l_k * x)) / alpha
        floor = jnp.sqrt(jnp.finfo(f.dtype).eps) * jnp.mean(terms * terms, axis=0)
        s = cov / (var + floor + jnp.finfo(f.dtype).tiny)
        b = jnp.mean(df, axis=0) - s * jnp.mean(f, axis=0)
        return s, b

    s, b = jax.lax.map(sb_at, (lams, l, dl))
    return DPMSolverV3Statistics(lams, l, s, b)
