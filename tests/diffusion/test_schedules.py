import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

D = js.diffusion

SCHEDULES = {
    "VPLinear": D.VPLinear(),
    "VPCosine": D.VPCosine(),
    "VPDiscrete": D.VPDiscrete.ddpm_linear(),
    "VPScaledLinear": D.VPDiscrete.scaled_linear(),
    "VE": D.VE(),
    "FlowMatching": D.FlowMatching(),
    "FlowMatchingShift": D.FlowMatching(shift=3.0),
}
TS = np.array([1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])


@pytest.mark.parametrize("name", SCHEDULES)
def test_logsnr_consistent_and_invertible(name):
    sched = SCHEDULES[name]
    t = jnp.asarray(TS)
    alpha, sigma, lam = sched.alpha(t), sched.sigma(t), sched.logsnr(t)
    np.testing.assert_allclose(
        lam, np.log(np.asarray(alpha) / np.asarray(sigma)), rtol=1e-12, atol=1e-12
    )
    assert np.all(np.diff(np.asarray(lam)) < 0), "log-SNR must decrease in t"
    np.testing.assert_allclose(sched.t_of_logsnr(lam), t, rtol=1e-10, atol=1e-12)
    if name.startswith("VP"):
        np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", SCHEDULES)
def test_float32_keeps_relative_precision(name):
    sched = SCHEDULES[name]
    t64 = jnp.asarray([1e-4, 1e-3, 0.5, 0.98])
    t32 = t64.astype(jnp.float32)
    for fn in (sched.alpha, sched.sigma):
        out32 = fn(t32)
        assert out32.dtype == jnp.float32
        np.testing.assert_allclose(out32, fn(t32.astype(jnp.float64)), rtol=2e-6)
    lam32 = sched.logsnr(t32)
    np.testing.assert_allclose(lam32, sched.logsnr(t32.astype(jnp.float64)), rtol=2e-6, atol=2e-6)
    back = sched.t_of_logsnr(lam32)
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(back, t32, rtol=5e-5, atol=1e-6)


def test_vp_linear_closed_form_and_zero():
    sched = D.VPLinear(beta_min=0.1, beta_max=20.0)
    t = 0.4
    log_alpha = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
    np.testing.assert_allclose(sched.alpha(t), np.exp(log_alpha), rtol=1e-14)
    assert float(sched.sigma(0.0)) == 0.0 and float(sched.alpha(0.0)) == 1.0
    assert float(sched.logsnr(0.0)) == np.inf


def test_vp_discrete_matches_cumprod():
    betas = np.linspace(1e-4, 0.02, 1000)
    sched = D.VPDiscrete(betas)
    alpha_bar = np.cumprod(1 - betas)
    k = np.array([0, 10, 500, 999])
    np.testing.assert_allclose(
        sched.alpha(jnp.asarray((k + 1) / 1000)) ** 2, alpha_bar[k], rtol=1e-12
    )
    sl = D.VPDiscrete.scaled_linear()
    betas_sl = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    np.testing.assert_allclose(sl.alpha(1.0) ** 2, np.prod(1 - betas_sl), rtol=1e-10)
    assert sched.t_end_default == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="betas"):
        D.VPDiscrete(np.array([0.1, 1.5]))


def test_vp_cosine_formula_and_clipping():
    sched = D.VPCosine(s=0.008)
    t = np.array([0.0, 0.2, 0.6, 0.9])
    f = np.cos(0.5 * np.pi * (t + 0.008) / 1.008) ** 2
    np.testing.assert_allclose(sched.alpha(jnp.asarray(t)) ** 2, f / f[0], rtol=1e-12)
    # Beyond t_max the log-SNR is clipped at logsnr_min instead of going to -inf.
    np.testing.assert_allclose(sched.logsnr(1.0), -5.0, rtol=1e-10)
    assert 0.995 < float(sched.t_max) < 0.997
    np.testing.assert_allclose(sched.t_of_logsnr(-30.0), sched.t_max, rtol=1e-12)


