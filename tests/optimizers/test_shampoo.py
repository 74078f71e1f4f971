"""Shampoo with blocking and grafting (Gupta et al., 2018; Anil et al., 2020)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js

from .test_soap import _final_losses, _kron_quadratic


def _inverse_fourth_root(matrix, eps):
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    eigenvalues = np.maximum(eigenvalues, 0.0) + eps
    return (eigenvectors * eigenvalues**-0.25) @ eigenvectors.T


def test_preconditioned_step_is_the_explicit_formula():
    # precondition_frequency=1, no momentum, no grafting: the update at step t is
    # -lr * Lhat_t^(-1/4) G_t Rhat_t^(-1/4), with Lhat_t the debiased average of G G^T.
    rng = np.random.default_rng(0)
    lr, b2, eps = 0.3, 0.9, 1e-6
    tx = js.optimizers.shampoo(
        lr, b1=0.0, b2=b2, eps=eps, precondition_frequency=1, grafting="none"
    )
    params = jnp.zeros((4, 6))
    state = tx.init(params)
    update = jax.jit(tx.update)
    L, R = np.zeros((4, 4)), np.zeros((6, 6))
    for t in range(1, 5):
        G = rng.standard_normal((4, 6))
        updates, state = update(jnp.asarray(G), state, params)
        L, R = b2 * L + (1 - b2) * G @ G.T, b2 * R + (1 - b2) * G.T @ G
        expected = (
            -lr
            * _inverse_fourth_root(L / (1 - b2**t), eps)
            @ G
            @ _inverse_fourth_root(R / (1 - b2**t), eps)
        )
        np.testing.assert_allclose(updates, expected, rtol=1e-9, atol=1e-12)


def test_preconditioner_is_recomputed_every_precondition_frequency_steps():
    rng = np.random.default_rng(1)
    tx = js.optimizers.shampoo(0.1, precondition_frequency=3)
    params = jnp.zeros((3, 4))
    state = tx.init(params)
    roots, update = [], jax.jit(tx.update)
    for _ in range(7):
        _, state = update(jnp.asarray(rng.standard_normal((3, 4))), state, params)
        roots.append(np.asarray(state.inner_state[0].preconditioners[0][0].left_root))
    changed = [not np.array_equal(a, b) for a, b in zip(roots, roots[1:], strict=False)]
    # computed at steps 1, 3 and 6: changes between steps 2->3 and 5->6 only
    assert changed == [False, True, False, False, True, False]


def test_adam_grafting_takes_adams_step_length_per_block():
    rng = np.random.default_rng(2)
    params = {"w": jnp.zeros((5, 7)), "b": jnp.zeros(7)}
    tx = js.optimizers.shampoo(1.0, block_size=3)
    adam = optax.adam(1.0)
    s1, s2 = tx.init(params), adam.init(params)
    update = jax.jit(tx.update)
    for _ in range(3):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape)), params)
        u1, s1 = update(grads, s1, params)
        with jax.numpy_dtype_promotion("standard"):
            u2, s2 = adam.update(grads, s2, params)
    np.testing.assert_allclose(u1["b"], u2["b"], rtol=1e-12)  # non-matrix leaves: Adam
    for r0 in (0, 3):
        for c0 in (0, 3, 6):
            block = (slice(r0, r0 + 3), slice(c0, c0 + 3))
            np.testing.assert_allclose(
                np.linalg.norm(u1["w"][block]), np.linalg.norm(u2["w"][block]), rtol=1e-10
            )
    # the direction is not Adam's (a full-matrix preconditioner rotates it)
    assert not np.allclose(u1["w"], u2["w"], rtol=1e-2)


def test_blocks_are_preconditioned_independently():
    # A 5x7 matrix with block_size=3 is six independent Shampoo problems.
    rng = np.random.default_rng(3)
    grads = [jnp.asarray(rng.standard_normal((5, 7))) for _ in range(3)]
    whole = js.optimizers.shampoo(0.1, block_size=3, precondition_frequency=2)
    part = js.optimizers.shampoo(0.1, block_size=3, precondition_frequency=2)
    params = jnp.zeros((5, 7))
    s_whole, s_part = whole.init(params), part.init(params[3:, 3:6])
    update_whole, update_part = jax.jit(whole.update), jax.jit(part.update)
    for G in grads:
        u_whole, s_whole = update_whole(G, s_whole, params)
        u_part, s_part = update_part(G[3:, 3:6], s_part, params[3:, 3:6])
    np.testing.assert_allclose(u_whole[3:, 3:6], u_part, rtol=1e-10, atol=1e-14)


def test_converges_fast_on_a_kronecker_quadratic():
    # Hessian A (x) B, condition number 9e4, each method at its best learning rate of a grid.
    # Measured relative loss after 150 steps: Shampoo 1.2e-7, Adam 4.0e-4, SGD+momentum 3.1e-4.
    loss, w0 = _kron_quadratic(8, 6, 300.0)
    lrs = jnp.asarray([0.01, 0.03, 0.1, 0.3, 1.0])
    shampoo = js.optimizers.shampoo(0.1, precondition_frequency=1)
    shampoo_loss = jnp.min(_final_losses(shampoo, loss, w0, lrs, 150))
    with jax.numpy_dtype_promotion("standard"):
        adam = optax.inject_hyperparams(optax.adam)(0.1)
        adam_loss = jnp.nanmin(_final_losses(adam, loss, w0, lrs, 150))
        sgd = optax.inject_hyperparams(optax.sgd)(0.1, momentum=0.9)
        sgd_loss = jnp.nanmin(_final_losses(sgd, loss, w0, 1e-2 * lrs, 150))
    assert shampoo_loss < 1e-6
    assert shampoo_loss < 1e-2 * min(adam_loss, sgd_loss)


def test_bad_input():
    with pytest.raises(ValueError, match="grafting"):
        js.optimizers.shampoo(0.1, grafting="adagrad")
    with pytest.raises(ValueError, match="block_size"):
        js.optimizers.shampoo(0.1, block_size=0)
    with pytest.raises(ValueError, match="precondition_frequency"):
        js.optimizers.shampoo(0.1, precondition_frequency=1.5)
