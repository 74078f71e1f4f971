"""The shared problem library of the test suite.

Each pillar keeps its problems in its own section below (test SDEs with known solutions,
analytic diffusion models, problems with closed-form optima), plus generic checks.
"""

import os
import subprocess
import sys

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


# Problems re-created from diffrax's test suite (test_saveat_solution.py, test_integrate.py),
# plus the users' problems of the neural-ODE / SDE-fitting tests. Every ODE problem carries its
# closed-form solution; `reversed_vector_field` gives the time-reversed problem that a backward
# solve must match (diffrax's `test_reverse_time`).


def decay_saveat_problem(dtype=jnp.float64):
    """diffrax's SaveAt problem: y' = -0.5 y, y(0.1) = 2.1 on [0.1, 1.1].

    Returns `(vector_field, t0, t1, y0, exact)` with `exact(t) = 2.1 exp(-0.5 (t - 0.1))`.
    """
    t0, t1 = 0.1, 1.1
    y0 = jnp.asarray([2.1], dtype)

    def vector_field(t, y, args):
        return jnp.asarray(-0.5, y.dtype) * y

    def exact(t):
        t = np.asarray(t, np.float64)
        return 2.1 * np.exp(-0.5 * (t - t0))[..., None]

    return vector_field, t0, t1, y0, exact


def linear_system_problem(size: int = 10, seed: int = 5678, dtype=jnp.float64):
    """diffrax's order-test problem: y' = A y with A = 0.5 N(0, 1)^{size x size}, on [0, 4].

    Returns `(vector_field, t0, t1, y0, exact)` with `exact(t) = expm(A (t - t0)) y0` (NumPy,
    float64). A has eigenvalues of modulus up to about `0.5 sqrt(size)`: a mildly stiff,
    oscillating, growing/decaying mix.
    """
    import scipy.linalg

    rng = np.random.default_rng(seed)
    a = 0.5 * rng.standard_normal((size, size))
    y0 = rng.standard_normal(size)
    a_j = jnp.asarray(a, dtype)

    def vector_field(t, y, args):
        return a_j @ y

    def exact(t):
        t = np.atleast_1d(np.asarray(t, np.float64))
        return np.stack([scipy.linalg.expm(a * ti) @ y0 for ti in t])

    return vector_field, 0.0, 4.0, jnp.asarray(y0, dtype), exact


def harmonic_oscillator(t, y, args):
    """y0' = y1, y1' = -y0: the solution rotates, y(t) = R(-t) y(0) (see `harmonic_exact`)."""
    return jnp.stack([y[1], -y[0]])


def harmonic_exact(ts, y0):
    """The exact solution of `harmonic_oscillator` at the times `ts` (NumPy, float64)."""
    ts = np.asarray(ts, np.float64)[:, None]
    y0 = np.asarray(y0, np.float64)
    return np.concatenate(
        [y0[0] * np.cos(ts) + y0[1] * np.sin(ts), -y0[0] * np.sin(ts) + y0[1] * np.cos(ts)],
        axis=1,
    )


def lotka_volterra(t, y, params):
    """Lotka–Volterra predator-prey, `params = (alpha, beta, delta, gamma)` (no closed form)."""
    prey, predator = y[0], y[1]
    return jnp.stack(
        [
            params[0] * prey - params[1] * prey * predator,
            params[2] * prey * predator - params[3] * predator,
        ]
    )


def reversed_vector_field(vector_field):
    """g(s, y) = -f(-s, y): solving g forward from -t0 to -t1 equals solving f from t0 to t1
    (t1 < t0), at mirrored times."""

    def reversed_field(s, y, args):
        return jax.tree.map(lambda v: -v, vector_field(-s, y, args))

    return reversed_field


# The Ornstein–Uhlenbeck fitting problem: dy = th0 (th1 - y) dt + 0.3 dW on [0, 1], y(0) = 1,
# loss = sum over 11 save times of (y - target)^2, target = 1 + t/2. One Brownian path per key.
OU_SAVE_TS = np.linspace(0.0, 1.0, 11)
OU_DIFFUSION = 0.3


def ou_target(dtype=jnp.float64):
    return jnp.asarray(1.0 + 0.5 * OU_SAVE_TS, dtype)


