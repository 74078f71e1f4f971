"""HomoODE: homotopy continuation ends at the DEQ equilibrium; its gradients are right."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

N = 6


class _Cell(eqx.Module):
    """z -> tanh(W z + U x + b) with ||W||_2 = 0.8: a contraction in z."""

    weight: jax.Array
    inject: eqx.nn.Linear

    def __call__(self, z, x):
        return jnp.tanh(self.weight @ z + self.inject(x))


def _cell(key, dtype=None):
    k_w, k_u = jax.random.split(key)
    w = jax.random.normal(k_w, (N, N), dtype)
    w = 0.8 * w / jnp.linalg.norm(w, 2)
    return _Cell(w, eqx.nn.Linear(3, N, key=k_u, dtype=dtype))


def _deq_value(cell, x):
    solver = js.nonlinear.Anderson(rtol=1e-7, atol=1e-7)
    return js.nonlinear.DEQ(cell, (N,), solver=solver, max_steps=200)(x)


@pytest.mark.float32
def test_endpoint_is_the_deq_fixed_point_jit_vmap():
    cell = _cell(jax.random.PRNGKey(0))
    xs = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    layer = js.diffeq.HomoODE(cell, (N,), controller=js.diffeq.PIDController(rtol=1e-5, atol=1e-5))
    # one jitted, vmapped call: four paths from zeros, one from a non-zero start (e.g. a
    # shared learnable initial point), which must end at the same equilibrium
    z0s = jnp.zeros((5, N)).at[4].set(0.7)
    sols = eqx.filter_jit(lambda layer, xs, z0s: jax.vmap(layer.solve)(xs, z0s))(layer, xs, z0s)
    deq = jax.vmap(lambda x: _deq_value(cell, x))(xs)
    assert np.all(np.asarray(sols.result == js.RESULTS.successful))
    assert float(jnp.max(jnp.abs(sols.value - deq))) < 1e-4
    assert float(jnp.max(sols.stats["residual"])) < 1e-4
    assert np.all(np.asarray(sols.stats["num_steps"]) < 64)


def test_gradient_matches_finite_differences_both_adjoints():
    cell = _cell(jax.random.PRNGKey(2), jnp.float64)
    x = jnp.array([0.3, -1.2, 0.8])
    tight = js.diffeq.PIDController(rtol=1e-10, atol=1e-10)
    target = jnp.linspace(-1.0, 1.0, N)

    def loss(cell, x, adjoint):
        layer = js.diffeq.HomoODE(cell, (N,), controller=tight, max_steps=256, adjoint=adjoint)
        return jnp.sum((layer(x) - target) ** 2)

    implicit = js.nonlinear.ImplicitAdjoint()
    through_ode = js.diffeq.RecursiveCheckpointAdjoint()
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    g_cell, g_x = grad(cell, x, implicit)
    g_cell_ode, g_x_ode = grad(cell, x, through_ode)
    # central differences along a random direction of W and one of x (one compiled loss)
    eps = 1e-5
    direction = jax.random.normal(jax.random.PRNGKey(3), (N, N), jnp.float64)
    dx = jnp.array([1.0, 0.5, -2.0])
    signs = jnp.array([1.0, -1.0, 0.0, 0.0])
    shift_w, shift_x = signs * eps, jnp.roll(signs, 2) * eps
    cells = jax.vmap(lambda s: eqx.tree_at(lambda c: c.weight, cell, cell.weight + s * direction))(
        shift_w
    )
    losses = jax.jit(jax.vmap(lambda c, s: loss(c, x + s * dx, implicit)))(cells, shift_x)
    fd_w = (losses[0] - losses[1]) / (2 * eps)
    fd_x = (losses[2] - losses[3]) / (2 * eps)
    for gc, gx in ((g_cell, g_x), (g_cell_ode, g_x_ode)):
        np.testing.assert_allclose(jnp.sum(gc.weight * direction), fd_w, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(jnp.dot(gx, dx), fd_x, rtol=1e-6, atol=1e-9)
    # and the implicit gradient is DEQ's
    g_deq = jax.grad(lambda c: jnp.sum((_deq_value(c, x) - target) ** 2))(cell)
    np.testing.assert_allclose(g_cell.weight, g_deq.weight, rtol=1e-6, atol=1e-9)


def test_bad_input_and_unfinished_solve():
    cell = _cell(jax.random.PRNGKey(4))
    x = jnp.ones(3)
    with pytest.raises(ValueError, match="z0"):
        js.diffeq.HomoODE(cell, (N,))(x, jnp.zeros(N + 1))
    with pytest.raises(ValueError, match="latent_shape"):
        js.diffeq.HomoODE(cell, (N + 1,))(x)
    with pytest.raises(TypeError, match="adjoint"):
        js.diffeq.HomoODE(cell, (N,), adjoint=js.diffeq.ForwardMode())
    tiny = js.diffeq.HomoODE(
        cell, (N,), controller=js.diffeq.PIDController(rtol=1e-12, atol=1e-12), max_steps=2
    )
    sol = tiny.solve(x)  # does not raise: training should not stop for one hard example
    assert sol.result == js.RESULTS.max_steps_reached
