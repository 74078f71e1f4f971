"""What SOAP, Shampoo and Turbo-Muon share as optax transformations: a new learning rate does
not recompile, `vmap` over gradients equals a loop, and a small MLP trains in float32 (x64 off,
the users' default) with every floating-point leaf of the parameters and state in float32."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js


def _matrix_and_bias(shape):
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.standard_normal(shape)),
        "b": jnp.asarray(rng.standard_normal(shape[1])),
    }


# name -> (the transformation at learning rate 0.1, its parameters)
AT_LR_0_1 = {
    "shampoo-adam": (
        lambda: js.optimizers.shampoo(0.1, grafting="adam"),
        lambda: {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)},
    ),
    "shampoo-sgd": (
        lambda: js.optimizers.shampoo(0.1, grafting="sgd"),
        lambda: {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)},
    ),
    "shampoo-none": (
        lambda: js.optimizers.shampoo(0.1, grafting="none"),
        lambda: {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)},
    ),
    "soap": (
        lambda: js.optimizers.soap(learning_rate=0.1, weight_decay=0.01),
        lambda: {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)},
    ),
    "turbo_muon": (
        lambda: js.optimizers.turbo_muon(learning_rate=0.1),
        lambda: _matrix_and_bias((8, 5)),
    ),
}


@pytest.mark.parametrize("name", sorted(AT_LR_0_1))
def test_new_learning_rate_does_not_recompile_and_scales_the_step(name):
    make_tx, make_params = AT_LR_0_1[name]
    tx, params = make_tx(), make_params()
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 2.0, p.size).reshape(p.shape), params)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(params, state, grads):
        return tx.update(grads, state, params)

    state = tx.init(params)
    u1, _ = step(params, state, grads)
    old = state.hyperparams["learning_rate"]
    state.hyperparams["learning_rate"] = jnp.full_like(old, 0.01)  # same dtype and weak type
    u2, _ = step(params, state, grads)
    for key in params:
        np.testing.assert_allclose(u2[key], 0.1 * u1[key], rtol=1e-12)


@pytest.mark.parametrize(
    "name, seed, lanes",
    [("shampoo", 4, 3), ("soap", 3, 5)],
)
def test_vmap_over_gradients_equals_a_loop(name, seed, lanes):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    batch = {"w": jnp.asarray(rng.standard_normal((lanes, 4, 3))), "b": jnp.ones((lanes, 3))}
    tx = {
        "shampoo": lambda: js.optimizers.shampoo(0.1, block_size=2),
        "soap": lambda: js.optimizers.soap(0.1),
    }[name]()

    def two_steps(grads):
        state = tx.init(params)
        _, state = tx.update(grads, state, params)
        return tx.update(grads, state, params)[0]

    batched = jax.jit(jax.vmap(two_steps))(batch)
    for i in range(lanes):
        single = jax.jit(two_steps)(jax.tree.map(lambda x: x[i], batch))
        for key in params:
            np.testing.assert_allclose(batched[key][i], single[key], rtol=1e-10, atol=1e-12)


OPTIMIZERS = {
    "soap": lambda: js.optimizers.soap(3e-2),
    "shampoo": lambda: js.optimizers.shampoo(3e-2, block_size=8),
    "turbo_muon": lambda: js.optimizers.turbo_muon(2e-2),
}


@pytest.mark.float32
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_trains_an_mlp(name):
    rng = np.random.default_rng(5)
    X = jnp.asarray(rng.standard_normal((64, 5)), jnp.float32)
    y = jnp.sin(X @ jnp.arange(1.0, 6.0, dtype=jnp.float32))
    params = {
        "w1": jnp.asarray(0.5 * rng.standard_normal((5, 16)), jnp.float32),
        "b1": jnp.zeros(16, jnp.float32),
        "w2": jnp.asarray(0.5 * rng.standard_normal((16, 1)), jnp.float32),
    }

    def loss(p):
        return jnp.mean(((jnp.tanh(X @ p["w1"] + p["b1"]) @ p["w2"])[:, 0] - y) ** 2)

    tx = OPTIMIZERS[name]()
    state = tx.init(params)

    @jax.jit
    def step(p, state):
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        return optax.apply_updates(p, updates), state

    start = loss(params)
    for _ in range(100):
        params, state = step(params, state)
    floats = [x for x in jax.tree.leaves((params, state)) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert all(x.dtype == jnp.float32 for x in floats)
    assert loss(params) < 0.3 * start