def test_ve_and_flow_matching_closed_forms():
    ve = D.VE(sigma_min=0.01, sigma_max=50.0)
    np.testing.assert_allclose(ve.sigma(jnp.asarray([0.0, 1.0])), [0.01, 50.0], rtol=1e-12)
    np.testing.assert_allclose(ve.alpha(0.3), 1.0)
    fm = D.FlowMatching()
    np.testing.assert_allclose(fm.alpha(0.3), 0.7, rtol=1e-14)
    np.testing.assert_allclose(fm.sigma(0.3), 0.3, rtol=1e-14)
    shifted = D.FlowMatching(shift=3.0)
    np.testing.assert_allclose(shifted.sigma(0.3), 0.9 / 1.6, rtol=1e-14)
    np.testing.assert_allclose(shifted.alpha(0.3) + shifted.sigma(0.3), 1.0, rtol=1e-14)


def test_schedule_parameters_are_traced_not_static():
    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def logsnr(sched, t):
        return sched.logsnr(t)

    a = logsnr(D.VPLinear(jnp.asarray(0.1), jnp.asarray(20.0)), 0.5)
    b = logsnr(D.VPLinear(jnp.asarray(0.2), jnp.asarray(10.0)), 0.5)
    assert float(a) != float(b)
    # And differentiable with respect to them.
    g = jax.grad(lambda bmax: D.VPLinear(0.1, bmax).logsnr(0.5))(20.0)
    eps = 1e-6
    fd = (D.VPLinear(0.1, 20.0 + eps).logsnr(0.5) - D.VPLinear(0.1, 20.0 - eps).logsnr(0.5)) / (
        2 * eps
    )
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_zero_terminal_snr_betas_and_schedule():
    base = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    betas = D.zero_terminal_snr_betas(base)
    assert betas[-1] == 1.0 and np.all((betas[:-1] > 0) & (betas[:-1] < 1))
    root = np.sqrt(np.cumprod(1 - betas))
    root0 = np.sqrt(np.cumprod(1 - base))
    assert root[0] == pytest.approx(root0[0], rel=1e-14)
    # sqrt(alpha_bar) is an affine map of the original one (Lin et al. 2024, Algorithm 1)
    slope = (root[1:-1] - root[0]) / (root0[1:-1] - root0[0])
    np.testing.assert_allclose(slope, slope[0], rtol=1e-9)
    sched = D.VPDiscrete(betas)
    t = jnp.array([0.5, 0.999, 0.9995, 1.0])
    assert float(sched.alpha(1.0)) == 0.0 and float(sched.sigma(1.0)) == 1.0
    assert float(sched.logsnr(1.0)) == -np.inf and float(sched.t_of_logsnr(-jnp.inf)) == 1.0
    np.testing.assert_allclose(sched.t_of_logsnr(sched.logsnr(t)), t, rtol=1e-12)
    assert np.all(np.diff(np.asarray(sched.logsnr(t))) < 0)


def test_zero_terminal_snr_sampling_from_pure_noise():
    """DDIM and DPM-Solver++ from t = 1 (alpha = 0, log-SNR = -inf) with a v-prediction model
    on Gaussian data (exact posterior mean): finite, and the data law."""
    mu, std = 0.7, 0.6
    sched = D.VPDiscrete(
        D.zero_terminal_snr_betas(np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    )

    def v_net(x, t):
        alpha, sigma = sched.alpha(t), sched.sigma(t)
        x0 = mu + alpha * std**2 * (x - alpha * mu) / (alpha**2 * std**2 + sigma**2)
        eps = (x - alpha * x0) / sigma
        return alpha * eps - sigma * x0

    model = D.Model(v_net, sched, prediction="v")
    ts = jnp.append(jnp.linspace(1.0, 0.001, 40), 0.0)
    x_T = jax.random.normal(jax.random.key(0), (4000,))
    for sampler in (D.DDIM(), D.DPMSolverPP(order=2)):
        x0 = D.sample(sampler, model, x_T, ts)
        assert bool(jnp.all(jnp.isfinite(x0)))
        # the probability-flow map sends N(0, 1) to N(mu, std^2) (sampling error 4000 draws)
        assert float(jnp.mean(x0)) == pytest.approx(mu, abs=0.05)
        assert float(jnp.std(x0)) == pytest.approx(std, abs=0.05)
