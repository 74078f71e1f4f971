"""The L-BFGS descent (compact representation for small histories, two-loop recursion for large
ones) against a reference two-loop recursion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve.nonlinear as nl


def two_loop(grad, pairs):
    """The textbook two-loop recursion over `pairs` (oldest first), gamma from the newest."""
    q = np.array(grad, dtype=np.float64)
    alphas = []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (s @ y)
        q = q - alpha * y
        alphas.append(alpha)
    s, y = pairs[-1] if pairs else (None, None)
    r = q * ((s @ y) / (y @ y) if pairs else 1.0)
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        beta = (y @ r) / (s @ y)
        r = r + s * (alpha - beta)
    return -r


@pytest.mark.parametrize(
    "history_size, n",
    # n = 7: the compact form; 5 x 2 x 900 float64 entries exceed 64 KiB: the two loops.
    [(1, 7), (3, 7), (5, 7), (5, 900)],
)
def test_lbfgs_direction_matches_two_loop(history_size, n):
    """Random curvature pairs, some rejected (s'y < 0), before and after the history fills:
    every direction equals the two-loop recursion over the accepted pairs to roundoff."""
    rng = np.random.default_rng(history_size)
    descent = nl.LBFGSDescent(history_size)
    state = descent.init(jnp.zeros(n), jnp.zeros(n))
    accepted = []
    compact = 2 * history_size * n * 8 <= 64 * 1024
    assert isinstance(state, tuple) and (hasattr(state, "r_inv") == compact)
    update = jax.jit(descent.update)
    direction = jax.jit(descent.direction)
    for step in range(12):
        grad = rng.normal(size=n)
        d, _ = direction(jnp.asarray(grad), state)
        expected = two_loop(grad, accepted[-history_size:])
        np.testing.assert_allclose(d, expected, rtol=1e-10, atol=1e-12)
        s = rng.normal(size=n)
        a = rng.normal(size=(n, n)) / np.sqrt(n)
        y = (a @ a.T + np.eye(n)) @ s if step % 4 != 2 else -s  # every 4th pair: s'y < 0
        state = update(jnp.asarray(s), jnp.asarray(y), jnp.asarray(grad), state)
        if s @ y > 0:
            accepted.append((s, y))


def test_lbfgs_direction_vmaps_and_float32():
    descent = nl.LBFGSDescent(4)
    n = 5
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.normal(size=(3, n)), jnp.float32)
    y = 2.0 * s + 0.1 * jnp.asarray(rng.normal(size=(3, n)), jnp.float32)

    def one(s, y, g):
        state = descent.init(jnp.zeros(n, jnp.float32), g)
        state = descent.update(s, y, g, state)
        return descent.direction(g, state)[0]

    g = jnp.asarray(rng.normal(size=(3, n)), jnp.float32)
    out = jax.vmap(one)(s, y, g)
    assert out.dtype == jnp.float32
    for i in range(3):
        expected = two_loop(np.asarray(g[i], np.float64), [(np.asarray(s[i]), np.asarray(y[i]))])
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-6)