def ou_drift(t, y, theta):
    return theta[0] * (theta[1] - y)


def ou_term(key, tol, dtype=jnp.float64):
    """The OU SDE as a jaxsolve `SDETerm` (additive noise, space-time Lévy area for ShARK)."""
    import jaxsolve as js

    bm = js.brownian.VirtualBrownianTree(
        0.0, 1.0, tol, (1,), key, levy_area="space-time", dtype=dtype
    )

    def diffusion(t, y, theta):
        return jnp.full_like(y, OU_DIFFUSION)

    return js.diffeq.SDETerm(ou_drift, diffusion, bm, noise="additive")


def ou_term_diffrax(key, tol, dtype=jnp.float64):
    """The same SDE written for diffrax (its own Brownian tree: a different path per key)."""
    import diffrax

    bm = diffrax.VirtualBrownianTree(
        0.0, 1.0, tol, jax.ShapeDtypeStruct((1,), dtype), key, levy_area=diffrax.SpaceTimeLevyArea
    )

    def diffusion(t, y, theta):
        return jnp.full((1, 1), OU_DIFFUSION, dtype)

    return diffrax.MultiTerm(diffrax.ODETerm(ou_drift), diffrax.ControlTerm(diffusion, bm))


# The neural-ODE problem: a 2-32-32-2 MLP vector field fitted to trajectories of a damped
# linear spiral y' = S y, S = [[-0.1, 2], [-2, -0.1]], observed at `num_times` times in [0, 1].
SPIRAL = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def neural_vector_field(key, dtype=jnp.float64):
    """An equinox MLP 2-32-32-2 (softplus hidden, tanh output), a user's neural vector field."""
    import equinox as eqx

    return eqx.nn.MLP(
        2, 2, 32, 2, activation=jax.nn.softplus, final_activation=jnp.tanh, dtype=dtype, key=key
    )


def spiral_data(batch: int, num_times: int, seed: int = 0, dtype=jnp.float64):
    """`(ts, y0s, targets)`: `batch` initial points in [-1, 1]^2 and their exact spiral
    trajectories at `num_times` times in [0, 1], targets of shape (batch, num_times, 2)."""
    import scipy.linalg

    rng = np.random.default_rng(seed)
    y0s = rng.uniform(-1.0, 1.0, (batch, 2))
    ts = np.linspace(0.0, 1.0, num_times)
    flows = np.stack([scipy.linalg.expm(SPIRAL * t) for t in ts])
    targets = np.einsum("tij,bj->bti", flows, y0s)
    return jnp.asarray(ts, dtype), jnp.asarray(y0s, dtype), jnp.asarray(targets, dtype)


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


def padded_grid_loop(sampler, model, max_points: int):
    """`run(x_T, ts)`: `sampler` by init/step in the user's own jitted loop (a supported use),
    a `fori_loop` over the first `len(ts) - 1` steps of `ts` padded to `max_points` points, so
    that one compilation serves every step count."""

    @jax.jit
    def run(x_T, ts, num_steps):
        state = sampler.init(model, x_T, ts, None)
        state = jax.lax.fori_loop(0, num_steps, lambda i, st: sampler.step(model, ts, i, st), state)
        return sampler.output(state)

    def padded(x_T, ts):
        grid = jnp.concatenate([ts, jnp.full((max_points - ts.shape[0],), ts[-1])])
        return run(x_T, grid, ts.shape[0] - 1)

    return padded


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


# ---------------------------------------------------------------------------------------------
# Nonlinear problem set (optimistix's test problems, re-created)
# ---------------------------------------------------------------------------------------------
#
# The problems of optimistix's tests/helpers.py (themselves mostly from Moré, Garbow & Hillstrom,
# "Testing unconstrained optimization software", ACM TOMS 1981, and the Wikipedia list of test
# functions for optimisation), written anew in `fn(y, args)` form. Each carries its known minimum
# value and, where the start determines it, the minimiser. Several start from pytrees, so the
# flattening of the entry points is exercised too.


