"""UniPC's diffusers options: noise prediction, `disable_corrector` and `solver_p`."""

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


def _run(sampler, model, ts):
    return jax.jit(lambda x: D.sample(sampler, model, x, ts))(X_T)


def _errors(sampler, counts, spacing="karras"):
    """Max errors against the exact flow; one compiled loop over a padded grid for all counts."""
    model, size = GAUSS.model("eps"), max(counts) + 1

    run = padded_grid_loop(sampler, model, size)
    out = []
    for n in counts:
        ts = D.timesteps(SCHED, n, spacing)
        out.append(float(jnp.max(jnp.abs(run(X_T, ts) - GAUSS.flow(X_T, ts[0], ts[-1])))))
    return out


@pytest.mark.parametrize(
    "name,sampler,order,counts",
    [
        ("noise-1", D.UniPC(order=1, predict_x0=False), 2, (128, 256, 512)),
        ("noise-2", D.UniPC(order=2, predict_x0=False), 3, (128, 256, 512)),
        # (on Karras grids its error cancels irregularly: 6.2, 3.9, 3.0, 3.7 between 64 .. 1024
        # steps; the log-SNR grid shows the order cleanly)
        ("noise-3-bh1", D.UniPC(order=3, variant="bh1", predict_x0=False), 4, (64, 128, 256)),
        ("noise-2-noC", D.UniPC(order=2, predict_x0=False, corrector=False), 2, (128, 256, 512)),
        ("disabled", D.UniPC(order=2, disable_corrector=(0, 1, 5)), 3, (128, 256, 512)),
        ("dpmpp2-UniC", D.UniPC(order=2, solver_p=D.DPMSolverPP(order=2)), 3, (128, 256, 512)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_convergence_order_and_point_mass(name, sampler, order, counts):
    errors = _errors(sampler, counts, "logsnr" if name == "noise-3-bh1" else "karras")
    slope = -fitted_slope(counts, errors)
    assert abs(slope - order) < 0.15, f"{name}: errors {errors}, slope {slope}, expected {order}"
    # Point-mass data: a constant eps and x0 along the flow, integrated exactly, and a final
    # step to sigma = 0 lands on the point.
    model = POINT_MASS.model("eps")
    ts = jnp.append(D.timesteps(SCHED, 6), 0.0)
    np.testing.assert_allclose(
        _run(sampler, model, ts), jnp.broadcast_to(POINT_MASS.mean, X_T.shape), atol=1e-11
    )


def test_noise_prediction_first_order_is_ddim():
    model = GAUSS.model("v")
    ts = D.timesteps(SCHED, 7)
    ours = _run(D.UniPC(order=1, predict_x0=False, corrector=False), model, ts)
    np.testing.assert_allclose(ours, _run(D.DDIM(), model, ts), rtol=0, atol=1e-13)


def test_disable_corrector_indexing():
    model = GAUSS.model("eps")
    ts = D.timesteps(SCHED, 8)
    n = ts.shape[0] - 1
    # every prediction uncorrected = no corrector
    np.testing.assert_allclose(
        _run(D.UniPC(disable_corrector=range(n)), model, ts),
        _run(D.UniPC(corrector=False), model, ts),
        rtol=0,
        atol=1e-14,
    )
    # index 3: the prediction of step 3 (x_4) is not corrected at step 4; x_3 and x_5 are
    sampler = D.UniPC(disable_corrector=[3])
    state = sampler.init(model, X_T, ts, None)
    for i in range(6):
        predicted = state.x
        state = sampler.step(model, ts, jnp.asarray(i), state)
        corrected = state.last_x  # where step i started
        same = bool(jnp.all(corrected == predicted))
        assert same == (i in (0, 4)), i


def test_solver_p_is_the_predictor():
    model = GAUSS.model("eps")
    ts = jnp.append(D.timesteps(SCHED, 9), 0.0)
    # without the corrector, UniPC with solver_p is solver_p itself
    for inner in (D.DPMSolverPP(order=3), D.DDIM(), D.DEIS(order=2), D.PNDM(warmup="plms")):
        np.testing.assert_allclose(
            _run(D.UniPC(corrector=False, solver_p=inner), model, ts),
            _run(inner, model, ts),
            rtol=0,
            atol=1e-13,
        )
    # with it, the result differs (UniC moves the predictor's starting points)
    corrected = _run(D.UniPC(solver_p=D.DDIM()), model, ts)
    assert float(jnp.max(jnp.abs(corrected - _run(D.DDIM(), model, ts)))) > 1e-4
    assert D.UniPC(solver_p=D.DDIM()).num_evaluations(9) == 9


def test_bad_options_raise():
    with pytest.raises(ValueError, match="solver_p"):
        D.UniPC(solver_p=D.DDIM(eta=1.0))
    with pytest.raises(ValueError, match="solver_p"):
        D.UniPC(solver_p=D.HeunEDM())
    with pytest.raises(TypeError, match="solver_p"):
        D.UniPC(solver_p="DDIM")
    with pytest.raises(ValueError, match="disable_corrector"):
        D.UniPC(disable_corrector=[-1])
    with pytest.raises(TypeError, match="predict_x0"):
        D.UniPC(predict_x0=1)
    with pytest.raises(ValueError, match="order"):
        D.DCSolver(order=4)
    with pytest.raises(ValueError, match="variant"):
        D.DCSolver(variant="bh3")


GAUSS_MU, GAUSS_STD = 0.7, 0.6


def _diffusers_net(sched):
    """The exact eps network of N(0.7, 0.6^2) data, called with diffusers' timestep."""

    def net(x, k):
        t = (k + 1.0) / (sched.t_grid.shape[0] - 1)
        alpha, sigma = sched.alpha(t), sched.sigma(t)
        return sigma * (x - alpha * GAUSS_MU) / (alpha**2 * GAUSS_STD**2 + sigma**2)

    return net


@pytest.mark.parametrize(
    "options",
    [
        # diffusers returns NaN on these: bh1 / noise prediction divide by the infinite h of
        # the final step to sigma = 0, and order 3 without lower_order_final solves a singular
        # system at its last step.
        {"solver_type": "bh1"},
        {"predict_x0": False},
        {"predict_x0": False, "solver_order": 3, "disable_corrector": [2]},
        {"solver_order": 3, "lower_order_final": False},
    ],
)
def test_final_step_to_zero_stays_finite(options):
    config = {"_class_name": "UniPCMultistepScheduler", **options}
    sched, sampler, ts = D.from_diffusers(config, 50)
    assert float(ts[-1]) == 0.0
    model = D.from_diffusers_model(_diffusers_net(sched), config)
    x0 = D.sample(sampler, model, jnp.linspace(-2.0, 2.0, 16), ts)
    assert bool(jnp.all(jnp.isfinite(x0)))
    # the exact flow of Gaussian data maps x_T to about MU + STD * x_T (alpha(T) ~ 0.006)
    np.testing.assert_allclose(x0, GAUSS_MU + GAUSS_STD * jnp.linspace(-2.0, 2.0, 16), atol=0.02)


def test_from_diffusers_solver_p():
    config = {
        "_class_name": "UniPCMultistepScheduler",
        "solver_p": {"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3},
        "disable_corrector": [1],
        "predict_x0": False,
    }
    _, sampler, _ = D.from_diffusers(config, 12)
    assert isinstance(sampler.solver_p, D.DPMSolverPP) and sampler.solver_p.order == 3
    assert sampler.disable_corrector == (1,) and not sampler.predict_x0
    # a solver_p on another grid (DDIM's default "leading" spacing) is refused
    with pytest.raises(ValueError, match="solver_p"):
        D.from_diffusers({**config, "solver_p": {"_class_name": "DDIMScheduler"}}, 12)
    with pytest.raises(ValueError, match="solver_p"):
        D.from_diffusers({**config, "solver_p": {"_class_name": "EulerDiscreteScheduler"}}, 12)
    with pytest.raises(ValueError, match="thresholding"):
        D.from_diffusers({**config, "thresholding": True}, 12)
