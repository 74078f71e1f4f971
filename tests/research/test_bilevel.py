"""Bilevel ridge regression as a researcher writes it: the validation loss of the ridge
solution, differentiated w.r.t. the regularisation by the implicit function theorem, against
the closed-form hypergradient; then a few steps of hypergradient descent under jit."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxsolve as js

nl = js.nonlinear
key_train, key_val, key_w = jax.random.split(jax.random.key(3), 3)
X_train = jax.random.normal(key_train, (30, 5))
X_val = jax.random.normal(key_val, (20, 5))
w_true = jax.random.normal(key_w, (5,))
y_train = X_train @ w_true + 0.5 * jnp.sin(jnp.arange(30.0))
y_val = X_val @ w_true


def inner_loss(w, log_lam):
    return 0.5 * jnp.sum((X_train @ w - y_train) ** 2) + 0.5 * jnp.exp(log_lam) * jnp.sum(w**2)


def outer_loss(log_lam):
    solver = nl.LBFGS(rtol=1e-11, atol=1e-11)
    w = nl.minimize(inner_loss, solver, jnp.zeros(5), log_lam, max_steps=500).value
    return 0.5 * jnp.sum((X_val @ w - y_val) ** 2)


def closed_form(log_lam):
    lam = jnp.exp(log_lam)
    H = X_train.T @ X_train + lam * jnp.eye(5)
    w = jnp.linalg.solve(H, X_train.T @ y_train)
    dw = -jnp.linalg.solve(H, lam * w)  # dw/dlog_lam
    return 0.5 * jnp.sum((X_val @ w - y_val) ** 2), jnp.vdot(X_val.T @ (X_val @ w - y_val), dw)


def test_implicit_hypergradient_matches_closed_form_and_descends():
    value_and_grad = jax.jit(jax.value_and_grad(outer_loss))
    for log_lam in (jnp.array(-1.0), jnp.array(1.5)):
        value, grad = value_and_grad(log_lam)
        exact_value, exact_grad = closed_form(log_lam)
        np.testing.assert_allclose(value, exact_value, rtol=1e-9)
        np.testing.assert_allclose(grad, exact_grad, rtol=1e-7)
    log_lam, start = jnp.array(1.5), float(outer_loss(jnp.array(1.5)))
    for _ in range(5):
        log_lam = log_lam - 0.05 * value_and_grad(log_lam)[1]
    assert float(closed_form(log_lam)[0]) < start
