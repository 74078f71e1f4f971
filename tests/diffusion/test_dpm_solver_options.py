"""Singlestep DPM-Solver in noise prediction (diffusers' `algorithm_type="dpmsolver"`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import GaussianData, fitted_slope, standard_gaussian_case

D = js.diffusion
GAUSS, X_T = standard_gaussian_case()
SCHED = GAUSS.schedule
POINT_MASS = GaussianData(jnp.asarray([0.7, -1.2, 0.4]), np.zeros((3, 3)), SCHED)


def _errors(sampler, counts, spacing="logsnr"):
    """Max errors against the exact flow; one compiled loop over a padded grid for all counts
    (the order schedule depends on the step count: it is rebuilt per count)."""
    model = GAUSS.model("eps")
    out = []
    for n in counts:
        ts = D.timesteps(SCHED, n, spacing)
        x = jax.jit(lambda x_T, ts: D.sample(sampler, model, x_T, ts))(X_T, ts)
        out.append(float(jnp.max(jnp.abs(x - GAUSS.flow(X_T, ts[0], ts[-1])))))
    return out


@pytest.mark.parametrize(
    "sampler,order",
    [
        (D.DPMSolverSinglestep(order=2), 2),
        (D.DPMSolverSinglestep(order=2, solver_type="heun"), 2),
        (D.DPMSolverSinglestep(order=3, solver_type="heun"), 3),
        (D.DPMSolverSinglestep(order=3), 3),
    ],
    ids=["2-midpoint", "2-heun", "3-heun", "3-midpoint"],
)
def test_convergence_order_and_point_mass(sampler, order):
    counts = (48, 96, 192)
    errors = _errors(sampler, counts)
    slope = -fitted_slope(counts, errors)
    assert abs(slope - order) < 0.15, f"errors {errors}, slope {slope}, expected {order}"
    model = POINT_MASS.model("eps")
    ts = jnp.append(D.timesteps(SCHED, 6), 0.0)
    np.testing.assert_allclose(
        D.sample(sampler, model, X_T, ts),
        jnp.broadcast_to(POINT_MASS.mean, X_T.shape),
        atol=1e-11,
    )


def test_first_order_is_ddim_and_data_variant_differs():
    model = GAUSS.model("v")
    ts = D.timesteps(SCHED, 7)
    ddim = D.sample(D.DDIM(), model, X_T, ts)
    np.testing.assert_allclose(
        D.sample(D.DPMSolverSinglestep(order=1), model, X_T, ts), ddim, rtol=0, atol=1e-13
    )
    noise = D.sample(D.DPMSolverSinglestep(order=3), model, X_T, ts)
    data = D.sample(D.DPMSolverPPSinglestep(order=3), model, X_T, ts)
    assert float(jnp.max(jnp.abs(noise - data))) > 1e-6


def test_from_diffusers_and_final_step_to_zero():
    config = {"_class_name": "DPMSolverSinglestepScheduler", "algorithm_type": "dpmsolver"}
    sched, sampler, ts = D.from_diffusers({**config, "solver_order": 3}, 50)
    assert isinstance(sampler, D.DPMSolverSinglestep) and sampler.order == 3
    assert float(ts[-1]) == 0.0  # diffusers returns NaN on this last step; ours is finite

    def net(x, k):  # the exact eps of N(0.7, 0.6^2) data at diffusers' timestep k
        t = (k + 1.0) / 1000
        a, s = sched.alpha(t), sched.sigma(t)
        return s * (x - a * 0.7) / (a**2 * 0.36 + s**2)

    model = D.from_diffusers_model(net, config)
    x0 = D.sample(sampler, model, jnp.linspace(-2.0, 2.0, 9), ts)
    assert bool(jnp.all(jnp.isfinite(x0)))
    np.testing.assert_allclose(x0, 0.7 + 0.6 * jnp.linspace(-2.0, 2.0, 9), atol=0.03)
    with pytest.raises(ValueError, match="algorithm_type"):
        D.from_diffusers({**config, "algorithm_type": "sde-dpmsolver"}, 10)
    with pytest.raises(ValueError, match="order"):
        D.DPMSolverSinglestep(order=4)


def test_min_step_ratio_guards_the_long_last_step():
    sd = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    config = {"_class_name": "DPMSolverMultistepScheduler", **sd, "solver_order": 3}
    sched, _, ts = D.from_diffusers({**config, "final_sigmas_type": "sigma_min"}, 25)
    data = GaussianData(jnp.asarray([0.7]), np.asarray([[0.36]]), sched)
    model = data.model("eps")
    z = jnp.linspace(-2.0, 2.0, 9)[:, None]
    x_T, exact = data.flow(z, 1.0, ts[0]), data.flow(z, 1.0, ts[-1])

    def error(sampler, ts=ts):
        return float(jnp.max(jnp.abs(D.sample(sampler, model, x_T, ts) - exact)))

    taylor, guarded = D.DPMSolverPP(order=3), D.DPMSolverPP(order=3, min_step_ratio=0.5)
    # the last step (h = 1.9 after 0.4: r = 0.21) dominates the Taylor 3M's error here
    assert error(guarded) < error(taylor) / 3
    # steps of slowly varying length never trigger the guard
    karras = D.timesteps(SCHED, 20, "karras")
    model3 = GAUSS.model("eps")
    np.testing.assert_array_equal(
        D.sample(guarded, model3, X_T, karras), D.sample(taylor, model3, X_T, karras)
    )
    with pytest.raises(ValueError, match="min_step_ratio"):
        D.DPMSolverPP(min_step_ratio=1.5)
