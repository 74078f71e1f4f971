"""HeavyBall and GHVB momentum samplers: orders, beta = 1 limits, no recompile, errors."""

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


def _sigma_bar_grid(num_steps, t_start=0.5, t_end=1e-3):
    # Uniform in sigma/alpha: the variable in which the momentum methods take their steps, so
    # their constant-step weights are exact (needed for orders above 2).
    lo, hi = -SCHED.logsnr(t_start), -SCHED.logsnr(t_end)
    sig = jnp.linspace(jnp.exp(lo), jnp.exp(hi), num_steps + 1)
    ts = SCHED.t_of_logsnr(-jnp.log(sig))
    return ts.at[0].set(t_start).at[-1].set(t_end)


def _order(sampler, num_steps, grid):
    errors = []
    for n in num_steps:
        ts = grid(n)
        x = js.diffusion.sample(sampler, MODEL, X_T, ts)
        errors.append(float(jnp.max(jnp.abs(x - DATA.flow(X_T, ts[0], ts[-1])))))
    return -fitted_slope(num_steps, errors), errors


def _logsnr(n):
    return js.diffusion.timesteps(SCHED, n)


@pytest.mark.parametrize(
    "sampler, order, grid, num_steps",
    [
        (js.diffusion.HeavyBall(order=2, beta=0.8), 1.0, _logsnr, (20, 40, 80)),
        (js.diffusion.GHVB(order=1, beta=0.8), 1.0, _logsnr, (20, 40, 80)),
        (js.diffusion.GHVB(order=2, beta=0.8), 2.0, _logsnr, (20, 40, 80)),
        (js.diffusion.GHVB(order=3, beta=0.6), 3.0, _sigma_bar_grid, (20, 40, 80)),
    ],
    ids=["hb2", "ghvb1", "ghvb2", "ghvb3"],
)
def test_convergence_order(sampler, order, grid, num_steps):
    slope, errors = _order(sampler, num_steps, grid)
    if order < 3:
        assert abs(slope - order) < 0.15, (slope, errors)
    else:
        # Third order: at these step counts the fitted slope is still above 3 (pre-asymptotic,
        # 3.2 -> 3.9 between successive halvings); it must not be below.
        assert slope > order - 0.15, (slope, errors)


def test_beta_one_limits():
    ts = js.diffusion.timesteps(SCHED, 6)
    ddim = js.diffusion.sample(js.diffusion.DDIM(), MODEL, X_T, ts)
    for sampler in (
        js.diffusion.GHVB(order=1, beta=1.0),
        js.diffusion.HeavyBall(order=1, beta=1.0),
    ):
        np.testing.assert_allclose(js.diffusion.sample(sampler, MODEL, X_T, ts), ddim, atol=1e-12)
    # With beta = 1, GHVB and heavy ball are the same Adams-Bashforth (PLMS) method.
    a = js.diffusion.sample(js.diffusion.GHVB(order=3, beta=1.0), MODEL, X_T, ts)
    b = js.diffusion.sample(js.diffusion.HeavyBall(order=3, beta=1.0), MODEL, X_T, ts)
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_new_beta_does_not_recompile():
    ts = js.diffusion.timesteps(SCHED, 4)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(sampler):
        return js.diffusion.sample(sampler, MODEL, X_T, ts)

    a = run(js.diffusion.GHVB(order=2, beta=0.5))
    b = run(js.diffusion.GHVB(order=2, beta=0.9))
    assert not np.allclose(a, b)
    np.testing.assert_allclose(
        b, js.diffusion.sample(js.diffusion.GHVB(order=2, beta=0.9), MODEL, X_T, ts), atol=1e-12
    )


def test_bad_options():
    with pytest.raises(ValueError, match="beta"):
        js.diffusion.GHVB(order=2, beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        js.diffusion.HeavyBall(order=1, beta=1.5)
    with pytest.raises(ValueError, match="order"):
        js.diffusion.GHVB(order=5, beta=0.5)
    with pytest.raises(ValueError, match="order"):
        js.diffusion.HeavyBall(order=1.5, beta=0.5)


def test_final_step_to_sigma_zero_has_no_nan_in_values_or_gradients():
    model = DATA.model("x0")  # its eps conversion divides by sigma: the NaN trap at sigma = 0
    ts = jnp.append(js.diffusion.timesteps(SCHED, 5), 0.0)
    sampler = js.diffusion.GHVB(order=2, beta=0.7)

    def loss(x_T):
        return jnp.sum(js.diffusion.sample(sampler, model, x_T, ts) ** 2)

    value, grad = jax.value_and_grad(loss)(X_T)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
