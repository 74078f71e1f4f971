"""jaxsolve.implicit: closed-form implicit derivatives in forward and reverse mode."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxsolve as js
from tests.helpers import ridge_closed_form, ridge_optimality, ridge_problem


def _gradient_descent_ridge(w_init, lam, X, y):
    # A deliberately iterative solver (lax.while_loop): it cannot be reverse-differentiated
    # by unrolling, so a correct gradient proves the implicit rule is used.
    step = 0.5 / (jnp.linalg.norm(X, 2) ** 2 / X.shape[0] + lam)

    def body(carry):
        i, w = carry
        return i + 1, w - step * ridge_optimality(w, lam, X, y)

    return lax.while_loop(lambda c: c[0] < 3000, body, (0, w_init))[1]


ridge = js.implicit.custom_root(ridge_optimality)(_gradient_descent_ridge)


def test_ridge_hypergradient_closed_form_float64():
    X, y = ridge_problem()
    lam = jnp.asarray(0.2)
    w0 = jnp.zeros(X.shape[1])
    w_exact, dw_exact = ridge_closed_form(lam, X, y)
    assert np.allclose(ridge(w0, lam, X, y), w_exact, rtol=1e-10, atol=1e-12)
    for jac in (jax.jacrev, jax.jacfwd):
        dw = jac(ridge, argnums=1)(w0, lam, X, y)
        np.testing.assert_allclose(dw, dw_exact, rtol=1e-9, atol=1e-12)


def test_fixed_point_cos():
    @js.implicit.custom_fixed_point(lambda x, theta: jnp.cos(x) + theta)
    def solve(x_init, theta):
        return lax.fori_loop(0, 300, lambda _, x: jnp.cos(x) + theta, x_init)

    theta = jnp.asarray(0.3)
    x_star = solve(jnp.asarray(0.0), theta)
    np.testing.assert_allclose(x_star, jnp.cos(x_star) + theta, atol=1e-13)
    expected = 1.0 / (1.0 + jnp.sin(x_star))
    np.testing.assert_allclose(jax.grad(solve, argnums=1)(0.0, theta), expected, rtol=1e-12)
    np.testing.assert_allclose(jax.jacfwd(solve, argnums=1)(0.0, theta), expected, rtol=1e-12)