class NonlinearProblem:
    """A test problem: `fn(y, args)` returns residuals (`kind="least_squares"`, the objective
    is 0.5 |r|^2) or a scalar (`kind="minimize"`), started at `y0` (a pytree).

    - `minimum`: the known minimum value of the objective;
    - `argmin`: the known minimiser reached from `y0` (a pytree like `y0`), or None where only
      the value is known (several minimisers of equal value).
    """

    def __init__(self, name, kind, fn, y0, args, minimum, argmin=None):
        self.name, self.kind, self.fn, self.y0, self.args = name, kind, fn, y0, args
        self.minimum, self.argmin = minimum, argmin

    def __repr__(self):
        return f"NonlinearProblem({self.name!r})"

    def objective(self, y):
        """The scalar objective at `y`: fn itself, or 0.5 |r|^2 for least squares."""
        out = self.fn(y, self.args)
        if self.kind == "minimize":
            return out
        return 0.5 * sum(jnp.vdot(r, r) for r in jax.tree.leaves(out))


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def extended_rosenbrock(y, args):
    """Rosenbrock's valley chained over all coordinates of a pytree (MGH problem 21 in its
    chained form): r = (a (y_{i+1} - y_i^2), 1 - y_i); minimum 0 at y = 1. `args = a`."""
    flat = _flat(y)
    return (args * (flat[1:] - flat[:-1] ** 2), 1.0 - flat[:-1])


def diagonal_bowl_residuals(y, args):
    """sqrt(0.1 + w) * y leafwise: 0.5 |r|^2 is a diagonal quadratic bowl, minimum 0 at 0."""
    return jax.tree.map(lambda leaf, w: jnp.sqrt(0.1 + w) * leaf, y, args)


def variably_dimensioned(y, args):
    """MGH problem 25: r = (y_i - 1, s, s^2) with s = sum_i i (y_i - 1); minimum 0 at y = 1."""
    del args
    flat = _flat(y)
    weights = jnp.arange(1, flat.size + 1, dtype=flat.dtype)
    s = jnp.vdot(weights, flat - 1.0)
    return jnp.concatenate([flat - 1.0, s[None], (s**2)[None]])


def trigonometric(y, args):
    """MGH problem 26: r_i = n - sum_j cos y_j + i (1 - cos y_i) - sin y_i; minimum 0 (for
    n = 5 from y0 = 1/n every residual vanishes)."""
    del args
    n = y.size
    weights = jnp.arange(1, n + 1, dtype=y.dtype)
    return n - jnp.sum(jnp.cos(y)) + weights * (1.0 - jnp.cos(y)) - jnp.sin(y)


def quadratic_bowl(y, args):
    """y' M y over the flattened pytree, with M symmetric positive definite; minimum 0 at 0."""
    flat = _flat(y)
    return flat @ (args @ flat)


def himmelblau(y, args):
    """Himmelblau's function (y^2 + z - c1)^2 + (y + z^2 - c2)^2, c = (11, 7): four minima of
    value 0; from (2, 2.5) the minimiser reached is (3, 2)."""
    u, v = y
    c1, c2 = args
    return (u**2 + v - c1) ** 2 + (u + v**2 - c2) ** 2


def matyas(y, args):
    """Matyas' function c1 (u^2 + v^2) - c2 u v, c = (0.26, 0.48); minimum 0 at (0, 0)."""
    u, v = y
    c1, c2 = args
    return c1 * (u**2 + v**2) - c2 * u * v


def beale(y, args):
    """Beale's function sum_k (c_k - u + u v^k)^2, c = (1.5, 2.25, 2.625); minimum 0 at
    (3, 0.5)."""
    u, v = y
    c1, c2, c3 = args
    return (c1 - u + u * v) ** 2 + (c2 - u + u * v**2) ** 2 + (c3 - u + u * v**3) ** 2


def square_minus_one(y, args):
    """|y|^2 - 1: a minimum value that is negative (-1 at 0), so a test relative to |f| or a
    check of "f reached 0" would be wrong."""
    del args
    return jnp.sum(y**2) - 1.0


