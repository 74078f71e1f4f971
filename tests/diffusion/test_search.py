"""Differentiable sampler search: gradients w.r.t. the grid, held-out improvement, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js
from tests.helpers import finite_difference_grad, standard_mixture

MIX = standard_mixture()
SCHED = MIX.schedule
MODEL = MIX.model("eps")
T_END = 1e-3


X_GRAD = jax.random.normal(jax.random.key(0), (8, 2), jnp.float64)
X_TRAIN = jax.random.normal(jax.random.key(1), (32, 2), jnp.float64)
X_TEST = jax.random.normal(jax.random.key(2), (256, 2), jnp.float64)


@functools.cache
def _references():
    # One many-step Heun solve for all the noise used in this file (one compilation).
    ts = js.diffusion.timesteps(SCHED, 400, t_end=T_END)
    x = jnp.concatenate([X_GRAD, X_TRAIN, X_TEST])
    y = js.diffusion.sample(js.diffusion.HeunEDM(), MODEL, x, ts)
    return y[:8], y[8:40], y[40:]


def test_gradient_wrt_timesteps_matches_finite_differences():
    x_T, target = X_GRAD, _references()[0]
    ts0 = js.diffusion.timesteps(SCHED, 4, "uniform", t_end=T_END)

    @jax.jit
    def loss(inner):
        ts = jnp.concatenate([ts0[:1], inner, ts0[-1:]])
        x = js.diffusion.sample(js.diffusion.DDIM(), MODEL, x_T, ts)
        return jnp.mean((x - target) ** 2)

    inner = ts0[1:-1]
    grad = jax.grad(loss)(inner)
    np.testing.assert_allclose(
        grad, finite_difference_grad(loss, inner, 1e-6), rtol=1e-5, atol=1e-8
    )


def test_learned_grid_beats_its_starting_grid_on_held_out_noise():
    _, y_train, target = _references()
    x_test = X_TEST
    sampler = js.diffusion.DDIM()
    found = js.diffusion.learn_timesteps(
        sampler,
        MODEL,
        X_TRAIN,
        4,
        init="uniform",
        t_end=T_END,
        teacher=y_train,
        optimizer=optax.adam(5e-2),
        num_iterations=60,
    )
    assert found.ts.shape == (5,)
    assert np.all(np.diff(np.asarray(found.ts)) < 0)
    assert float(found.ts[0]) == float(found.initial_ts[0])
    assert float(found.ts[-1]) == T_END
    assert float(found.losses[-1]) < float(found.losses[0])

    def error(ts):
        x = js.diffusion.sample(sampler, found.model(MODEL), x_test, ts)
        return float(jnp.sqrt(jnp.mean(jnp.sum((x - target) ** 2, -1))))

    assert error(found.ts) < 0.9 * error(found.initial_ts)


@pytest.mark.slow
def test_learned_coefficients_lower_the_held_out_error_further():
    x_train = jax.random.normal(jax.random.key(3), (128, 2), jnp.float64)
    x_test = jax.random.normal(jax.random.key(4), (512, 2), jnp.float64)
    sampler = js.diffusion.DDIM()
    ts = js.diffusion.timesteps(SCHED, 400, t_end=T_END)
    y = js.diffusion.sample(js.diffusion.HeunEDM(), MODEL, jnp.concatenate([x_train, x_test]), ts)
    y_train, target = y[:128], y[128:]
    kwargs = dict(init="quadratic", t_end=T_END, teacher=y_train, num_iterations=200)
    grid_only = js.diffusion.learn_timesteps(sampler, MODEL, x_train, 5, **kwargs)
    with_coeffs = js.diffusion.learn_timesteps(
        sampler, MODEL, x_train, 5, learn_coefficients=True, **kwargs
    )
    assert with_coeffs.coefficients.shape == (5,)

    def error(found):
        x = js.diffusion.sample(sampler, found.model(MODEL), x_test, found.ts)
        return float(jnp.sqrt(jnp.mean(jnp.sum((x - target) ** 2, -1))))

    assert error(with_coeffs) < 0.8 * error(grid_only)


def test_bad_inputs():
    x_T = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="num_steps"):
        js.diffusion.learn_timesteps(js.diffusion.DDIM(), MODEL, x_T, 0)
    with pytest.raises(ValueError, match="init"):
        js.diffusion.learn_timesteps(js.diffusion.DDIM(), MODEL, x_T, 3, init="cosine")
    with pytest.raises(ValueError, match="init"):
        js.diffusion.learn_timesteps(js.diffusion.DDIM(), MODEL, x_T, 3, init=jnp.ones(3))
    with pytest.raises(ValueError, match="teacher"):
        js.diffusion.learn_timesteps(js.diffusion.DDIM(), MODEL, x_T, 3, teacher=jnp.zeros((2, 2)))
