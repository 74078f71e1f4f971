import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

D = js.diffusion


@pytest.mark.parametrize("spacing", ["logsnr", "uniform", "quadratic", "karras"])
@pytest.mark.parametrize("sched", [D.VPLinear(), D.VPCosine(), D.VE(), D.FlowMatching()])
def test_grid_shape_endpoints_monotone(spacing, sched):
    ts = D.timesteps(sched, 7, spacing)
    assert ts.shape == (8,)
    assert float(ts[0]) == pytest.approx(sched.t_start_default, abs=0)
    assert float(ts[-1]) == pytest.approx(sched.t_end_default, abs=0)
    assert np.all(np.diff(np.asarray(ts)) < 0)


def test_spacings_follow_their_formulas():
    sched = D.VPLinear()
    ts = D.timesteps(sched, 10, "logsnr")
    lam = np.asarray(sched.logsnr(ts))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-9)
    ts = D.timesteps(sched, 10, "uniform", t_start=0.9, t_end=0.1)
    np.testing.assert_allclose(ts, np.linspace(0.9, 0.1, 11), rtol=1e-14)
    ts = D.timesteps(sched, 10, "quadratic", t_start=1.0, t_end=0.0)
    np.testing.assert_allclose(ts, np.linspace(1.0, 0.0, 11) ** 2, rtol=1e-14, atol=1e-16)
    ts = D.timesteps(sched, 10, "karras")
    s = np.exp(-np.asarray(sched.logsnr(ts)))  # sigma / alpha
    ramp = np.linspace(0, 1, 11)
    expected = (s[0] ** (1 / 7) + ramp * (s[-1] ** (1 / 7) - s[0] ** (1 / 7))) ** 7
    np.testing.assert_allclose(s, expected, rtol=1e-9)


def test_dtype_and_sigma_zero_endpoint():
    ts = D.timesteps(D.VPLinear(), 5, dtype=jnp.float32)
    assert ts.dtype == jnp.float32
    ts = D.timesteps(D.VPLinear(), 5, "uniform", t_end=0.0)
    assert float(ts[-1]) == 0.0


def test_bad_inputs_raise_clearly():
    sched = D.VPLinear()
    with pytest.raises(ValueError, match="spacing"):
        D.timesteps(sched, 5, "cosine")
    with pytest.raises(ValueError, match="num_steps"):
        D.timesteps(sched, 0)
    with pytest.raises(ValueError, match="num_steps"):
        D.timesteps(sched, 2.5)
    with pytest.raises(ValueError, match="t_start"):
        D.timesteps(sched, 5, t_start=0.1, t_end=0.5)
    with pytest.raises(ValueError, match="finite log-SNR"):
        D.timesteps(sched, 5, "logsnr", t_end=0.0)
    with pytest.raises(ValueError, match="duplicate"):
        D.timesteps(sched, 100_000, "uniform", t_start=0.5001, t_end=0.5, dtype=jnp.float32)
    with pytest.raises(TypeError, match="schedule"):
        D.timesteps("vp", 5)


