"""SDE-DPM-Solver++: the final marginal matches the data law, batch-size independence, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import standard_gaussian_case

DATA, _ = standard_gaussian_case()
SCHED = DATA.schedule
MODEL = DATA.model("eps")
NUM_SAMPLES = 3000


def test_final_marginal_matches_the_data_law():
    # 40 steps of the second-order method: its discretisation bias (measured: < 0.02 on the
    # covariance at 50 steps) is below the sampling error of 3000 samples (~0.05).
    x_T = jax.random.normal(jax.random.key(0), (NUM_SAMPLES, 3), jnp.float64)
    ts = js.diffusion.timesteps(SCHED, 40)
    x = js.diffusion.sample(
        js.diffusion.SDEDPMSolverPP(order=2), MODEL, x_T, ts, key=jax.random.key(1)
    )
    alpha, sigma = SCHED.alpha(ts[-1]), SCHED.sigma(ts[-1])
    mean = np.asarray(alpha * DATA.mean)
    cov = np.asarray(alpha**2 * DATA.cov + sigma**2 * jnp.eye(3))
    n = NUM_SAMPLES
    # Mean: standard error sqrt(C_ii / n); covariance entries: sqrt((C_ii C_jj + C_ij^2) / n).
    mean_se = np.sqrt(np.diag(cov) / n)
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    x = np.asarray(x)
    assert np.all(np.abs(x.mean(0) - mean) < 4.5 * mean_se), (x.mean(0), mean)
    assert np.all(np.abs(np.cov(x.T) - cov) < 4.5 * cov_se), (np.cov(x.T), cov)


def test_samples_do_not_depend_on_batch_size_and_sigma_zero_is_finite():
    # A final step to sigma = 0 with an x0-prediction model (the eps conversion divides by
    # sigma there): finite, and the noise of sample j depends on (key, j) only.
    x_T = jax.random.normal(jax.random.key(2), (6, 3), jnp.float64)
    model = DATA.model("x0")
    ts = jnp.append(js.diffusion.timesteps(SCHED, 8), 0.0)
    sampler = js.diffusion.SDEDPMSolverPP(order=2)
    key = jax.random.key(3)
    full = js.diffusion.sample(sampler, model, x_T, ts, key=key)
    part = js.diffusion.sample(sampler, model, x_T[:2], ts, key=key)
    assert np.all(np.isfinite(full))
    np.testing.assert_allclose(full[:2], part, rtol=0, atol=1e-12)
    # Different samples of the batch get different noise.
    assert not np.allclose(full[0] - full[1], x_T[0] - x_T[1])


@pytest.mark.slow
def test_jit_equals_eager_and_keys_differ():
    x_T = jax.random.normal(jax.random.key(2), (6, 3), jnp.float64)
    ts = js.diffusion.timesteps(SCHED, 8)
    sampler = js.diffusion.SDEDPMSolverPP(order=2)
    key = jax.random.key(3)
    full = js.diffusion.sample(sampler, MODEL, x_T, ts, key=key)
    jitted = jax.jit(lambda x, key: js.diffusion.sample(sampler, MODEL, x, ts, key=key))
    np.testing.assert_allclose(jitted(x_T, key), full, atol=1e-12)
    assert not np.allclose(jitted(x_T, jax.random.key(4)), full)


@pytest.mark.slow
def test_refining_the_grid_refines_one_brownian_path():
    # The noise comes from one Brownian path in log-SNR time: with the same key, finer grids
    # converge to the same sample (strong convergence), not to independent ones.
    x_T = jax.random.normal(jax.random.key(5), (8, 3), jnp.float64)
    key = jax.random.key(6)
    sampler = js.diffusion.SDEDPMSolverPP(order=1)
    xs = [
        js.diffusion.sample(sampler, MODEL, x_T, js.diffusion.timesteps(SCHED, n), key=key)
        for n in (16, 64, 256)
    ]
    coarse = float(jnp.sqrt(jnp.mean((xs[0] - xs[2]) ** 2)))
    middle = float(jnp.sqrt(jnp.mean((xs[1] - xs[2]) ** 2)))
    assert middle < 0.6 * coarse, (coarse, middle)


@pytest.mark.slow
def test_gradients_through_a_final_step_to_sigma_zero_are_finite():
    x_T = jax.random.normal(jax.random.key(7), (4, 3), jnp.float64)
    model = DATA.model("x0")
    ts = jnp.append(js.diffusion.timesteps(SCHED, 6), 0.0)
    sampler = js.diffusion.SDEDPMSolverPP(order=2)
    key = jax.random.key(8)
    loss = lambda x: jnp.sum(js.diffusion.sample(sampler, model, x, ts, key=key) ** 2)
    value, grad = jax.value_and_grad(loss)(x_T)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_bad_options():
    ts = js.diffusion.timesteps(SCHED, 4)
    with pytest.raises(ValueError, match="key"):
        js.diffusion.sample(js.diffusion.SDEDPMSolverPP(), MODEL, jnp.zeros((2, 3)), ts)
    with pytest.raises(ValueError, match="order"):
        js.diffusion.SDEDPMSolverPP(order=3)
    with pytest.raises(ValueError, match="logsnr_range"):
        js.diffusion.SDEDPMSolverPP(logsnr_range=(5.0, -5.0))
