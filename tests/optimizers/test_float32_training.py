"""The matrix optimisers train a small MLP in float32 (x64 off, the users' default) and keep
every floating-point leaf of the parameters and the optimiser state in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js

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
