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


def test_invert_from_solution_state_needs_no_second_pass():
    gamma = 0.8  # not the symmetric scheme: inversion divides by gamma at every step
    # float64: x_T is recovered to round-off from the final state of one sampling run.
    model = DATA.model("eps")
    ts = js.diffusion.timesteps(SCHED, 10)
    sampler = js.diffusion.BDIA(gamma=gamma)
    sol = js.diffusion.sample_solution(sampler, model, X_T, ts)
    assert sol.value.dtype == jnp.float64
    # The state holds the last two samples: exactly what a second, shorter run gives.
    np.testing.assert_allclose(sol.state.x, sol.value, rtol=0, atol=0)
    np.testing.assert_allclose(
        sol.state.x_prev, js.diffusion.sample(sampler, model, X_T, ts[:-1]), rtol=0, atol=1e-14
    )
    back = js.diffusion.invert(sampler, model, sol.value, ts, state=sol.state)
    np.testing.assert_allclose(back, X_T, rtol=0, atol=1e-12)
    # Count model calls: sampling once (10 calls) + inverting (9 calls), no second pass.
    calls = []
    counting = js.diffusion.Model(
        lambda x, t: (calls.append(1), DATA.eps(x, t))[1], SCHED, prediction="eps"
    )
    sol = js.diffusion.sample_solution(sampler, counting, X_T, ts)
    js.diffusion.invert(sampler, counting, sol.value, ts, state=sol.state)
    assert len(calls) == 2  # traced once in each scan: one sampling loop, one inversion loop
    # The old path (x_prev from a second run) still works and agrees.
    x1 = js.diffusion.sample(sampler, model, X_T, ts[:-1])
    old = js.diffusion.invert(sampler, model, sol.value, ts, x_prev=x1)
    np.testing.assert_allclose(old, back, rtol=0, atol=1e-13)
    # Under jit, with the state passed through.
    jitted = jax.jit(
        lambda sol: js.diffusion.invert(sampler, model, sol.value, ts, state=sol.state)
    )
    np.testing.assert_allclose(jitted(sol), back, atol=1e-13)
    # Without the state the last-but-one sample is only estimated: far from exact.
    approx = js.diffusion.invert(sampler, model, sol.value, ts)
    assert float(jnp.max(jnp.abs(approx - X_T))) > 1e-6


def test_invert_state_bad_inputs():
    ts = js.diffusion.timesteps(SCHED, 4)
    sol = js.diffusion.sample_solution(js.diffusion.BDIA(), MODEL, X_T, ts)
    with pytest.raises(ValueError, match="not both"):
        js.diffusion.invert(js.diffusion.BDIA(), MODEL, sol.value, ts, state=sol.state, x_prev=X_T)
    with pytest.raises(TypeError, match="state"):
        js.diffusion.invert(js.diffusion.BDIA(), MODEL, sol.value, ts, state=X_T)
    with pytest.raises(ValueError, match="state"):
        js.diffusion.invert(js.diffusion.DDIM(), MODEL, sol.value, ts, state=sol.state)
