"""The shared problem library of the test suite.

Each pillar keeps its problems in its own section below (test SDEs with known solutions,
analytic diffusion models, problems with closed-form optima), plus generic checks.
"""

import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------------------------
# Generic checks
# ---------------------------------------------------------------------------------------------


def tree_allclose(x, y, *, rtol=1e-7, atol=1e-9) -> bool:
    """True when two pytrees have the same structure and allclose leaves."""
    if jax.tree.structure(x) != jax.tree.structure(y):
        return False
    return all(
        np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True)
    )


def finite_difference_grad(fn, x, eps=1e-6):
    """Central finite differences of a scalar function of a 1-D float64 array."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        grad[i] = (float(fn(jnp.asarray(x + e))) - float(fn(jnp.asarray(x - e)))) / (2 * eps)
    return grad


def fitted_slope(xs, ys) -> float:
    """The least-squares slope of log(ys) against log(xs): an empirical convergence order."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


# ---------------------------------------------------------------------------------------------
# Brownian motion and SDEs (jaxsolve.brownian, jaxsolve.diffeq)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Diffusion models (jaxsolve.diffusion)
# ---------------------------------------------------------------------------------------------


class GaussianData:
    """Data N(mean, cov) under a schedule: closed-form denoiser and probability-flow map.

    With C_t = alpha_t^2 cov + sigma_t^2 I (all C_t share cov's eigenvectors):
    E[x0 | x_t] = mean + alpha_t cov C_t^{-1} (x_t - alpha_t mean) and the probability-flow ODE
    maps x_T to x_t = alpha_t mean + C_t^{1/2} C_T^{-1/2} (x_T - alpha_T mean).
    `cov = 0` is point-mass data. Works on a batch x of shape (..., d).
    """

    def __init__(self, mean, cov, schedule):
        self.mean = jnp.asarray(mean)
        cov = np.asarray(cov, dtype=np.float64)
        evals, evecs = np.linalg.eigh(cov)
        dtype = self.mean.dtype
        self.evals = jnp.asarray(np.maximum(evals, 0.0), dtype)
        self.evecs = jnp.asarray(evecs, dtype)
        self.cov = jnp.asarray(cov, dtype)
        self.schedule = schedule

    def _apply(self, diag, v):
        # U diag U^T v on the last axis.
        return ((v @ self.evecs) * diag) @ self.evecs.T

    def x0(self, x, t):
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        gain = a * self.evals / (a * a * self.evals + s * s)
        return self.mean + self._apply(gain, x - a * self.mean)

    def eps(self, x, t):
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        return (x - a * self.x0(x, t)) / s

    def flow(self, x_T, t_T, t):
        """The exact probability-flow map from (x_T, t_T) to time t."""
        sched = self.schedule
        a_T, s_T, a, s = sched.alpha(t_T), sched.sigma(t_T), sched.alpha(t), sched.sigma(t)
        ratio = jnp.sqrt((a * a * self.evals + s * s) / (a_T * a_T * self.evals + s_T * s_T))
        return a * self.mean + self._apply(ratio, x_T - a_T * self.mean)

    def model(self, prediction="eps"):
        import jaxsolve as js

        return js.diffusion.Model(
            exact_fn(self.x0, self.schedule, prediction), self.schedule, prediction
        )


class GaussianMixtureData:
    """Data sum_k w_k N(means[k], covs[k]): closed-form score of every marginal p_t.

    p_t = sum_k w_k N(alpha_t means[k], alpha_t^2 covs[k] + sigma_t^2 I); eps = -sigma score and
    E[x0 | x_t] = (x + sigma^2 score) / alpha (Tweedie). Works on a batch x of shape (..., d).
    """

    def __init__(self, weights, means, covs, schedule):
        self.log_weights = jnp.log(jnp.asarray(weights))
        self.means = jnp.asarray(means)
        self.covs = jnp.asarray(covs)
        self.schedule = schedule

    def score(self, x, t):
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        d = self.means.shape[-1]
        covs = a * a * self.covs + s * s * jnp.eye(d, dtype=self.covs.dtype)  # (K, d, d)
        chol = jnp.linalg.cholesky(covs)
        diff = x[..., None, :] - a * self.means  # (..., K, d)
        sol = jax.scipy.linalg.cho_solve((chol, True), diff[..., None])[..., 0]  # C^{-1} diff
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        logp = self.log_weights - 0.5 * jnp.sum(diff * sol, axis=-1) - 0.5 * logdet
        resp = jax.nn.softmax(logp, axis=-1)
        return -jnp.sum(resp[..., None] * sol, axis=-2)

    def x0(self, x, t):
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        return (x + s * s * self.score(x, t)) / a

    def model(self, prediction="eps"):
        import jaxsolve as js

        return js.diffusion.Model(
            exact_fn(self.x0, self.schedule, prediction), self.schedule, prediction
        )

    def sample_data(self, key, num):
        k1, k2 = jax.random.split(key)
        comp = jax.random.categorical(k1, self.log_weights, shape=(num,))
        chol = jnp.linalg.cholesky(self.covs)[comp]
        z = jax.random.normal(k2, (num, self.means.shape[-1]), self.means.dtype)
        return self.means[comp] + jnp.einsum("nij,nj->ni", chol, z)


def exact_fn(x0_fn, schedule, prediction):
    """A network fn(x, t) giving `prediction` exactly, from a closed-form denoiser x0_fn."""

    def fn(x, t):
        a, s = schedule.alpha(t), schedule.sigma(t)
        x0 = x0_fn(x, t)
        eps = (x - a * x0) / s
        if prediction == "eps":
            return eps
        if prediction == "x0":
            return x0
        if prediction == "v":
            return a * eps - s * x0
        if prediction == "score":
            return -eps / s
        _, _, da, ds = schedule.alpha_sigma_derivatives(t)
        return da * x0 + ds * eps

    return fn