def test_karras_and_exponential_sigmas_follow_their_formulas():
    s = np.asarray(D.karras_sigmas(0.002, 80.0, 9))
    ramp = np.linspace(0, 1, 9)
    expected = (80.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    np.testing.assert_allclose(s, expected, rtol=1e-13)
    s = np.asarray(D.karras_sigmas(0.1, 10.0, 5, rho=1.0))
    np.testing.assert_allclose(s, np.linspace(10.0, 0.1, 5), rtol=1e-13)
    s = np.asarray(D.exponential_sigmas(0.03, 14.6, 12))
    assert s[0] == pytest.approx(14.6, rel=1e-14) and s[-1] == pytest.approx(0.03, rel=1e-14)
    np.testing.assert_allclose(np.diff(np.log(s)), np.log(0.03 / 14.6) / 11, rtol=1e-12)
    assert D.exponential_sigmas(1.0, 2.0, 4, dtype=jnp.float32).dtype == jnp.float32


def test_sigma_grids_are_differentiable_in_their_endpoints():
    # d sigma_i / d sigma_max of the exponential grid: (sigma_i / sigma_max) (1 - i/(n-1))
    grad = jax.jacfwd(lambda hi: D.exponential_sigmas(0.1, hi, 5))(10.0)
    s = np.asarray(D.exponential_sigmas(0.1, 10.0, 5))
    np.testing.assert_allclose(grad, s / 10.0 * (1 - np.arange(5) / 4), rtol=1e-10)
    grad = jax.grad(lambda lo: D.beta_sigmas(lo, 10.0, 6).sum())(0.5)
    ppf = D.beta_ppf(1 - np.linspace(0, 1, 6), 0.6, 0.6)
    assert float(grad) == pytest.approx(np.sum(1 - ppf), rel=1e-12)


@pytest.mark.parametrize("a, b", [(0.6, 0.6), (0.5, 2.0), (3.0, 0.7), (1.0, 1.0), (2.5, 4.0)])
def test_beta_ppf_matches_scipy(a, b):
    stats = pytest.importorskip("scipy.stats")
    q = np.concatenate([[0.0, 1e-9, 1e-4], np.linspace(0.01, 0.99, 25), [1 - 1e-4, 1.0]])
    np.testing.assert_allclose(D.beta_ppf(q, a, b), stats.beta.ppf(q, a, b), rtol=0, atol=2e-14)


def test_beta_ppf_without_scipy_properties():
    q = np.linspace(0, 1, 21)
    x = D.beta_ppf(q, 0.6, 0.6)
    np.testing.assert_allclose(x + x[::-1], 1.0, atol=1e-15)  # symmetric law
    assert np.all(np.diff(x) > 0) and x[0] == 0.0 and x[-1] == 1.0
    np.testing.assert_allclose(D.beta_ppf(q, 1.0, 1.0), q, atol=1e-15)  # uniform
    np.testing.assert_allclose(D.beta_ppf(q, 2.0, 1.0), np.sqrt(q), atol=1e-15)  # CDF x^2
    np.testing.assert_allclose(D.beta_ppf(q, 1.0, 3.0), 1 - (1 - q) ** (1 / 3), atol=1e-15)
    assert D.beta_ppf(np.zeros((2, 3)), 2.0, 2.0).shape == (2, 3)


def test_beta_sigmas_cluster_at_both_ends():
    s = np.asarray(D.beta_sigmas(0.03, 14.6, 10))
    assert s[0] == pytest.approx(14.6, rel=1e-14) and s[-1] == pytest.approx(0.03, rel=1e-14)
    steps = -np.diff(s)
    assert np.all(steps > 0) and steps[0] < steps[4] and steps[-1] < steps[4]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: D.karras_sigmas(0.0, 1.0, 5), "sigma_min"),
        (lambda: D.exponential_sigmas(2.0, 1.0, 5), "sigma_min"),
        (lambda: D.beta_sigmas(0.1, 1.0, 0), "num"),
        (lambda: D.beta_ppf([0.5], -1.0, 1.0), "Beta parameters"),
        (lambda: D.beta_ppf([1.5], 1.0, 1.0), r"\[0, 1\]"),
    ],
)
def test_sigma_grid_input_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_shifted_and_stretched_flow_sigmas():
    s = np.linspace(1.0, 0.05, 7)
    for shift in (1.0, 3.0, 0.5):
        np.testing.assert_allclose(
            D.shifted_flow_sigmas(s, shift), D.FlowMatching(shift=shift).sigma(s), rtol=1e-14
        )
        # dynamic shifting: mu = log(shift) (exponential) and mu = shift (linear) agree
        np.testing.assert_allclose(
            D.shifted_flow_sigmas(s, np.log(shift), "exponential"),
            D.shifted_flow_sigmas(s, shift),
            rtol=1e-14,
        )
        np.testing.assert_allclose(
            D.shifted_flow_sigmas(s, shift, "linear"), D.shifted_flow_sigmas(s, shift), rtol=1e-14
        )
    stretched = D.stretched_flow_sigmas(D.shifted_flow_sigmas(s, 3.0), 0.02)
    assert stretched[0] == pytest.approx(1.0, abs=1e-15)
    assert stretched[-1] == pytest.approx(0.02, rel=1e-13)
    # an affine map of 1 - s
    one_minus = 1 - D.shifted_flow_sigmas(s, 3.0)
    np.testing.assert_allclose((1 - stretched)[1:] / one_minus[1:], (0.98) / one_minus[-1])
    with pytest.raises(ValueError, match="kind"):
        D.shifted_flow_sigmas(s, 1.0, "cubic")
