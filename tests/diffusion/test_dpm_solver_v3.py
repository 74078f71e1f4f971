"""DPM-Solver-v3: empirical model statistics and the sampler, against exact probability flows."""

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
GAUSS, X_T = standard_gaussian_case()
SCHED = GAUSS.schedule
FINE = D.timesteps(SCHED, 200)  # the statistics' grid: log-SNR uniform over the sampling range
MAX_POINTS = 257


def _gauss_data(data, num, seed):
    z = jax.random.normal(jax.random.key(seed), (num, data.mean.shape[0]), jnp.float64)
    return data.mean + z @ jnp.linalg.cholesky(data.cov).T


@pytest.fixture(scope="module")
def gauss_stats():
    data = _gauss_data(GAUSS, 512, 3)
    return D.dpm_solver_v3_statistics(GAUSS.model("eps"), data, FINE, key=jax.random.key(5))


def _rms(x, ref):
    return float(jnp.sqrt(jnp.mean(jnp.sum((x - ref) ** 2, axis=-1))))


def _own_loop(sampler, model):
    return padded_grid_loop(sampler, model, MAX_POINTS)


def _l_of_lambda(lam, var):
    alpha2, sigma2 = jax.nn.sigmoid(2.0 * lam), jax.nn.sigmoid(-2.0 * lam)
    return sigma2 / (alpha2 * var + sigma2)


def test_statistics_of_diagonal_gaussian_data_are_exact_and_linearise_the_model():
    # Diagonal covariance: sigma eps = sigma^2 C^{-1} (x - alpha m) with C = alpha^2 v + sigma^2,
    # so l = sigma^2 / (alpha^2 v + sigma^2) exactly, f = -l m does not depend on x, s = 0 and
    # b = f' = -l' m: with these statistics the reparameterised ODE is linear.
    var = jnp.asarray([0.3, 1.0, 2.5])
    mean = jnp.asarray([0.5, -1.0, 2.0])
    data_law = GaussianData(mean, np.diag(np.asarray(var)), SCHED)
    data = _gauss_data(data_law, 16, 0)
    model = data_law.model("eps")
    fine = D.timesteps(SCHED, 120)
    stats = D.dpm_solver_v3_statistics(model, data, fine, key=jax.random.key(1))
    lam = stats.lams
    alpha2 = jax.nn.sigmoid(2.0 * lam)[:, None]
    sigma2 = jax.nn.sigmoid(-2.0 * lam)[:, None]
    l_exact = sigma2 / (alpha2 * var + sigma2)
    np.testing.assert_allclose(stats.l, l_exact, rtol=1e-10)
    np.testing.assert_allclose(stats.s, 0.0, atol=1e-6)
    dl = jax.vmap(jax.jacfwd(lambda la: _l_of_lambda(la, var)))(lam)
    # (l' by finite differences on the grid: second order inside, one-sided at the ends)
    np.testing.assert_allclose(stats.b[1:-1], -(dl * mean)[1:-1], rtol=5e-3, atol=1e-4)
    np.testing.assert_allclose(stats.b, -dl * mean, rtol=0.1, atol=1e-4)
    # Rademacher probes estimate the same diagonal (the Jacobian is constant in x here).
    probed = D.dpm_solver_v3_statistics(model, data, fine, key=jax.random.key(1), num_probes=4)
    np.testing.assert_allclose(probed.l, l_exact, rtol=1e-10)

    # The linearised model: 5 steps of DPM-Solver-v3 are orders of magnitude more accurate
    # than DPM-Solver++ and UniPC on the same grid.
    x_T = jax.random.normal(jax.random.key(2), (16, 3), jnp.float64)
    ts = D.timesteps(SCHED, 5)
    exact = data_law.flow(x_T, ts[0], ts[-1])
    v3 = _rms(D.sample(D.DPMSolverV3(stats), model, x_T, ts), exact)
    pp = _rms(D.sample(D.DPMSolverPP(order=3), model, x_T, ts), exact)
    unipc = _rms(D.sample(D.UniPC(order=3), model, x_T, ts), exact)
    assert v3 < 1e-2 * min(pp, unipc), (v3, pp, unipc)


def test_unit_statistics_reduce_to_ddim_and_dpm_solver_pp():
    # l = 1, s = b = 0: f = -x0, the predictor is DPM-Solver++ with exact Taylor weights.
    lams = jnp.linspace(-12.0, 12.0, 30)
    ones = jnp.ones((30, 3))
    unit = D.DPMSolverV3Statistics(lams, ones, 0.0 * ones, 0.0 * ones)
    model = GAUSS.model("eps")
    ts = D.timesteps(SCHED, 7)
    pairs = [
        (D.DPMSolverV3(unit, order=1, corrector=False), D.DDIM()),
        (D.DPMSolverV3(unit, order=2, corrector=False), D.DPMSolverPP(solver_type="heun")),
    ]
    for v3, other in pairs:
        np.testing.assert_allclose(
            D.sample(v3, model, X_T, ts), D.sample(other, model, X_T, ts), rtol=1e-12, atol=1e-12
        )


