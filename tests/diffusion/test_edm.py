"""EulerEDM / HeunEDM: orders against the exact Gaussian flow, churn, sigma = 0, no retrace."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import fitted_slope, standard_gaussian_case

DATA, X_T = standard_gaussian_case()
SCHED = DATA.schedule
NUM_STEPS = (10, 20, 40)


def _errors(sampler, spacing="logsnr"):
    model = DATA.model("eps")
    errors = []
    for n in NUM_STEPS:
        ts = js.diffusion.timesteps(SCHED, n, spacing)
        x = js.diffusion.sample(sampler, model, X_T, ts)
        errors.append(float(jnp.max(jnp.abs(x - DATA.flow(X_T, ts[0], ts[-1])))))
    return errors


@pytest.mark.parametrize(
    "sampler, order",
    [(js.diffusion.EulerEDM(), 1.0), (js.diffusion.HeunEDM(), 2.0)],
    ids=["euler", "heun"],
)
def test_convergence_order(sampler, order):
    errors = _errors(sampler)
    assert abs(fitted_slope(NUM_STEPS, errors) + order) < 0.15, errors


def test_euler_edm_is_ddim_without_churn():
    model = DATA.model("x0")
    ts = js.diffusion.timesteps(SCHED, 7)
    a = js.diffusion.sample(js.diffusion.EulerEDM(), model, X_T, ts)
    b = js.diffusion.sample(js.diffusion.DDIM(), model, X_T, ts)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_heun_final_step_to_sigma_zero_is_finite_with_finite_gradients():
    # x0-prediction: the eps conversion divides by sigma, the NaN trap at sigma = 0.
    model = DATA.model("x0")
    ts = jnp.append(js.diffusion.timesteps(SCHED, 8), 0.0)
    sampler = js.diffusion.HeunEDM()

    def loss(x_T, ts):
        return jnp.sum(js.diffusion.sample(sampler, model, x_T, ts) ** 2)

    value, (g_x, g_ts) = jax.value_and_grad(loss, argnums=(0, 1))(X_T, ts)
    assert np.isfinite(value)
    assert np.all(np.isfinite(g_x))
    assert np.all(np.isfinite(g_ts[:-1]))  # d sigma/dt is infinite at t = 0 itself
    # Heun's final Euler step to sigma = 0 returns the denoiser's output there.
    x = js.diffusion.sample(sampler, model, X_T, ts)
    assert np.all(np.isfinite(x))


def test_churn_needs_key_is_reproducible_and_jit_equals_eager():
    model = DATA.model("eps")
    ts = js.diffusion.timesteps(SCHED, 6)
    sampler = js.diffusion.HeunEDM(s_churn=5.0, s_tmin=0.05, s_tmax=50.0)
    with pytest.raises(ValueError, match="key"):
        js.diffusion.sample(sampler, model, X_T, ts)
    key = jax.random.key(0)
    a = js.diffusion.sample(sampler, model, X_T, ts, key=key)
    run = eqx.filter_jit(lambda s, x, key: js.diffusion.sample(s, model, x, ts, key=key))
    np.testing.assert_allclose(run(sampler, X_T, key), a, rtol=1e-12, atol=1e-12)
    # Another key, other noise; no key-free churn: churn really perturbs the path.
    c = run(sampler, X_T, jax.random.key(1))
    assert not np.allclose(a, c)
    # The churn noise of a sample depends on its index only, not on the batch size.
    np.testing.assert_allclose(run(sampler, X_T[:2], key), a[:2], rtol=1e-12, atol=1e-12)


def test_new_churn_value_does_not_recompile():
    model = DATA.model("eps")
    ts = js.diffusion.timesteps(SCHED, 4)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(sampler, key):
        return js.diffusion.sample(sampler, model, X_T, ts, key=key)

    key = jax.random.key(0)
    run(js.diffusion.EulerEDM(s_churn=1.0), key)
    run(js.diffusion.EulerEDM(s_churn=3.0, s_noise=1.007), key)


def test_bad_options():
    with pytest.raises(ValueError, match="s_churn"):
        js.diffusion.HeunEDM(s_churn=-1.0)
    with pytest.raises(ValueError, match="s_noise"):
        js.diffusion.EulerEDM(s_noise=-0.1)
    with pytest.raises(ValueError, match="s_tmax"):
        js.diffusion.EulerEDM(s_tmax=0.0)
