"""SOAP: Adam(W) in Shampoo's eigenbasis (Vyas et al., 2024)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import jaxsolve as js
from jaxsolve.optimizers._soap import _soap_chain

_STATIC = ("max_precond_dim", "one_sided")


def _with_identity_basis(lr, b1, b2, eps, weight_decay):
    """SOAP with its eigenbases pinned to the identity (the rotations still run)."""
    return optax.inject_hyperparams(_soap_chain, static_args=_STATIC)(
        lr, b1, b2, eps, weight_decay, 3, 10000, False, True
    )


def _gradients(rng, params, num_steps, dtype):
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), dtype), params)
        for _ in range(num_steps)
    ]


@settings(max_examples=4, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(1, 3), (4, 3)]),
    b1=st.floats(0.0, 0.99),
    b2=st.floats(0.5, 0.999),
    weight_decay=st.sampled_from([0.0, 0.1]),
    dtype=st.sampled_from([jnp.float32, jnp.float64]),
)
def test_identity_basis_is_adamw_bit_for_bit(seed, shape, b1, b2, weight_decay, dtype):
    # Op by op (disable_jit), SOAP with Q_L = Q_R = I performs exactly AdamW's floating-point
    # operations: the updates and the moments agree to the last bit, every step.
    rng = np.random.default_rng(seed)
    params = {
        "w": jnp.asarray(rng.standard_normal(shape), dtype),
        "b": jnp.ones(shape[1], dtype),
    }
    soap = _with_identity_basis(0.1, b1, b2, 1e-8, weight_decay)
    adamw = optax.inject_hyperparams(optax.adamw)(0.1, b1, b2, 1e-8, weight_decay=weight_decay)
    soap_state, adam_state = soap.init(params), adamw.init(params)
    with jax.disable_jit():
        for grads in _gradients(rng, params, 3, dtype):
            u_soap, soap_state = soap.update(grads, soap_state, params)
            with jax.numpy_dtype_promotion("standard"):  # optax needs standard promotion
                u_adam, adam_state = adamw.update(grads, adam_state, params)
            for key in params:
                np.testing.assert_array_equal(u_soap[key], u_adam[key])
            inner_soap, inner_adam = soap_state.inner_state[0], adam_state.inner_state[0]
            np.testing.assert_array_equal(inner_soap.nu["w"], inner_adam.nu["w"])
            np.testing.assert_array_equal(inner_soap.mu["w"], inner_adam.mu["w"])


def test_identity_basis_is_adamw_under_jit_to_rounding():
    # Compiled, XLA rewrites x / c as x * (1 / c) where it fuses, differently in two different
    # programs, so the two agree to a few units in the last place rather than bit for bit.
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((5, 4))), "b": jnp.ones(4)}
    soap = _with_identity_basis(0.1, 0.9, 0.99, 1e-8, 0.01)
    adamw = optax.inject_hyperparams(optax.adamw)(0.1, 0.9, 0.99, 1e-8, weight_decay=0.01)
    s1, s2 = soap.init(params), adamw.init(params)
    update1, update2 = jax.jit(soap.update), jax.jit(adamw.update)
    for grads in _gradients(rng, params, 5, jnp.float64):
        u1, s1 = update1(grads, s1, params)
        with jax.numpy_dtype_promotion("standard"):
            u2, s2 = update2(grads, s2, params)
        for key in params:
            np.testing.assert_allclose(u1[key], u2[key], rtol=1e-14, atol=0)


def test_first_step_is_the_polar_factor():
    # At step one the eigenbases are the singular vectors of G, so the rotated gradient is
    # diagonal and Adam's first step (a sign) turns it into U V^T.
    rng = np.random.default_rng(1)
    G = jnp.asarray(rng.standard_normal((4, 7)))
    tx = js.optimizers.soap(learning_rate=0.5)
    updates, _ = jax.jit(tx.update)(G, tx.init(jnp.zeros((4, 7))), jnp.zeros((4, 7)))
    u, _, vt = np.linalg.svd(np.asarray(G), full_matrices=False)
    np.testing.assert_allclose(updates, -0.5 * u @ vt, atol=1e-6)


def test_refreshed_basis_diagonalises_the_statistic():
    # Power iteration with QR every step: after some steps on gradients from a fixed
    # distribution, Q^T L Q is (nearly) diagonal with decreasing diagonal.
    rng = np.random.default_rng(2)
    A = rng.standard_normal((6, 6)) * np.geomspace(1, 0.05, 6)
    params = jnp.zeros((6, 5))
    tx = js.optimizers.soap(learning_rate=0.1, precondition_frequency=1)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(60):
        grads = jnp.asarray(A @ rng.standard_normal((6, 5)))
        _, state = update(grads, state, params)
    left, _ = state.inner_state[0].preconditioners[0]
    rotated = np.asarray(left.basis.T @ left.statistic @ left.basis)
    off = rotated - np.diag(np.diag(rotated))
    assert np.linalg.norm(off) < 1e-2 * np.linalg.norm(rotated)
    assert np.all(np.diff(np.diag(rotated)) <= 1e-12)


def test_long_sides_stay_unrotated_and_biases_get_adam():
    params = {"w": jnp.ones((3, 20)), "b": jnp.ones(20), "s": jnp.ones(())}
    tx = js.optimizers.soap(learning_rate=0.1, max_precond_dim=10)
    state = tx.init(params)
    sides = state.inner_state[0].preconditioners
    by_name = dict(zip(sorted(params), sides, strict=True))
    assert by_name["b"] is None and by_name["s"] is None
    left, right = by_name["w"]
    assert left.basis.shape == (3, 3) and right is None
    grads = jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)
    updates, _ = jax.jit(tx.update)(grads, state, params)
    # Adam's first step on a non-matrix leaf is -lr * sign(g) (up to eps)
    np.testing.assert_allclose(updates["b"], -0.1, rtol=1e-7)
    np.testing.assert_allclose(updates["s"], -0.1, rtol=1e-7)


def _kron_quadratic(m=8, n=6, cond=300.0, seed=0):
    rng = np.random.default_rng(seed)

    def spd(k):
        q, _ = np.linalg.qr(rng.standard_normal((k, k)))
        return jnp.asarray(q @ np.diag(np.geomspace(1, cond, k)) @ q.T)

    A, B, target = spd(m), spd(n), jnp.asarray(rng.standard_normal((m, n)))
    return lambda W: 0.5 * jnp.sum((W - target) * (A @ (W - target) @ B)), jnp.zeros((m, n))


def _final_losses(tx, loss, w0, learning_rates, num_steps):
    """The loss after `num_steps` for each learning rate: one compiled run, vmapped over the
    learning rate, which lives in the state (inject_hyperparams)."""

    def run(lr):
        state = tx.init(w0)
        state.hyperparams["learning_rate"] = lr

        def body(carry, _):
            w, state = carry
            updates, state = tx.update(jax.grad(loss)(w), state, w)
            return (w + updates, state), None

        (w, _), _ = jax.lax.scan(body, (w0, state), None, length=num_steps)
        return loss(w) / loss(w0)

    return jax.jit(jax.vmap(run))(learning_rates)


def test_beats_adam_on_a_kronecker_quadratic():
    # Hessian A (x) B with condition number 1e6, each optimiser at its best learning rate of a
    # grid: measured 7.0e-5 (SOAP) vs 4.5e-4 (Adam) relative loss after 200 steps.
    loss, w0 = _kron_quadratic(16, 12, 1000.0)
    lrs = jnp.asarray([0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    soap = js.optimizers.soap(0.1, precondition_frequency=1)
    soap_loss = _final_losses(soap, loss, w0, lrs, 200)
    with jax.numpy_dtype_promotion("standard"):
        adam = optax.inject_hyperparams(optax.adam)(0.1)
        adam_loss = _final_losses(adam, loss, w0, lrs, 200)
    assert jnp.min(soap_loss) < 0.3 * jnp.min(adam_loss)


def test_schedule_and_chain():
    tx = optax.chain(optax.clip_by_global_norm(1.0), js.optimizers.soap(lambda count: 0.1))
    params = jnp.ones((2, 3))
    updates, _ = jax.jit(tx.update)(jnp.ones((2, 3)), tx.init(params), params)
    assert updates.shape == (2, 3) and bool(jnp.all(jnp.isfinite(updates)))


def test_bad_input():
    with pytest.raises(ValueError, match="precondition_frequency"):
        js.optimizers.soap(0.1, precondition_frequency=0)
    with pytest.raises(ValueError, match="max_precond_dim"):
        js.optimizers.soap(0.1, max_precond_dim=2.5)
    with pytest.raises(ValueError, match="eps"):
        js.optimizers.soap(0.1, eps=-1.0)


def test_one_sided_rotates_only_the_shorter_side():
    """One-sided SOAP (Vyas et al., Sec. 6.2) is two-sided SOAP with the longer side left
    unrotated: for a (4, 9) weight it equals `max_precond_dim=4` exactly, and keeps one factor."""
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.standard_normal((4, 9))),
        "v": jnp.asarray(rng.standard_normal((7, 3))),
    }
    grads = _gradients(rng, params, 4, jnp.float64)
    one = js.optimizers.soap(0.1, precondition_frequency=2, one_sided=True)
    two = js.optimizers.soap(0.1, precondition_frequency=2, max_precond_dim=4)

    def run(tx, p):
        state = tx.init(p)
        for g in grads:
            updates, state = tx.update(g, state, p)
            p = optax.apply_updates(p, updates)
        return p, state

    (p1, s1), (p2, _) = run(one, params), run(two, params)
    # "v" (7, 3): one-sided rotates its 3 columns; max_precond_dim=4 rotates those same columns
    np.testing.assert_array_equal(p1["w"], p2["w"])
    np.testing.assert_array_equal(p1["v"], p2["v"])
    (v_sides, w_sides) = s1.inner_state[0].preconditioners  # leaves in sorted-key order
    assert w_sides[1] is None and w_sides[0].basis.shape == (4, 4)
    assert v_sides[0] is None and v_sides[1].basis.shape == (3, 3)
