"""BDIA: orders, gamma = 0 is DDIM, exact inversion round trip, no recompile, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import fitted_slope, standard_gaussian_case

DATA, X_T = standard_gaussian_case()
SCHED = DATA.schedule
MODEL = DATA.model("eps")
# BDIA(1) is a leapfrog-type scheme whose parasitic mode makes 10 steps pre-asymptotic.
NUM_STEPS = (20, 40, 80)


@pytest.mark.parametrize("gamma, order", [(1.0, 2.0), (0.5, 1.0)])
def test_convergence_order(gamma, order):
    errors = []
    for n in NUM_STEPS:
        ts = js.diffusion.timesteps(SCHED, n)
        x = js.diffusion.sample(js.diffusion.BDIA(gamma=gamma), MODEL, X_T, ts)
        errors.append(float(jnp.max(jnp.abs(x - DATA.flow(X_T, ts[0], ts[-1])))))
    assert abs(fitted_slope(NUM_STEPS, errors) + order) < 0.15, errors


def test_gamma_zero_is_ddim():
    ts = js.diffusion.timesteps(SCHED, 6)
    a = js.diffusion.sample(js.diffusion.BDIA(gamma=0.0), MODEL, X_T, ts)
    b = js.diffusion.sample(js.diffusion.DDIM(), MODEL, X_T, ts)
    np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 0.7])
def test_exact_inversion_round_trip(gamma):
    # x0-prediction model and a final step to sigma = 0: inversion never evaluates there.
    model = DATA.model("x0")
    ts = jnp.append(js.diffusion.timesteps(SCHED, 12), 0.0)
    sampler = js.diffusion.BDIA(gamma=gamma)
    x0 = js.diffusion.sample(sampler, model, X_T, ts)
    x1 = js.diffusion.sample(sampler, model, X_T, ts[:-1])
    back = js.diffusion.invert(sampler, model, x0, ts, x_prev=x1)
    np.testing.assert_allclose(back, X_T, atol=1e-7, rtol=0)
    # ... also under jit, and the grid survives being traced.
    jitted = jax.jit(lambda x0, x1, ts: js.diffusion.invert(sampler, model, x0, ts, x_prev=x1))
    np.testing.assert_allclose(jitted(x0, x1, ts), back, atol=1e-12)
    # And the other way round: sampling from the inverted noise reproduces the data.
    np.testing.assert_allclose(js.diffusion.sample(sampler, model, back, ts), x0, atol=1e-7)


def test_new_gamma_does_not_recompile():
    ts = js.diffusion.timesteps(SCHED, 4)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(sampler):
        return js.diffusion.sample(sampler, MODEL, X_T, ts)

    run(js.diffusion.BDIA(gamma=0.3))
    run(js.diffusion.BDIA(gamma=0.9))


def test_bad_options():
    with pytest.raises(ValueError, match="gamma"):
        js.diffusion.BDIA(gamma=1.5)
    ts = js.diffusion.timesteps(SCHED, 3)
    with pytest.raises(ValueError, match="gamma"):
        js.diffusion.invert(js.diffusion.BDIA(gamma=0.0), MODEL, X_T, ts)
    with pytest.raises(ValueError, match="x_prev"):
        js.diffusion.invert(js.diffusion.BDIA(), MODEL, X_T, ts, x_prev=X_T[:2])
