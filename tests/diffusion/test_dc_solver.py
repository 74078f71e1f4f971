"""DC-Solver: ratios of 1 are UniPC; the compensation is exact on quadratics; fitted ratios
lower the error at low NFE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from jaxsolve.diffusion._dc_solver import compensate
from tests.helpers import standard_gaussian_case

D = js.diffusion
DATA, X_T = standard_gaussian_case()
SCHED = DATA.schedule
MODEL = DATA.model("eps")


def test_unit_ratios_are_unipc():
    order = 3
    ts = D.timesteps(SCHED, 7)
    a = D.sample(D.DCSolver(order=order), MODEL, X_T, ts)
    b = D.sample(D.DCSolver(jnp.ones(7), order=order), MODEL, X_T, ts)
    c = D.sample(D.UniPC(order=order), MODEL, X_T, ts)
    np.testing.assert_allclose(a, c, rtol=0, atol=1e-13)
    np.testing.assert_allclose(b, c, rtol=0, atol=1e-13)


def test_compensation_is_exact_on_quadratics():
    ts = jnp.asarray([0.9, 0.7, 0.4, 0.3])
    poly = lambda t: 1.0 - 2.0 * t + 3.0 * t**2
    i = 3
    m = [poly(ts[i - j]) * jnp.ones(2) for j in range(3)]  # newest first
    for ratio in (0.5, 1.0, 1.3):
        tau = ts[i - 1] + ratio * (ts[i] - ts[i - 1])
        np.testing.assert_allclose(compensate(m, ts, i, ratio), poly(tau), rtol=1e-12)


def test_fitted_ratios_lower_the_error_at_low_nfe():
    # Fitted on 16 reference trajectories, tested on 256 new starting points (8 NFE).
    x_fit = jax.random.normal(jax.random.key(0), (16, 3), jnp.float64)
    x_T = jax.random.normal(jax.random.key(1), (256, 3), jnp.float64)
    ts = D.timesteps(SCHED, 8)
    exact = DATA.flow(x_T, ts[0], ts[-1])
    dc = D.fit_dc_ratios(D.DCSolver(order=3), MODEL, x_fit, ts)
    assert dc.ratios.shape == (8,) and np.all(np.isfinite(dc.ratios))
    np.testing.assert_array_equal(dc.ratios[:2], [1.0, 1.0])  # the warm-up is never compensated
    error = lambda s: float(jnp.mean(jnp.linalg.norm(D.sample(s, MODEL, x_T, ts) - exact, axis=-1)))
    base, compensated = error(D.UniPC(order=3)), error(dc)
    assert compensated < 0.5 * base, (base, compensated)
    # New ratios do not recompile a jitted sampler (an array field).
    run = jax.jit(lambda s: D.sample(s, MODEL, x_T, ts))
    np.testing.assert_allclose(run(dc), D.sample(dc, MODEL, x_T, ts), atol=1e-12)


def test_bad_inputs():
    ts = D.timesteps(SCHED, 4)
    with pytest.raises(ValueError, match="ratios"):
        D.sample(D.DCSolver(jnp.ones(3)), MODEL, X_T, ts)
    with pytest.raises(ValueError, match="order"):
        D.DCSolver(order=4)
    with pytest.raises(ValueError, match="1-D"):
        D.DCSolver(jnp.ones((2, 2)))
    with pytest.raises(TypeError, match="DCSolver"):
        D.fit_dc_ratios(D.UniPC(), MODEL, X_T, ts)
