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
