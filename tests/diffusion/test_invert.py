"""Approximate inversion (DDIM, DPM-Solver++): error falls with the number of steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import fitted_slope, standard_gaussian_case

DATA, X_T = standard_gaussian_case()
SCHED = DATA.schedule
MODEL = DATA.model("eps")


@pytest.mark.parametrize(
    "sampler, order",
    [(js.diffusion.DDIM(), 1.0), (js.diffusion.DPMSolverPP(order=2), 2.0)],
    ids=["ddim", "dpmpp2m"],
)
def test_round_trip_error_falls_with_steps(sampler, order):
    num_steps = (10, 20, 40)
    errors = []
    for n in num_steps:
        ts = js.diffusion.timesteps(SCHED, n)
        x0 = js.diffusion.sample(sampler, MODEL, X_T, ts)
        errors.append(float(jnp.max(jnp.abs(js.diffusion.invert(sampler, MODEL, x0, ts) - X_T))))
    assert errors[0] > errors[1] > errors[2], errors
    # The round trip converges at least at the method's order (DPM-Solver++ drops to first
    # order on its final steps below 15 steps, so it gains more than 2 from 10 to 20 steps).
    assert fitted_slope(num_steps, errors) < -(order - 0.15), errors


def test_ddim_inversion_is_the_exact_flow_in_the_limit():
    # Inverting exact data points of the flow: DDIM inversion approximates the flow backwards.
    ts = js.diffusion.timesteps(SCHED, 200)
    x0 = DATA.flow(X_T, ts[0], ts[-1])
    back = js.diffusion.invert(js.diffusion.DDIM(), MODEL, x0, ts)
    np.testing.assert_allclose(back, X_T, atol=0.05)


def test_jit_equals_eager():
    sampler = js.diffusion.DPMSolverPP(order=2)
    ts = js.diffusion.timesteps(SCHED, 8)
    x0 = js.diffusion.sample(sampler, MODEL, X_T, ts)
    a = js.diffusion.invert(sampler, MODEL, x0, ts)
    b = jax.jit(lambda x: js.diffusion.invert(sampler, MODEL, x, ts))(x0)
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_bad_inputs():
    ts = js.diffusion.timesteps(SCHED, 4)
    with pytest.raises(ValueError, match="deterministic"):
        js.diffusion.invert(js.diffusion.DDIM(eta=0.5), MODEL, X_T, ts)
    with pytest.raises(ValueError, match="deterministic"):
        js.diffusion.invert(js.diffusion.SDEDPMSolverPP(), MODEL, X_T, ts)
    with pytest.raises(ValueError, match="sigma"):
        js.diffusion.invert(js.diffusion.DDIM(), MODEL, X_T, jnp.append(ts, 0.0))
    with pytest.raises(ValueError, match="x_prev"):
        js.diffusion.invert(js.diffusion.DDIM(), MODEL, X_T, ts, x_prev=X_T)
    with pytest.raises(ValueError, match="decreasing"):
        js.diffusion.invert(js.diffusion.DDIM(), MODEL, X_T, ts[::-1])