# (sampler options, expected global order): the corrector with the same number of points
# keeps the order; "raise" adds a point and an order, as UniC.
SLOW = pytest.mark.slow
COUNTS = (64, 128, 256)
ORDER_CASES = [
    pytest.param(dict(order=1, corrector=False), 1, id="order1"),
    pytest.param(dict(order=2, corrector=False), 2, id="order2"),
    pytest.param(dict(order=3, corrector=False), 3, id="order3"),
    pytest.param(dict(order=2, corrector_order="raise"), 3, id="order2-raise"),
    pytest.param(dict(order=2), 2, id="order2-pc", marks=SLOW),
    pytest.param(dict(order=3, corrector=False, predictor_pseudo=True), 2, id="pseudo", marks=SLOW),
]


@pytest.mark.parametrize("options,order", ORDER_CASES)
def test_convergence_order_on_gaussian_data(options, order, gauss_stats):
    run = _own_loop(D.DPMSolverV3(gauss_stats, **options), GAUSS.model("eps"))
    errors = []
    for num_steps in COUNTS:
        ts = D.timesteps(SCHED, num_steps)
        errors.append(float(jnp.max(jnp.abs(run(X_T, ts) - GAUSS.flow(X_T, ts[0], ts[-1])))))
    slope = -fitted_slope(COUNTS, errors)
    assert abs(slope - order) < 0.15, f"{options}: errors {errors}, slope {slope}, expected {order}"


NFES = (5, 6, 8, 10)
BASELINES = {
    "DPMSolverPP2M": D.DPMSolverPP(order=2),
    "DPMSolverPP3M": D.DPMSolverPP(order=3),
    "UniPC2": D.UniPC(order=2),
    "UniPC3": D.UniPC(order=3),
}


def _error_table(model, stats, x_T, reference, nfes=NFES):
    """RMS error at the end of the default grid, per sampler and NFE (one step per NFE)."""
    samplers = dict(BASELINES, v3=D.DPMSolverV3(stats))
    table = {}
    for name, sampler in samplers.items():
        # `sample` on each true grid, as users call it: a loop over a padded grid could not
        # lower the baselines' order at the last steps, which handicaps them at low NFE
        run = jax.jit(lambda x, ts, s=sampler: D.sample(s, model, x, ts))
        table[name] = [_rms(run(x_T, D.timesteps(SCHED, n)), reference) for n in nfes]
    return table


def test_low_nfe_error_beats_dpm_solver_pp_and_unipc_on_gaussian_data(gauss_stats):
    # The paper's claim on an anisotropic, correlated Gaussian (statistics from 512 samples):
    # at 5-10 NFE DPM-Solver-v3 is below half the best baseline on the same grid (measured 0.02-0.15x).
    x_T = jax.random.normal(jax.random.key(7), (32, 3), jnp.float64)
    reference = GAUSS.flow(x_T, SCHED.t_start_default, SCHED.t_end_default)
    table = _error_table(GAUSS.model("eps"), gauss_stats, x_T, reference)
    best = np.min([table[name] for name in BASELINES], axis=0)
    assert np.all(np.asarray(table["v3"]) < 0.5 * best), table


MIXTURE_NFES = (5, 6, 8, 10, 20)


@pytest.fixture(scope="module")
def mixture_table():
    # The narrow 2-D, 3-component mixture (exact eps), statistics from 512 samples. Its
    # nonlinearity is concentrated where the components separate (log-SNR 0..1.5, where the
    # fitted s swings from +1.4 to -0.6), which a per-element linearisation cannot absorb.
    mixture = standard_mixture()
    data = mixture.sample_data(jax.random.key(4), 512)
    stats = D.dpm_solver_v3_statistics(mixture.model("eps"), data, FINE, key=jax.random.key(6))
    x_T = jax.random.normal(jax.random.key(8), (64, 2), jnp.float64)
    reference = reference_flow(mixture, x_T, SCHED.t_start_default, SCHED.t_end_default)
    table = _error_table(mixture.model("eps"), stats, x_T, reference, nfes=MIXTURE_NFES)
    best = np.min([table[name] for name in BASELINES], axis=0)
    return np.asarray(table["v3"]), best, table


@pytest.mark.slow
def test_gaussian_mixture_converges_with_the_baselines(mixture_table):
    v3, best, table = mixture_table
    assert np.all(np.isfinite(v3)), table
    assert v3[-1] < 1.5 * best[-1] and v3[-1] < 0.05 * v3[0], table


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the paper's low-NFE claim does not hold on the narrow Gaussian mixture: "
    "DPM-Solver-v3 is 1.5-3.3x worse than the best of DPM-Solver++/UniPC at 5-10 NFE",
)
def test_gaussian_mixture_low_nfe_claim(mixture_table):
    v3, best, table = mixture_table
    assert np.all(v3[:4] < best[:4]), table


