"""PNDM's diffusers options: the PRK warm-up and where a v output is converted to eps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import GaussianData, fitted_slope, padded_grid_loop, standard_gaussian_case

D = js.diffusion
GAUSS, X_T = standard_gaussian_case()
SCHED = GAUSS.schedule
POINT_MASS = GaussianData(jnp.asarray([0.7, -1.2, 0.4]), np.zeros((3, 3)), SCHED)


def _sample(sampler, model, ts):
    return jax.jit(lambda x, ts: D.sample(sampler, model, x, ts))(X_T, ts)


def _errors(sampler, prediction, counts):
    """Max errors against the exact flow; one compiled loop over a padded grid for all counts."""
    model, size = GAUSS.model(prediction), max(counts) + 1

    run = padded_grid_loop(sampler, model, size)
    out = []
    for n in counts:
        ts = D.timesteps(SCHED, n, "uniform")
        out.append(float(jnp.max(jnp.abs(run(X_T, ts) - GAUSS.flow(X_T, ts[0], ts[-1])))))
    return out


@pytest.mark.parametrize("warmup", ["prk", "heun"])
def test_convert_output(warmup):
    ts = D.timesteps(SCHED, 12, "uniform")
    each, combined = D.PNDM(warmup=warmup), D.PNDM(warmup=warmup, convert_output="combined")
    eps_run = _sample(each, GAUSS.model("eps"), ts)
    # eps models: the two conversions are the same; "each" is invariant to the prediction type
    np.testing.assert_allclose(_sample(combined, GAUSS.model("eps"), ts), eps_run, atol=1e-14)
    np.testing.assert_allclose(_sample(each, GAUSS.model("v"), ts), eps_run, atol=1e-12)
    # "combined" (diffusers' v conversion) differs, and converges at order 1 only
    assert float(jnp.max(jnp.abs(_sample(combined, GAUSS.model("v"), ts) - eps_run))) > 1e-4
    counts = (100, 200, 400)
    slope = -fitted_slope(counts, _errors(combined, "v", counts))
    assert abs(slope - 1.0) < 0.15, slope


def test_prk_warmup_and_final_step():
    sampler = D.PNDM(warmup="prk")
    assert sampler.num_evaluations(10) == 12 + 7  # diffusers' 19 calls for 10 steps
    # point-mass data: the PRK and PLMS transfers are exact, and so is a final step to 0
    ts = jnp.append(D.timesteps(SCHED, 6, "uniform"), 0.0)
    np.testing.assert_allclose(
        _sample(sampler, POINT_MASS.model("v"), ts),
        jnp.broadcast_to(POINT_MASS.mean, X_T.shape),
        atol=1e-11,
    )
    # the final step to sigma = 0 is the transfer with the combined eps (not the last eps alone)
    model = GAUSS.model("eps")
    state = sampler.init(model, X_T, ts, None)
    for i in range(len(ts) - 2):
        state = sampler.step(model, ts, jnp.asarray(i), state)
    x, i = state.x, len(ts) - 2
    eps = [model.eps(x, ts[i])] + [state.history[j] for j in range(3)]
    eps_prime = (55 * eps[0] - 59 * eps[1] + 37 * eps[2] - 9 * eps[3]) / 24
    expected = (x - SCHED.sigma(ts[i]) * eps_prime) / SCHED.alpha(ts[i]) * SCHED.alpha(0.0)
    last = sampler.step(model, ts, jnp.asarray(i), state).x
    np.testing.assert_allclose(last, expected, atol=1e-13)


def test_from_diffusers_pndm():
    _, sampler, ts = D.from_diffusers({"_class_name": "PNDMScheduler"}, 10)
    assert sampler.warmup == "prk" and ts.shape == (10,)  # (the last step, of length 0, dropped)
    config = {"_class_name": "PNDMScheduler", "skip_prk_steps": True}
    _, sampler, _ = D.from_diffusers({**config, "prediction_type": "v_prediction"}, 10)
    assert sampler.warmup == "heun" and sampler.convert_output == "combined"
    with pytest.raises(ValueError, match="skip_prk_steps"):
        D.from_diffusers({"_class_name": "PNDMScheduler"}, 8)  # T // n = 125 is odd
    with pytest.raises(ValueError, match="convert_output"):
        D.PNDM(convert_output="natural")
