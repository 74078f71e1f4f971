import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import GaussianData, exact_fn, standard_gaussian_case

D = js.diffusion
PREDICTIONS = ["eps", "x0", "v", "velocity", "score"]


@pytest.mark.parametrize("schedule", [D.VPLinear(), D.FlowMatching(shift=2.0), D.VE()])
def test_conversions_are_exact_identities(schedule):
    data, x = standard_gaussian_case(schedule)
    t = 0.37
    ref_x0 = data.x0(x, t)
    ref_eps = data.eps(x, t)
    ref_score = -ref_eps / schedule.sigma(t)
    # The probability-flow velocity is the time derivative of the exact flow map.
    h = 1e-6
    ref_vel = (data.flow(x, t, t + h) - data.flow(x, t, t - h)) / (2 * h)
    for pred in PREDICTIONS:
        model = data.model(pred)
        np.testing.assert_allclose(model.x0(x, t), ref_x0, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(model.eps(x, t), ref_eps, rtol=1e-10, atol=1e-10)
        x0b, epsb = model.x0_and_eps(x, t)
        np.testing.assert_allclose(x0b, ref_x0, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(epsb, ref_eps, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(model.score(x, t), ref_score, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(model.velocity(x, t), ref_vel, rtol=1e-6, atol=1e-6)


def test_float32_model_stays_float32():
    data, x = standard_gaussian_case(dtype=jnp.float32)
    for pred in PREDICTIONS:
        assert data.model(pred).x0(x, jnp.float32(0.5)).dtype == jnp.float32


def test_guidance_combines_outputs_affinely():
    sched = D.VPLinear()
    datasets = {c: GaussianData(jnp.asarray([c, -c]), np.eye(2) * 0.5, sched) for c in (0.0, 1.0)}

    def fn(x, t, cond):
        # A conditional x0-network: the exact denoiser of the dataset named by `cond`.
        out0 = exact_fn(datasets[0.0].x0, sched, "x0")(x, t)
        out1 = exact_fn(datasets[1.0].x0, sched, "x0")(x, t)
        return jnp.where(cond > 0.5, out1, out0)

    model = D.Model(fn, sched, prediction="x0")
    guided = model.guided(D.Guidance(cond=jnp.asarray(1.0), uncond=jnp.asarray(0.0), scale=2.5))
    x = jnp.asarray([[0.3, -0.2], [1.0, 2.0]])
    t = 0.4
    eps_c, eps_u = datasets[1.0].eps(x, t), datasets[0.0].eps(x, t)
    np.testing.assert_allclose(guided.eps(x, t), eps_u + 2.5 * (eps_c - eps_u), rtol=1e-10)
    # `sample(..., guidance=...)` samples the guided model; the scale is traced (no retrace).
    ts = D.timesteps(sched, 4)
    run = jax.jit(
        lambda scale: D.sample(
            D.DDIM(), model, x, ts, guidance=D.Guidance(jnp.asarray(1.0), jnp.asarray(0.0), scale)
        )
    )
    np.testing.assert_allclose(run(2.5), D.sample(D.DDIM(), guided, x, ts), rtol=1e-12)
    # scale = 1 is the conditional model alone.
    cond_model = D.Model(lambda x, t: fn(x, t, jnp.asarray(1.0)), sched, prediction="x0")
    np.testing.assert_allclose(run(1.0), D.sample(D.DDIM(), cond_model, x, ts), rtol=1e-12)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="prediction"):
        D.Model(lambda x, t: x, D.VPLinear(), prediction="noise")
    with pytest.raises(TypeError, match="schedule"):
        D.Model(lambda x, t: x, "vp")
    with pytest.raises(TypeError, match="fn"):
        D.Model(3.0, D.VPLinear())


def test_model_parameters_are_differentiable():
    sched = D.VPLinear()

    def loss(scale):
        model = D.Model(jax.tree_util.Partial(lambda s, x, t: s * x, scale), sched, "eps")
        return jnp.sum(model.x0(jnp.ones(2), 0.5))

    g = jax.grad(loss)(2.0)
    np.testing.assert_allclose(g, -2 * sched.sigma(0.5) / sched.alpha(0.5), rtol=1e-12)
