"""A researcher's program: an equinox MLP (relu inside) in `args` of least_squares, minimize
and root_find under `eqx.filter_jit`, differentiated w.r.t. the MLP's parameters through the
implicit function theorem, checked against finite differences."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxsolve as js

nl = js.nonlinear
TIGHT = dict(rtol=1e-12, atol=1e-12)


def residual(y, args):
    model, target = args
    return 0.3 * model(y) + y - target


@eqx.filter_jit
def solutions(model, target):
    args = (model, target)
    loss = lambda y, a: 0.5 * jnp.sum(residual(y, a) ** 2)
    y0 = jnp.zeros(2)
    return (
        nl.least_squares(residual, nl.LevenbergMarquardt(**TIGHT), y0, args).value,
        nl.minimize(loss, nl.BFGS(**TIGHT), y0, args).value,
        nl.root_find(residual, nl.Newton(**TIGHT), y0, args).value,
    )


def readout(model, target):
    weights = jnp.array([1.0, -2.0])
    return sum(jnp.vdot(weights, y) for y in solutions(model, target))


def test_gradient_wrt_mlp_parameters_matches_finite_differences():
    model = eqx.nn.MLP(2, 2, 8, 1, activation=jax.nn.relu, key=jax.random.key(0))
    target = jnp.array([0.5, -0.2])
    ls, mn, rf = solutions(model, target)
    np.testing.assert_allclose(ls, rf, atol=1e-10)
    np.testing.assert_allclose(mn, rf, atol=1e-8)
    grads = eqx.filter_jit(eqx.filter_grad(readout))(model, target)
    # Finite differences along the last layer's weights and a first-layer bias.
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    flat_grad = jax.flatten_util.ravel_pytree(eqx.filter(grads, eqx.is_inexact_array))[0]
    value = jax.jit(lambda f: readout(eqx.combine(unravel(f), static), target))
    assert float(jnp.max(jnp.abs(flat_grad))) > 1e-3  # the gradient is not trivially zero
    eps = 1e-6
    for index in (0, 5, flat.size - 10, flat.size - 1):
        step = jnp.zeros_like(flat).at[index].set(eps)
        fd = (value(flat + step) - value(flat - step)) / (2 * eps)
        np.testing.assert_allclose(flat_grad[index], fd, rtol=1e-5, atol=1e-8)
