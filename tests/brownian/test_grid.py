"""GridBrownianPath: exact law per step, grid-only queries, and the fixed-step solve it drives."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats

import jaxsolve as js


def _path(num_steps=50, shape=(3,), levy_area="space-time-time", key=0, t0=0.0, t1=2.0):
    return js.brownian.GridBrownianPath(t0, t1, num_steps, shape, jr.key(key), levy_area)


def test_law_of_each_step():
    """(W, H, K) of each step: independent centred Gaussians with variances h, h/12, h/720."""
    keys = jr.split(jr.key(1), 4000)
    draw = jax.vmap(lambda k: js.brownian.GridBrownianPath(0.0, 2.0, 4, (2,), k, "space-time-time")
                    .increments(jnp.linspace(0.0, 2.0, 5)))(keys)  # fmt: skip
    h = 0.5
    for field, var in (("W", h), ("H", h / 12), ("K", h / 720)):
        x = np.asarray(getattr(draw, field)).reshape(-1) / np.sqrt(var)
        assert scipy.stats.kstest(x, "norm").pvalue > 1e-3, field
    flat = np.stack([np.asarray(getattr(draw, f)).reshape(-1) for f in "WHK"])
    corr = np.corrcoef(flat)
    assert np.max(np.abs(corr - np.eye(3))) < 0.02
    # different steps are independent
    w = np.asarray(draw.W)
    assert abs(np.corrcoef(w[:, 0, 0], w[:, 1, 0])[0, 1]) < 0.05


def test_single_queries_agree_with_the_grid():
    bm = _path()
    grid = bm.increments(bm.grid)
    for i in (0, 7, 49):
        inc = bm.increment(bm.grid[i], bm.grid[i + 1])
        for field in "WHK":
            np.testing.assert_allclose(getattr(inc, field), getattr(grid, field)[i], rtol=1e-12)
    # W over several steps is their sum (a path without areas), evaluate is the running sum
    inc = _path(levy_area="none").increment(bm.grid[3], bm.grid[20])
    np.testing.assert_allclose(inc.W, grid.W[3:20].sum(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bm.evaluate(2.0), grid.W.sum(0), rtol=1e-12, atol=1e-14)
    empty = bm.increment(1.0, 1.0)
    assert float(jnp.max(jnp.abs(empty.W))) == 0.0 and float(jnp.max(jnp.abs(empty.H))) == 0.0
    # the same under jit, with traced query times
    plain = _path(levy_area="none")
    jitted = jax.jit(lambda s, t: plain.increment(s, t).W)(bm.grid[3], bm.grid[20])
    np.testing.assert_allclose(jitted, inc.W, rtol=1e-12, atol=1e-14)


def test_off_grid_queries_raise():
    bm = _path()
    with pytest.raises(ValueError, match="not a point of the path's grid"):
        bm.increment(0.0, 0.013)
    with pytest.raises(ValueError, match="single grid steps"):
        bm.increment(0.0, 0.4)
    with pytest.raises(ValueError, match="grid of 51 times"):
        bm.increments(jnp.linspace(0.0, 2.0, 11))
    with pytest.raises(ValueError, match="not the path's grid"):
        bm.increments(jnp.linspace(0.0, 1.0, 51))
    plain = _path(levy_area="none")
    with pytest.raises(ValueError, match="s <= t"):
        plain.increment(1.0, 0.4)
    # under jit the order check reaches W too (no silent zero)
    with pytest.raises(Exception, match="s <= t"):
        jax.jit(lambda s: plain.increment(s, 0.4).W)(1.0).block_until_ready()
    with pytest.raises(Exception, match="not a point of the path's grid"):
        jax.jit(lambda t: bm.increment(0.0, t).W)(0.013).block_until_ready()
    with pytest.raises((ValueError, TypeError)):
        js.brownian.GridBrownianPath(0.0, 1.0, 0, (2,), jr.key(0))
    with pytest.raises(ValueError):
        js.brownian.GridBrownianPath(1.0, 0.0, 4, (2,), jr.key(0))


def test_fixed_step_euler_maruyama_equals_a_hand_scan():
    """EM driven by the grid path = the textbook recursion on the same increments."""
    bm = js.brownian.GridBrownianPath(0.0, 1.0, 200, (4,), jr.key(2))
    term = js.diffeq.SDETerm(lambda t, y, a: a * y, lambda t, y, a: 0.3 * y, bm)
    sol = js.diffeq.solve(
        term, js.diffeq.EulerMaruyama(), 0.0, 1.0, jnp.ones(4), dt0=0.005, args=0.1
    )
    dW = bm.increments(bm.grid).W

    def step(y, w):
        return y + 0.005 * 0.1 * y + 0.3 * y * w, None

    y, _ = jax.lax.scan(step, jnp.ones(4), dW)
    np.testing.assert_allclose(sol.ys[-1], y, rtol=1e-12)


def test_adaptive_solve_stops_with_an_error():
    bm = js.brownian.GridBrownianPath(0.0, 1.0, 64, (2,), jr.key(0), "space-time")
    term = js.diffeq.SDETerm(
        lambda t, y, a: -y, lambda t, y, a: 0.1 * jnp.ones_like(y), bm, noise="additive"
    )
    with pytest.raises(Exception, match="grid"):
        js.diffeq.solve(
            term,
            js.diffeq.ShARK(),
            0.0,
            1.0,
            jnp.ones(2),
            dt0=0.01,
            controller=js.diffeq.PIDController(rtol=1e-3, atol=1e-3),
        )


def test_vmap_over_keys_grad_and_pytree_shape():
    shape = {
        "a": jax.ShapeDtypeStruct((2,), jnp.float32),
        "b": jax.ShapeDtypeStruct((), jnp.float64),
    }
    bm = js.brownian.GridBrownianPath(0.0, 1.0, 10, shape, jr.key(0), "space-time")
    inc = bm.increments(bm.grid)
    assert inc.W["a"].shape == (10, 2) and inc.W["a"].dtype == jnp.float32
    assert inc.H["b"].shape == (10,) and inc.H["b"].dtype == jnp.float64

    def final(key, sigma):
        path = js.brownian.GridBrownianPath(0.0, 1.0, 20, (), key)
        term = js.diffeq.SDETerm(lambda t, y, a: 0.0 * y, lambda t, y, a: a, path)
        return js.diffeq.solve(
            term, js.diffeq.EulerMaruyama(), 0.0, 1.0, jnp.asarray(0.0), dt0=0.05, args=sigma
        ).ys[-1]

    keys = jr.split(jr.key(3), 8)
    ys = jax.vmap(final, in_axes=(0, None))(keys, 2.0)
    grads = jax.vmap(jax.grad(final, argnums=1), in_axes=(0, None))(keys, 2.0)
    # y(1) = sigma W(1): the gradient wrt sigma is W(1) = y / sigma
    np.testing.assert_allclose(grads, ys / 2.0, rtol=1e-10)
    assert len(set(np.asarray(ys).tolist())) == 8