def test_jit_and_vmap_over_per_sample_grids(gauss_stats):
    sampler = D.DPMSolverV3(gauss_stats)
    model = GAUSS.model("x0")
    ts = D.timesteps(SCHED, 6)
    run = jax.jit(lambda x, ts: D.sample(sampler, model, x, ts))
    np.testing.assert_allclose(run(X_T, ts), GAUSS.flow(X_T, ts[0], ts[-1]), atol=3e-2)
    # Per-sample grids under vmap equal separate runs.
    grids = jnp.stack([D.timesteps(SCHED, 6, s) for s in ("logsnr", "uniform", "quadratic")])
    batched = jax.vmap(run)(X_T[:3], grids)
    for k in range(3):
        np.testing.assert_allclose(batched[k], run(X_T[k], grids[k]), rtol=1e-12)


@pytest.mark.slow
def test_gradients_through_the_sampler(gauss_stats):
    sampler = D.DPMSolverV3(gauss_stats)
    model = GAUSS.model("x0")
    ts = D.timesteps(SCHED, 6)

    # Gradients with respect to the grid, through a final step to sigma = 0. The statistics
    # are piecewise linear in lambda, so the sample has kinks where a grid time meets one of
    # their nodes: this grid stays off them.
    full = jnp.append(D.timesteps(SCHED, 6, "uniform", t_end=2e-3), 0.0)
    target = jnp.asarray([0.1, 0.2, -0.3])

    @jax.jit
    def loss(interior):
        grid = jnp.concatenate([full[:1], interior, full[-1:]])
        return jnp.sum((D.sample(sampler, model, X_T, grid) - target) ** 2)

    interior = full[1:-1]
    np.testing.assert_allclose(
        jax.jit(jax.grad(loss))(interior),
        finite_difference_grad(loss, interior, eps=1e-6),
        rtol=1e-5,
        atol=1e-8,
    )

    # ... and with respect to the statistics (a pytree of arrays) and the noise.
    @jax.jit
    def loss_stats(stats, x_T):
        return jnp.sum(D.sample(D.DPMSolverV3(stats), model, x_T, ts) ** 2)

    g_stats, g_x = jax.grad(loss_stats, argnums=(0, 1))(gauss_stats, X_T)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g_stats))
    assert float(jnp.max(jnp.abs(g_stats.l))) > 0.0
    np.testing.assert_allclose(
        g_x[0],
        finite_difference_grad(lambda x: loss_stats(gauss_stats, X_T.at[0].set(x)), X_T[0]),
        rtol=1e-6,
    )


def test_float32_statistics_and_sampling_stay_finite(gauss_stats):
    data32, _ = standard_gaussian_case(dtype=jnp.float32)
    samples = _gauss_data(GAUSS, 64, 3).astype(jnp.float32)
    fine = D.timesteps(SCHED, 50).astype(jnp.float32)
    stats32 = D.dpm_solver_v3_statistics(data32.model("eps"), samples, fine, key=jax.random.key(5))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(stats32))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(stats32))
    x32 = X_T.astype(jnp.float32)
    ts = D.timesteps(SCHED, 8)
    reference = D.sample(D.DPMSolverV3(gauss_stats), GAUSS.model("eps"), X_T, ts)
    out = D.sample(D.DPMSolverV3(stats32), data32.model("eps"), x32, jnp.append(ts, 0.0))
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
    # float64 statistics are cast to the samples' dtype
    out = D.sample(D.DPMSolverV3(gauss_stats), data32.model("eps"), x32, ts)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, reference, atol=1e-4)


def test_invalid_arguments_raise():
    lams = jnp.linspace(-5.0, 5.0, 10)
    ones = jnp.ones((10, 3))
    with pytest.raises(ValueError, match="increasing"):
        D.DPMSolverV3Statistics(lams[::-1], ones, ones, ones)
    with pytest.raises(ValueError, match="shape"):
        D.DPMSolverV3Statistics(lams, ones[:5], ones, ones)
    stats = D.DPMSolverV3Statistics(lams, ones, ones, ones)
    with pytest.raises(TypeError, match="statistics"):
        D.DPMSolverV3(ones)
    with pytest.raises(ValueError, match="order"):
        D.DPMSolverV3(stats, order=4)
    with pytest.raises(ValueError, match="corrector_order"):
        D.DPMSolverV3(stats, corrector_order="up")
    with pytest.raises(ValueError, match="data"):
        D.dpm_solver_v3_statistics(GAUSS.model(), jnp.ones(3), FINE, key=jax.random.key(0))
