"""Deterministic samplers against the exact probability-flow map of Gaussian data."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import (
    GaussianData,
    finite_difference_grad,
    fitted_slope,
    padded_grid_loop,
    reference_flow,
    standard_gaussian_case,
    standard_mixture,
)

D = js.diffusion

# (id, sampler, expected global order). UniPC with its corrector gains one order.
ORDER_CASES = [
    ("DDIM", D.DDIM(), 1),
    ("DPMSolver1", D.DPMSolver(order=1), 1),
    ("DPMSolver2", D.DPMSolver(order=2), 2),
    ("DPMSolver3", D.DPMSolver(order=3), 3),
    ("DPMSolverPP1", D.DPMSolverPP(order=1), 1),
    ("DPMSolverPP2", D.DPMSolverPP(order=2), 2),
    ("DPMSolverPP3", D.DPMSolverPP(order=3), 3),
    ("UniPC1", D.UniPC(order=1), 2),
    ("UniPC2", D.UniPC(order=2), 3),
    ("UniPC3", D.UniPC(order=3), 4),
    ("UniPC2-bh1", D.UniPC(order=2, variant="bh1"), 3),
    ("UniPC2-noC", D.UniPC(order=2, corrector=False), 2),
    ("DEIS1", D.DEIS(order=1), 1),
    ("DEIS2", D.DEIS(order=2), 2),
    ("DEIS3", D.DEIS(order=3), 3),
    ("DEIS4", D.DEIS(order=4), 4),
    ("PNDM-prk", D.PNDM(), 2),
    ("PNDM-plms", D.PNDM(warmup="plms"), 2),
]
IDS = [case[0] for case in ORDER_CASES]
# Step counts in the asymptotic range of each method (Karras grids; the singlestep
# DPM-Solver-3 shows error cancellation on Karras grids, so it uses the log-SNR grid).
GRIDS = {
    "DPMSolver3": ("logsnr", (64, 128, 256)),
    "UniPC3": ("karras", (64, 128, 256)),
    "DEIS3": ("karras", (256, 512, 1024)),
    "DEIS4": ("karras", (256, 512, 1024)),
}
DEFAULT_GRID = ("karras", (128, 256, 512))
MAX_POINTS = 1025

GAUSS, X_T = standard_gaussian_case()
SCHED = GAUSS.schedule


def _own_loop(sampler, model):
    return padded_grid_loop(sampler, model, MAX_POINTS)


POINT_MASS = GaussianData(jnp.asarray([0.7, -1.2, 0.4]), np.zeros((3, 3)), SCHED)


@pytest.mark.parametrize("name,sampler,order", ORDER_CASES, ids=IDS)
def test_convergence_order_and_point_mass_exactness(name, sampler, order):
    run = _own_loop(sampler, GAUSS.model("eps"))
    spacing, counts = GRIDS.get(name, DEFAULT_GRID)
    errors = []
    for num_steps in counts:
        ts = D.timesteps(SCHED, num_steps, spacing)
        errors.append(float(jnp.max(jnp.abs(run(X_T, ts) - GAUSS.flow(X_T, ts[0], ts[-1])))))
    slope = -fitted_slope(counts, errors)
    assert abs(slope - order) < 0.15, f"{name}: errors {errors}, slope {slope}, expected {order}"

    # Point-mass data: eps and x0 are constant along the exact flow, which every exponential
    # integrator (and PNDM's pseudo-linear multistep) integrates exactly; a final step to
    # sigma = 0 must land on the point.
    run = _own_loop(sampler, POINT_MASS.model("eps"))
    ts = D.timesteps(SCHED, 6)
    np.testing.assert_allclose(run(X_T, ts), POINT_MASS.flow(X_T, ts[0], ts[-1]), atol=1e-11)
    ts = jnp.append(ts, 0.0)
    np.testing.assert_allclose(
        run(X_T, ts), jnp.broadcast_to(POINT_MASS.mean, X_T.shape), atol=1e-11
    )


@pytest.mark.parametrize(
    "sampler",
    [
        D.DPMSolverPP(order=2),
        pytest.param(D.UniPC(order=2), marks=pytest.mark.slow),
        pytest.param(D.DPMSolver(order=2), marks=pytest.mark.slow),
    ],
)
def test_parameterisations_agree(sampler):
    ts = D.timesteps(SCHED, 8)
    reference = _own_loop(sampler, GAUSS.model("eps"))(X_T, ts)
    for prediction in ("x0", "v", "velocity", "score"):
        out = _own_loop(sampler, GAUSS.model(prediction))(X_T, ts)
        np.testing.assert_allclose(out, reference, rtol=1e-9, atol=1e-9)


def test_jit_equals_eager_and_no_retrace():
    sampler = D.UniPC(order=3)
    model = GAUSS.model("eps")
    ts = D.timesteps(SCHED, 7)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(x_T, ts):
        return D.sample(sampler, model, x_T, ts)

    eager = D.sample(sampler, model, X_T, ts)
    np.testing.assert_allclose(run(X_T, ts), eager, rtol=1e-13, atol=1e-13)
    run(X_T + 1.0, D.timesteps(SCHED, 7, "uniform"))  # new values: no retrace


@pytest.mark.parametrize(
    "sampler",
    [
        D.DPMSolverPP(order=3),
        pytest.param(D.UniPC(order=2), marks=pytest.mark.slow),
        pytest.param(D.DPMSolver(order=2), marks=pytest.mark.slow),
    ],
)
def test_grad_wrt_timesteps_matches_finite_differences(sampler):
    model = GAUSS.model("x0")
    ts = D.timesteps(SCHED, 6)
    target = jnp.asarray([0.1, 0.2, -0.3])

    def loss(interior):
        full = jnp.concatenate([ts[:1], interior, ts[-1:]])
        return jnp.sum((D.sample(sampler, model, X_T, full) - target) ** 2)

    interior = ts[1:-1]
    grad = jax.jit(jax.grad(loss))(interior)
    fd = finite_difference_grad(jax.jit(loss), interior, eps=1e-6)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)


class _ScaledDenoiser(eqx.Module):
    """x0-network: the exact Gaussian denoiser with a trainable mean."""

    mean: jax.Array

    def __call__(self, x, t):
        data = GaussianData(self.mean, np.asarray(GAUSS.cov), SCHED)
        return data.x0(x, t)


def test_grad_wrt_model_parameters_and_vmap_over_per_sample_timesteps():
    sampler = D.DPMSolverPP(order=2)
    ts = D.timesteps(SCHED, 5)

    @jax.jit
    def loss(mean):
        model = D.Model(_ScaledDenoiser(mean), SCHED, prediction="x0")
        return jnp.sum(D.sample(sampler, model, X_T, ts) ** 2)

    mean = GAUSS.mean
    np.testing.assert_allclose(
        jax.jit(jax.grad(loss))(mean), finite_difference_grad(loss, mean), rtol=1e-6, atol=1e-9
    )
    # Per-sample grids under vmap equal separate runs.
    model = GAUSS.model("eps")
    grids = jnp.stack(
        [D.timesteps(SCHED, 5, s) for s in ("logsnr", "uniform", "quadratic", "karras")]
    )
    single = jax.jit(lambda x, g: D.sample(sampler, model, x, g))
    batched = jax.jit(jax.vmap(single))(X_T, grids)
    for k in range(4):
        np.testing.assert_allclose(batched[k], single(X_T[k], grids[k]), rtol=1e-12)


SLOW = pytest.mark.slow
SIGMA_ZERO_CASES = [
    "DDIM",
    "DPMSolverPP3",
    pytest.param("DPMSolver3", marks=SLOW),
    pytest.param("UniPC3", marks=SLOW),
    pytest.param("DEIS4", marks=SLOW),
    pytest.param("PNDM-prk", marks=SLOW),
]


@pytest.mark.parametrize("name", SIGMA_ZERO_CASES)
def test_sigma_zero_final_step_has_finite_values_and_gradients(name):
    sampler = dict((c[0], c[1]) for c in ORDER_CASES)[name]
    model = GAUSS.model("eps")

    @jax.jit
    def loss(x_T, ts):
        return jnp.sum(D.sample(sampler, model, x_T, ts) ** 2)

    ts = jnp.append(D.timesteps(SCHED, 4), 0.0)
    value, (gx, gts) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(X_T, ts)
    assert np.isfinite(value) and np.all(np.isfinite(gx)) and np.all(np.isfinite(gts))
    fd = finite_difference_grad(lambda last: loss(X_T, ts.at[-2].set(last[0])), ts[-2:-1])
    np.testing.assert_allclose(gts[-2], fd[0], rtol=1e-5)


def test_float32_stays_float32():
    x = X_T.astype(jnp.float32)
    data32, _ = standard_gaussian_case(dtype=jnp.float32)
    ts = D.timesteps(SCHED, 10)  # float64 grid is cast to the samples' dtype
    for sampler in (D.UniPC(),):
        out = D.sample(sampler, data32.model("eps"), x, ts)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, D.sample(sampler, GAUSS.model("eps"), X_T, ts), atol=1e-4)


def test_ddim_eta_chain_law_matches_samples():
    # With Gaussian data every DDIM(eta) step is x_t = A x_s + b + c z, so the chain's law is
    # Gaussian with a mean and covariance we propagate exactly; the empirical moments of
    # 4000 samples must match within sampling error.
    mean = jnp.asarray([0.5, -1.0])
    cov = np.array([[0.3, 0.1], [0.1, 0.2]])
    data = GaussianData(mean, cov, SCHED)
    ts = D.timesteps(SCHED, 8)
    eta = 0.7
    m, c = np.zeros(2), np.eye(2) * float(SCHED.sigma(ts[0]) ** 2 + SCHED.alpha(ts[0]) ** 2 * 0)
    c = np.eye(2)
    m = np.zeros(2)
    for i in range(8):
        s, t = float(ts[i]), float(ts[i + 1])
        a_s, sg_s, a_t, sg_t = (
            float(v) for v in (SCHED.alpha(s), SCHED.sigma(s), SCHED.alpha(t), SCHED.sigma(t))
        )
        h = float(SCHED.logsnr(t) - SCHED.logsnr(s))
        frac = -np.expm1(-2 * h)
        noise = eta * sg_t * np.sqrt(frac)
        keep = sg_t * np.sqrt(1 - eta**2 * frac)
        cs = a_s**2 * cov + sg_s**2 * np.eye(2)
        gain = a_s * cov @ np.linalg.inv(cs)  # x0_hat = mean + gain (x - a_s mean)
        a_x0 = gain
        b_x0 = np.asarray(mean) - gain @ (a_s * np.asarray(mean))
        a_eps = (np.eye(2) - a_s * a_x0) / sg_s
        b_eps = -a_s * b_x0 / sg_s
        A = a_t * a_x0 + keep * a_eps
        b = a_t * b_x0 + keep * b_eps
        m = A @ m + b
        c = A @ c @ A.T + noise**2 * np.eye(2)
    num = 4000
    x_T = jax.random.normal(jax.random.key(1), (num, 2), jnp.float64) * float(SCHED.sigma(ts[0]))
    x_T = x_T / float(SCHED.sigma(ts[0]))  # the chain above starts from N(0, I)
    x = D.sample(D.DDIM(eta=eta), data.model(), x_T, ts, key=jax.random.key(2))
    emp_mean = np.asarray(jnp.mean(x, 0))
    emp_cov = np.cov(np.asarray(x).T)
    se_mean = np.sqrt(np.diag(c) / num)
    assert np.all(np.abs(emp_mean - m) < 5 * se_mean)
    se_cov = np.sqrt((c**2 + np.outer(np.diag(c), np.diag(c))) / num)
    assert np.all(np.abs(emp_cov - c) < 5 * se_cov)
    # The same key gives the same sample; a stochastic sampler without a key is an error.
    x2 = D.sample(D.DDIM(eta=eta), data.model(), x_T, ts, key=jax.random.key(2))
    np.testing.assert_array_equal(x, x2)
    with pytest.raises(ValueError, match="key"):
        D.sample(D.DDIM(eta=eta), data.model(), x_T, ts)


def test_bad_options_raise_clearly():
    with pytest.raises(ValueError, match="order"):
        D.DPMSolverPP(order=4)
    with pytest.raises(ValueError, match="order"):
        D.DPMSolver(order=0)
    with pytest.raises(ValueError, match="order"):
        D.DEIS(order=5)
    with pytest.raises(ValueError, match="variant"):
        D.UniPC(variant="bh3")
    with pytest.raises(ValueError, match="warmup"):
        D.PNDM(warmup="rk4")
    with pytest.raises(ValueError, match="eta"):
        D.DDIM(eta=1.5)
    model = GAUSS.model()
    ts = D.timesteps(SCHED, 4)
    with pytest.raises(ValueError, match="strictly decreasing"):
        D.sample(D.DDIM(), model, X_T, ts[::-1])
    with pytest.raises(ValueError, match="strictly decreasing"):
        D.sample(D.DDIM(), model, X_T, jnp.asarray([1.0, 0.5, 0.5, 0.1]))
    with pytest.raises(ValueError, match="1-D"):
        D.sample(D.DDIM(), model, X_T, ts[:1])
    with pytest.raises(TypeError, match="sampler"):
        D.sample("ddim", model, X_T, ts)
    with pytest.raises(TypeError, match="model"):
        D.sample(D.DDIM(), lambda x, t: x, X_T, ts)
    with pytest.raises(TypeError, match="x_T"):
        D.sample(D.DDIM(), model, jnp.ones(3, jnp.int32), ts)
    with pytest.raises(TypeError, match="guidance"):
        D.sample(D.DDIM(), model, X_T, ts, guidance=2.0)


def test_nonfinite_sample_raises_with_throw():
    model = D.Model(lambda x, t: x / 0.0, SCHED)
    ts = D.timesteps(SCHED, 3)
    with pytest.raises(Exception, match="nonfinite"):
        D.sample(D.DDIM(), model, X_T, ts)
    assert not np.all(np.isfinite(D.sample(D.DDIM(), model, X_T, ts, throw=False)))


MIXTURE = standard_mixture()
MIX_X_T = jax.random.normal(jax.random.key(0), (32, 2), jnp.float64)


@pytest.fixture(scope="module")
def mixture_reference():
    # The reference is jaxsolve.diffeq (Dopri5, rtol = atol = 1e-10, in log-SNR time).
    return reference_flow(MIXTURE, MIX_X_T, SCHED.t_start_default, SCHED.t_end_default)


@pytest.mark.parametrize(
    "sampler", [D.DPMSolverPP(order=2), D.UniPC(order=2), D.DPMSolver(order=3)]
)
def test_gaussian_mixture_error_decreases_with_nfe(sampler, mixture_reference):
    errors = []
    run = _own_loop(sampler, MIXTURE.model("eps"))
    for nfe in (6, 12, 24, 48):
        num_steps = nfe // (sampler.num_evaluations(1))
        ts = D.timesteps(SCHED, num_steps)
        x = run(MIX_X_T, ts)
        errors.append(float(jnp.sqrt(jnp.mean(jnp.sum((x - mixture_reference) ** 2, -1)))))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.05 * errors[0], errors