def standard_gaussian_case(schedule=None, dim=3, dtype=jnp.float64):
    """A fixed 3-D Gaussian (anisotropic, correlated) under VPLinear with a batch of x_T."""
    import jaxsolve as js

    schedule = js.diffusion.VPLinear() if schedule is None else schedule
    rng = np.random.default_rng(0)
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T / dim + 0.1 * np.eye(dim)
    mean = jnp.asarray(rng.normal(size=dim), dtype)
    data = GaussianData(mean, cov, schedule)
    x_T = jnp.asarray(rng.normal(size=(4, dim)), dtype)
    return data, x_T


def reference_flow(data, x_T, t_start, t_end, *, rtol=1e-10):
    """The probability-flow map of `data` (anything with `.schedule` and `.x0(x, t)`) from
    t_start to t_end, by jaxsolve.diffeq (Dopri5, adaptive, rtol = atol = `rtol`) in log-SNR
    time: dx/dlambda = (d log sigma / d lambda) x + alpha D(x, t(lambda))."""
    import jaxsolve as js

    sched = data.schedule

    def log_sigma(lam):
        return jnp.log(sched.sigma(sched.t_of_logsnr(lam)))

    def vector_field(lam, x, args):
        t = sched.t_of_logsnr(lam)
        return jax.grad(log_sigma)(lam) * x + sched.alpha(t) * data.x0(x, t)

    x_T = jnp.asarray(x_T)
    lam0 = sched.logsnr(jnp.asarray(t_start, x_T.dtype))
    lam1 = sched.logsnr(jnp.asarray(t_end, x_T.dtype))
    sol = js.diffeq.solve(
        js.diffeq.ODETerm(vector_field),
        js.diffeq.Dopri5(),
        lam0,
        lam1,
        x_T,
        controller=js.diffeq.PIDController(rtol=rtol, atol=rtol),
        max_steps=100_000,
    )
    return sol.ys[-1]


def standard_mixture(schedule=None, dtype=jnp.float64):
    """A 2-D, 3-component Gaussian mixture with narrow, well-separated components."""
    import jaxsolve as js

    schedule = js.diffusion.VPLinear() if schedule is None else schedule
    weights = jnp.asarray([0.5, 0.3, 0.2], dtype)
    means = jnp.asarray([[1.5, 0.0], [-1.0, 1.2], [-0.5, -1.5]], dtype)
    covs = jnp.asarray(
        [[[0.05, 0.02], [0.02, 0.03]], [[0.02, 0.0], [0.0, 0.08]], [[0.04, -0.01], [-0.01, 0.04]]],
        dtype,
    )
    return GaussianMixtureData(weights, means, covs, schedule)


# ---------------------------------------------------------------------------------------------
# Linear, implicit and nonlinear problems (jaxsolve.linear, .implicit, .nonlinear)
# ---------------------------------------------------------------------------------------------


def spd_matrix(n: int, seed: int = 0, dtype=np.float64):
    """A well-conditioned symmetric positive definite matrix (float64 numpy -> jnp)."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, n))
    return jnp.asarray(m @ m.T / n + np.eye(n), dtype=dtype)


def nonsymmetric_matrix(n: int, seed: int = 1, dtype=np.float64):
    """A well-conditioned non-symmetric matrix (diagonally shifted Gaussian)."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, n)) / np.sqrt(n) + 3 * np.eye(n), dtype=dtype)


def poisson_2d(grid: int):
    """The 5-point Dirichlet Laplacian on a grid x grid interior, matrix-free on (grid, grid)
    arrays (symmetric positive definite), scaled by h^-2."""
    inv_h2 = float((grid + 1) ** 2)

    def apply(u):
        padded = jnp.pad(u, 1)
        neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        return inv_h2 * (4 * u - neighbours)

    return apply


def ridge_problem(num_samples: int = 40, num_features: int = 6, seed: int = 0, dtype=np.float64):
    """(X, y) for ridge regression; the closed-form solution and hypergradient below."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_samples, num_features))
    y = X @ rng.normal(size=num_features) + 0.1 * rng.normal(size=num_samples)
    return jnp.asarray(X, dtype=dtype), jnp.asarray(y, dtype=dtype)


def ridge_optimality(w, lam, X, y):
    """Gradient of (1/2n)|Xw - y|^2 + (lam/2)|w|^2: zero at the ridge solution."""
    return X.T @ (X @ w - y) / X.shape[0] + lam * w


def ridge_closed_form(lam, X, y):
    """w*(lam) and dw*/dlam = -(X^T X + n lam I)^{-1} n w*, in float64 numpy."""
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    n, d = X.shape
    H = X.T @ X + n * float(lam) * np.eye(d)
    w = np.linalg.solve(H, X.T @ y)
    return w, -np.linalg.solve(H, n * w)


def ridge_loss(w, args):
    """(1/2n)|Xw - y|^2 + (lam/2)|w|^2 with args = (lam, X, y): `fn(y, args)` form for
    jaxsolve.nonlinear.minimize; its gradient is `ridge_optimality`."""
    lam, X, y = args
    residual = X @ w - y
    return 0.5 * jnp.vdot(residual, residual) / X.shape[0] + 0.5 * lam * jnp.vdot(w, w)


def rosenbrock_residuals(y, args=None):
    """Residuals of the n-D Rosenbrock function (sum of squares; minimum 0 at y = 1)."""
    return jnp.concatenate([10.0 * (y[1:] - y[:-1] ** 2), 1.0 - y[:-1]])


def cos_fixed_point(x, theta):
    """x = cos x + theta; dx*/dtheta = 1 / (1 + sin x*)."""
    return jnp.cos(x) + theta
