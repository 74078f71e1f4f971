"""Newton-Schulz orthogonalisation (plain and AOL-preconditioned) and Turbo-Muon."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib._muon import orthogonalize_via_newton_schulz

import jaxsolve as js
from jaxsolve.optimizers._newton_schulz import (
    CUBIC_COEFFICIENTS,
    MUON_COEFFICIENTS,
    _turbo_muon_chain,
)


def _orthogonality_error(U):
    """RMS entry of U U^T - I (wide) or U^T U - I (tall)."""
    k = min(U.shape)
    gram = U @ U.T if U.shape[0] <= U.shape[1] else U.T @ U
    return float(np.linalg.norm(gram - np.eye(k)) / np.sqrt(k))


def _polar(G):
    u, _, vt = np.linalg.svd(np.asarray(G), full_matrices=False)
    return u @ vt


def _polar_error(G, U):
    return float(np.linalg.norm(np.asarray(U) - _polar(G)) / np.sqrt(min(G.shape)))


def _matrix(shape, kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "heavy":  # heavy-tailed entries (Student t, 2 degrees of freedom), like gradients
        return jnp.asarray(rng.standard_t(2.0, shape))
    G = rng.standard_normal(shape)
    if kind == "decaying":  # singular values from 1 down to 1e-2
        u, s, vt = np.linalg.svd(G, full_matrices=False)
        G = (u * np.geomspace(1.0, 1e-2, s.size)) @ vt
    return jnp.asarray(G)


@pytest.mark.parametrize("preconditioned", [False, True])
@pytest.mark.parametrize("shape", [(16, 40), (40, 16)])
def test_cubic_iteration_converges_to_the_polar_factor(preconditioned, shape):
    G = _matrix(shape, "gaussian")
    errors = [
        _orthogonality_error(
            js.optimizers.newton_schulz(G, k, preconditioned, coefficients=CUBIC_COEFFICIENTS)
        )
        for k in range(0, 20)
    ]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False) if a > 1e-10)
    assert errors[-1] < 1e-10
    U = js.optimizers.newton_schulz(G, 20, preconditioned, coefficients=CUBIC_COEFFICIENTS)
    # Plain: the polar factor of G. AOL: the polar factor of S G (S the diagonal rescaling),
    # a few per cent from that of G (measured 1.6-2.5% RMS here), the price of the better start.
    assert _polar_error(G, U) < (0.05 if preconditioned else 1e-10)


@pytest.mark.parametrize("kind, saved", [("gaussian", 2), ("decaying", 1)])
def test_preconditioning_saves_steps_of_the_cubic_iteration(kind, saved):
    # Steps to orthogonality error 1e-3 (measured on 64x128: gaussian 11 plain vs 8 AOL;
    # singular values decaying from 1 to 1e-2: 16 vs 15).
    G = _matrix((64, 128), kind)

    def steps_to(preconditioned, tol=1e-3):
        for k in range(40):
            U = js.optimizers.newton_schulz(G, k, preconditioned, coefficients=CUBIC_COEFFICIENTS)
            if _orthogonality_error(U) <= tol:
                return k
        return None

    assert steps_to(True) <= steps_to(False) - saved


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
def test_turbo_reaches_optax_muons_five_step_error_in_three(kind):
    # Muon's quintic does not converge: it drives singular values into about [0.7, 1.2] and
    # oscillates there. optax muon's five steps reach polar error ~0.20 on these 64x128
    # matrices; AOL-preconditioned, three steps reach ~0.16.
    G = _matrix((64, 128), kind)
    with jax.numpy_dtype_promotion("standard"):
        optax_five = orthogonalize_via_newton_schulz(G, jnp.asarray(MUON_COEFFICIENTS), 5)
    ours_five = js.optimizers.newton_schulz(G, 5, preconditioned=False)
    np.testing.assert_allclose(ours_five, optax_five, rtol=1e-10, atol=1e-12)  # same iteration
    turbo_three = js.optimizers.newton_schulz(G, 3, preconditioned=True)
    assert _polar_error(G, turbo_three) <= _polar_error(G, optax_five)
    assert _orthogonality_error(turbo_three) <= _orthogonality_error(optax_five)
    # and "the method's accuracy": singular values in the quintic's band, close to U V^T
    singular_values = np.linalg.svd(np.asarray(turbo_three), compute_uv=False)
    assert 0.6 < singular_values.min() and singular_values.max() < 1.25
    assert _polar_error(G, turbo_three) < 0.25


def test_aol_start_has_spectral_norm_at_most_one():
    for kind in ("gaussian", "heavy", "decaying"):
        X0 = js.optimizers.newton_schulz(_matrix((30, 50), kind), 0, preconditioned=True)
        assert np.linalg.norm(np.asarray(X0), 2) <= 1.0 + 1e-12


def test_tall_batched_and_jitted():
    G = _matrix((3, 12, 7), "gaussian")
    batched = jax.jit(js.optimizers.newton_schulz, static_argnums=1)(G, 4)
    for i in range(3):
        single = js.optimizers.newton_schulz(G[i], 4)
        np.testing.assert_allclose(batched[i], single, rtol=1e-10, atol=1e-12)
        wide = js.optimizers.newton_schulz(G[i].T, 4)
        np.testing.assert_allclose(single, wide.T, rtol=1e-12, atol=1e-14)
    vmapped = jax.vmap(lambda g: js.optimizers.newton_schulz(g, 4))(G)
    np.testing.assert_allclose(vmapped, batched, rtol=1e-10, atol=1e-12)


def _params(dtype=jnp.float64):
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.standard_normal((8, 5)), dtype),
        "b": jnp.asarray(rng.standard_normal(5), dtype),
    }


def test_without_preconditioning_it_is_optax_muon():
    params = _params()
    rng = np.random.default_rng(1)
    ours = optax.inject_hyperparams(_turbo_muon_chain, static_args=("ns_steps",))(
        0.02, 0.95, 5, True, False
    )
    theirs = optax.contrib.muon(0.02)
    s1, s2 = ours.init(params), theirs.init(params)
    update1, update2 = jax.jit(ours.update), jax.jit(theirs.update)
    for _ in range(4):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape)), params)
        u1, s1 = update1(grads, s1, params)
        with jax.numpy_dtype_promotion("standard"):
            u2, s2 = update2(grads, s2, params)
        for key in params:
            np.testing.assert_allclose(u1[key], u2[key], rtol=1e-10, atol=1e-14)


def test_turbo_muon_step_is_orthogonal_with_width_scaling():
    params = _params()
    tx = js.optimizers.turbo_muon(learning_rate=1.0, ns_steps=6)
    grads = jax.tree.map(jnp.ones_like, params) | {"w": _matrix((8, 5), "gaussian")}
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    # tall (8, 5): columns orthonormal up to the quintic's band; fan_out < fan_in: scale 1
    singular_values = np.linalg.svd(np.asarray(updates["w"]), compute_uv=False)
    assert 0.6 < singular_values.min() and singular_values.max() < 1.25
    # NAdam's first step (as optax muon's non-matrix leaves): -(1 + b1 / (1 + b1)) sign(g)
    np.testing.assert_allclose(updates["b"], -(1 + 0.9 / 1.9), rtol=1e-6)


def test_vmap_over_the_learning_rate():
    params = _params()
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 2.0, p.size).reshape(p.shape), params)
    tx = js.optimizers.turbo_muon(learning_rate=0.1)
    u1, _ = jax.jit(tx.update)(grads, tx.init(params), params)

    def with_lr(lr):
        state = tx.init(params)
        state.hyperparams["learning_rate"] = lr
        return tx.update(grads, state, params)[0]

    lrs = jnp.asarray([0.1, 0.01])
    batched = jax.jit(jax.vmap(with_lr))(lrs)
    for key in params:
        np.testing.assert_allclose(batched[key][1], 0.1 * batched[key][0], rtol=1e-12)
        np.testing.assert_allclose(batched[key][0], u1[key], rtol=1e-12)


@pytest.mark.float32
def test_float32_stays_float32():
    rng = np.random.default_rng(5)
    G = jnp.asarray(rng.standard_normal((20, 30)), jnp.float32)
    assert js.optimizers.newton_schulz(G).dtype == jnp.float32


def test_bad_input():
    with pytest.raises(ValueError, match="matrix"):
        js.optimizers.newton_schulz(jnp.ones(3))
    with pytest.raises(ValueError, match="num_steps"):
        js.optimizers.newton_schulz(jnp.ones((3, 3)), num_steps=-1)
    with pytest.raises(ValueError, match="ns_steps"):
        js.optimizers.turbo_muon(0.1, ns_steps=0)