def nonlinear_problem_set(dtype=jnp.float64):
    """`(least_squares_problems, minimisation_problems)`, two tuples of `NonlinearProblem`."""
    key_bowl, key_weights = jax.random.split(jax.random.key(17))
    bowl_y0 = ({"a": jnp.full((2, 3, 3), 0.05, dtype)}, jnp.full((2,), 0.05, dtype))
    size = _flat(bowl_y0).size
    factor = jax.random.normal(key_bowl, (size, size), dtype)
    weights = jax.tree.map(
        lambda leaf: jax.random.normal(key_weights, leaf.shape, dtype) ** 2, bowl_y0
    )
    rosenbrock_tree = (1.45 * jnp.ones((2, 4), dtype), {"a": 1.45 * jnp.ones((2, 3, 2), dtype)})
    n_vd = 10
    least_squares = (
        NonlinearProblem(
            "diagonal_bowl",
            "least_squares",
            diagonal_bowl_residuals,
            bowl_y0,
            weights,
            0.0,
            jax.tree.map(jnp.zeros_like, bowl_y0),
        ),
        NonlinearProblem(
            "rosenbrock_2d",
            "least_squares",
            extended_rosenbrock,
            [jnp.asarray(-1.2, dtype), jnp.asarray(1.0, dtype)],
            jnp.asarray(10.0, dtype),
            0.0,
            [jnp.asarray(1.0, dtype), jnp.asarray(1.0, dtype)],
        ),
        NonlinearProblem(
            "rosenbrock_pytree",
            "least_squares",
            extended_rosenbrock,
            rosenbrock_tree,
            jnp.asarray(10.0, dtype),
            0.0,
            jax.tree.map(jnp.ones_like, rosenbrock_tree),
        ),
        NonlinearProblem(
            "variably_dimensioned",
            "least_squares",
            variably_dimensioned,
            1.0 - jnp.arange(1, n_vd + 1, dtype=dtype) / n_vd,
            None,
            0.0,
            jnp.ones(n_vd, dtype),
        ),
        NonlinearProblem(
            "trigonometric",
            "least_squares",
            trigonometric,
            jnp.full((5,), 0.2, dtype),
            None,
            0.0,
        ),
    )
    minimisation = (
        NonlinearProblem(
            "quadratic_bowl",
            "minimize",
            quadratic_bowl,
            bowl_y0,
            factor.T @ factor,
            0.0,
            jax.tree.map(jnp.zeros_like, bowl_y0),
        ),
        NonlinearProblem(
            "himmelblau",
            "minimize",
            himmelblau,
            [jnp.asarray(2.0, dtype), jnp.asarray(2.5, dtype)],
            (jnp.asarray(11.0, dtype), jnp.asarray(7.0, dtype)),
            0.0,
            [jnp.asarray(3.0, dtype), jnp.asarray(2.0, dtype)],
        ),
        NonlinearProblem(
            "matyas",
            "minimize",
            matyas,
            [jnp.asarray(6.0, dtype), jnp.asarray(6.0, dtype)],
            (jnp.asarray(0.26, dtype), jnp.asarray(0.48, dtype)),
            0.0,
            [jnp.asarray(0.0, dtype), jnp.asarray(0.0, dtype)],
        ),
        NonlinearProblem(
            "beale",
            "minimize",
            beale,
            [jnp.asarray(2.0, dtype), jnp.asarray(0.0, dtype)],
            (jnp.asarray(1.5, dtype), jnp.asarray(2.25, dtype), jnp.asarray(2.625, dtype)),
            0.0,
            [jnp.asarray(3.0, dtype), jnp.asarray(0.5, dtype)],
        ),
        NonlinearProblem(
            "square_minus_one",
            "minimize",
            square_minus_one,
            jnp.ones((3,), dtype),
            None,
            -1.0,
            jnp.zeros((3,), dtype),
        ),
    )
    return least_squares, minimisation


# ---------------------------------------------------------------------------------------------
# Several devices
# ---------------------------------------------------------------------------------------------


def run_on_8_devices(script: str, timeout: float = 600) -> None:
    """Run `script` in a fresh Python with 8 simulated CPU devices (the device count is fixed
    when JAX starts) from the repository root; it must print "OK". XLA's "involuntary full
    rematerialization" warning (a sharded array gathered onto one device) fails the test."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    assert "Involuntary full rematerialization" not in proc.stderr
