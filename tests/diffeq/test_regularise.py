"""Solver-heuristic regularisers (Pal et al. 2021, 2022): `solve(..., regularise=Regularise())`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

d = js.diffeq
DECAY = d.ODETerm(lambda t, y, rate: -rate * y)
PID = d.PIDController(rtol=1e-4, atol=1e-6)


def _stats(rate, key=None, solver=None, dt0=None):
    sol = d.solve(DECAY, solver or d.Tsit5(), 0.0, 1.0, jnp.array([1.0, 2.0]), args=rate, dt0=dt0,
                  controller=PID, regularise=d.Regularise(key=key), max_steps=64,
                  saveat=d.SaveAt(steps=True))  # fmt: skip
    return sol


@pytest.mark.parametrize("solver", [d.Tsit5(), d.Dopri5(), d.Bosh3()])
def test_values_match_a_step_by_step_recomputation(solver):
    rate = 3.0
    sol = _stats(jnp.asarray(rate), solver=solver)
    count = int(sol.stats["num_accepted_steps"])
    times = np.concatenate([[0.0], np.asarray(sol.ts)[:count]])
    ys = np.concatenate([[[1.0, 2.0]], np.asarray(sol.ys)[:count]])
    errors, stiffness = [], []
    for j in range(count):
        t0, t1, y0 = times[j], times[j + 1], jnp.asarray(ys[j])
        state = solver.init(DECAY, t0, t1, y0, rate)
        out = solver.step(DECAY, t0, t1, y0, rate, None, state)
        scale = 1e-6 + 1e-4 * np.maximum(np.abs(y0), np.abs(out.y1))
        errors.append(np.sqrt(np.mean((np.asarray(out.y_error) / scale) ** 2)) * (t1 - t0))
        if out.dense_info.ks is not None:  # Shampine: last two stages, both at t1 here
            rows = ((),) + solver.tableau.a
            coeffs = np.zeros(len(rows))
            coeffs[: len(rows[-1])] += rows[-1]
            coeffs[: len(rows[-2])] -= rows[-2]
            dy = (t1 - t0) * sum(c * k for c, k in zip(coeffs, out.dense_info.ks, strict=False))
            dk = out.dense_info.ks[-1] - out.dense_info.ks[-2]
        else:
            dy, dk = out.y1 - y0, out.dense_info.f1 - out.dense_info.f0
        stiffness.append(np.linalg.norm(dk) / np.linalg.norm(dy))
    np.testing.assert_allclose(sol.stats["R_E"], sum(errors), rtol=1e-9)
    np.testing.assert_allclose(sol.stats["R_S"], sum(stiffness), rtol=1e-9)
    # y' = -rate y: every stiffness estimate is the eigenvalue's size.
    np.testing.assert_allclose(np.asarray(stiffness), rate, rtol=1e-9)


def test_gradients_match_finite_differences_with_the_steps_held():
    # With dt0 given, a small change of `rate` leaves the (quantised) step sizes unchanged, so
    # finite differences see the same step sequence as the gradient.
    def regularisers(rate):
        stats = _stats(rate, dt0=0.05).stats
        return jnp.stack([stats["R_E"], stats["R_S"]])

    jac = jax.jit(jax.jacrev(regularisers))(3.0)
    fn = jax.jit(regularisers)
    eps = 1e-6
    fd = (fn(3.0 + eps) - fn(3.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(jac, fd, rtol=1e-6)
    steps = int(_stats(3.0, dt0=0.05).stats["num_accepted_steps"])
    np.testing.assert_allclose(jac[1], steps, rtol=1e-9)  # R_S = steps * rate


def test_local_variant_picks_one_random_step_and_works_under_vmap():
    keys = jax.random.split(jax.random.key(1), 6)
    stats = jax.jit(jax.vmap(lambda key: _stats(3.0, key=key).stats))(keys)
    assert np.all(np.asarray(stats["R_E_local"]) > 0)
    assert np.all(np.asarray(stats["R_E_local"]) < np.asarray(stats["R_E"]))
    np.testing.assert_allclose(stats["R_S_local"], 3.0, rtol=1e-9)  # one step's estimate
    assert len(np.unique(np.round(np.asarray(stats["R_E_local"]), 12))) > 1  # different steps
    single = _stats(3.0, key=keys[2]).stats
    np.testing.assert_allclose(stats["R_E_local"][2], single["R_E_local"], rtol=1e-9)


def test_neural_ode_training_step_with_the_regulariser():
    model = eqx.nn.MLP(2, 2, 16, 2, activation=jnp.tanh, key=jax.random.key(0))
    term = d.ODETerm(lambda t, y, model: model(y))
    y0 = jnp.array([1.0, 0.0])

    @eqx.filter_jit
    def loss_and_grad(model, key):
        def loss(model):
            sol = d.solve(term, d.Tsit5(), 0.0, 1.0, y0, args=model, controller=PID,
                          regularise=d.Regularise(key=key), max_steps=64)  # fmt: skip
            fit = jnp.sum((sol.ys[-1] - jnp.array([0.0, 1.0])) ** 2)
            return fit + 0.1 * sol.stats["R_E"] + 0.01 * sol.stats["R_S_local"]

        return eqx.filter_value_and_grad(loss)(model)

    value, grads = loss_and_grad(model, jax.random.key(3))
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_array))
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0


def test_regularise_bad_input():
    y0 = jnp.ones(2)
    with pytest.raises(ValueError, match="PIDController"):
        d.solve(DECAY, d.Tsit5(), 0.0, 1.0, y0, args=1.0, dt0=0.1, regularise=d.Regularise())
    with pytest.raises(TypeError, match="Regularise"):
        d.solve(DECAY, d.Tsit5(), 0.0, 1.0, y0, args=1.0, controller=PID, regularise=True)
    with pytest.raises(TypeError, match="key"):
        d.Regularise(key=3)
