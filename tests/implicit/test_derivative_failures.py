"""Derivative solves that fail are reported (issue 8): a singular Jacobian at the root, a
backward solve that does not converge, and the opt-out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js


@js.implicit.custom_root(lambda x, t: (x - t) ** 2)
def double_root(x_init, t):
    # x* = t is a double root: dF/dx = 2 (x - t) = 0 there, so the implicit derivative does
    # not exist.
    return t


@js.implicit.custom_root(lambda x, t: (x - t) ** 2, throw=False)
def double_root_unchecked(x_init, t):
    return t


def test_singular_jacobian_raises_in_both_modes():
    x0, t = jnp.array(0.0), jnp.array(1.0)
    with pytest.raises(Exception, match="implicit differentiation failed with result `singular`"):
        jax.jit(jax.grad(double_root, argnums=1))(x0, t)
    with pytest.raises(Exception, match="`singular`"):
        jax.jit(lambda t: jax.jvp(lambda t: double_root(x0, t), (t,), (jnp.ones(()),))[1])(t)
    # The opt-out: no check, the solver's answer as it is.
    assert not np.isfinite(jax.grad(double_root_unchecked, argnums=1)(x0, t))


def _ridge(lam, linear_solver, throw=True):
    X = jax.random.normal(jax.random.key(0), (40, 6))
    y = jax.random.normal(jax.random.key(1), (40,))
    loss = lambda w, lam: jnp.mean((X @ w - y) ** 2) + lam * jnp.sum(w**2)
    adjoint = js.nonlinear.ImplicitAdjoint(linear_solver=linear_solver)
    solver = js.nonlinear.LBFGS(rtol=1e-10, atol=1e-10)
    sol = js.nonlinear.minimize(loss, solver, jnp.zeros(6), lam, adjoint=adjoint, throw=throw)
    return jnp.sum(sol.value)


def test_backward_solve_that_does_not_converge_raises():
    lam = jnp.array(0.3)
    starved = js.linear.CG(rtol=1e-12, atol=0.0, max_steps=2)
    with pytest.raises(Exception, match="failed with result `linear_solve_failed`"):
        jax.jit(jax.grad(lambda lam: _ridge(lam, starved)))(lam)
    # With enough steps the same solve passes and agrees with the default solver.
    enough = js.linear.CG(rtol=1e-12, atol=0.0, max_steps=60)
    grad = jax.jit(jax.grad(lambda lam: _ridge(lam, enough)))(lam)
    default = jax.jit(jax.grad(lambda lam: _ridge(lam, None)))(lam)
    np.testing.assert_allclose(grad, default, rtol=1e-8)
    # throw=False at the entry point opts out: the truncated solve's (wrong) gradient comes back.
    truncated = jax.jit(jax.grad(lambda lam: _ridge(lam, starved, throw=False)))(lam)
    assert abs(float(truncated - default)) > 1e-6
