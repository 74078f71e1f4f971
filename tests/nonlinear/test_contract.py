"""The contract: errors and RESULTS codes, bad input, no retracing, memory of the implicit
adjoint independent of the iteration count, and the DEQ layer."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import cos_fixed_point

nl = js.nonlinear


def test_max_steps_and_nonconvergence_codes():
    quadratic = lambda y, args: jnp.sum((y - 3.0) ** 2)
    solver = nl.GradientDescent(learning_rate=0.01, rtol=1e-12, atol=1e-12)
    sol = nl.minimize(quadratic, solver, jnp.zeros(2), max_steps=3, throw=False)
    assert sol.result == js.RESULTS.max_steps_reached
    assert int(sol.stats["num_steps"]) == 3
    with pytest.raises(
        Exception, match=r"jaxsolve.nonlinear.minimize failed with result `max_steps_reached`"
    ):
        nl.minimize(quadratic, solver, jnp.zeros(2), max_steps=3)
    # No sign change on the bracket: Bisection reports nonconvergence.
    no_root = nl.root_find(
        lambda x, _: x**2 + 1.0, nl.Bisection(lower=-1.0, upper=1.0), jnp.array(0.0), throw=False
    )
    assert no_root.result == js.RESULTS.nonconvergence
    with pytest.raises(Exception, match="root_find failed with result `nonconvergence`"):
        nl.root_find(lambda x, _: x**2 + 1.0, nl.Bisection(lower=-1.0, upper=1.0), jnp.array(0.0))
    # A singular Jacobian (x^2 = -1 from x = 0): Newton reports it.
    singular = nl.root_find(lambda x, _: x**2 + 1.0, nl.Newton(), jnp.array(0.0), throw=False)
    assert singular.result == js.RESULTS.singular
    # A diverging iteration is reported as such (it is caught before it overflows).
    blowup = nl.fixed_point(
        lambda x, _: x**2 + 1.0, nl.FixedPointIteration(), jnp.array(2.0), throw=False
    )
    assert blowup.result == js.RESULTS.divergence


def test_bad_input_errors():
    scalar = lambda y, args: jnp.sum(y**2)
    with pytest.raises(ValueError, match="must return a scalar objective"):
        nl.minimize(lambda y, args: y**2, nl.BFGS(), jnp.zeros(3))
    with pytest.raises(ValueError, match="fn\\(y0, args\\)"):
        nl.root_find(lambda y, args: y[:2], nl.Newton(), jnp.zeros(3))
    with pytest.raises(TypeError, match="`solver` of minimize must be a minimiser"):
        nl.minimize(scalar, nl.Newton(), jnp.zeros(3))
    with pytest.raises(TypeError, match="`solver` of root_find"):
        nl.root_find(lambda y, a: y, nl.BFGS(), jnp.zeros(3))
    with pytest.raises(ValueError, match="`max_steps` must be a positive int"):
        nl.minimize(scalar, nl.BFGS(), jnp.zeros(3), max_steps=0)
    with pytest.raises(TypeError, match="`y0` must have a floating-point dtype"):
        nl.minimize(scalar, nl.BFGS(), jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match="share one floating dtype"):
        nl.minimize(
            lambda y, a: jnp.sum(y["a"]) + jnp.sum(y["b"]).astype(jnp.float64),
            nl.BFGS(),
            {"a": jnp.zeros(2), "b": jnp.zeros(2, jnp.float32)},
        )
    with pytest.raises(TypeError, match="`adjoint`"):
        nl.minimize(scalar, nl.BFGS(), jnp.zeros(3), adjoint="implicit")
    with pytest.raises(ValueError, match="`method`"):
        nl.NonlinearCG(method="newton")
    with pytest.raises(ValueError, match="lower"):
        nl.Bisection(lower=1.0, upper=0.0)
    with pytest.raises(ValueError, match="Bisection solves scalar problems"):
        nl.root_find(lambda y, a: y, nl.Bisection(lower=-1.0, upper=1.0), jnp.zeros(2))
    with pytest.raises(TypeError, match="`constraint`"):
        nl.ProjectedGradient(constraint="simplex")
    with pytest.raises(ValueError, match="`step_size`"):
        nl.FrankWolfe(nl.Simplex(), step_size="exact")


def test_no_retrace_on_new_hyperparameter_values():
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def solve(solver, theta):
        return nl.fixed_point(cos_fixed_point, solver, jnp.array(1.0), theta).value

    for mixing, rtol in [(1.0, 1e-10), (0.7, 1e-8), (0.9, 1e-6)]:
        x = solve(nl.Anderson(mixing=mixing, rtol=rtol, atol=rtol), jnp.array(0.3))
        np.testing.assert_allclose(x, np.cos(float(x)) + 0.3, atol=1e-5)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def fit(solver, data):
        residuals = lambda c, d: c[0] * jnp.exp(-c[1] * jnp.arange(5.0)) - d
        return nl.least_squares(residuals, solver, jnp.ones(2), data).value

    data = 2.0 * jnp.exp(-0.5 * jnp.arange(5.0))
    for damping in (1e-3, 1e-2, 1.0):
        c = fit(nl.LevenbergMarquardt(initial_damping=damping, rtol=1e-10, atol=1e-10), data)
        np.testing.assert_allclose(c, [2.0, 0.5], atol=1e-8)


def _residual_size(fn, x):
    # The memory a reverse pass keeps: the total size of the arrays the VJP closes over.
    _, vjp_fn = jax.vjp(fn, x)
    return sum(leaf.size for leaf in jax.tree.leaves(vjp_fn) if hasattr(leaf, "size"))


def test_implicit_adjoint_memory_independent_of_iterations():
    def solve(theta, max_steps, rtol, adjoint):
        solver = nl.FixedPointIteration(rtol=rtol, atol=rtol)
        return nl.fixed_point(
            cos_fixed_point,
            solver,
            jnp.zeros(8),
            theta,
            max_steps=max_steps,
            adjoint=adjoint,
            throw=False,
        ).value

    theta = jnp.linspace(0.1, 0.5, 8)
    implicit = nl.ImplicitAdjoint()
    few = _residual_size(lambda t: solve(t, 16, 1e-3, implicit), theta)
    many = _residual_size(lambda t: solve(t, 4096, 1e-14, implicit), theta)
    assert few == many
    # The unrolled adjoint keeps checkpoints whose number grows with max_steps.
    unrolled = nl.RecursiveCheckpointAdjoint()
    small = _residual_size(lambda t: solve(t, 16, 1e-14, unrolled), theta)
    large = _residual_size(lambda t: solve(t, 4096, 1e-14, unrolled), theta)
    assert large > 4 * small
    assert many < large


class _Cell(eqx.Module):
    linear: eqx.nn.Linear

    def __call__(self, z, x):
        return jnp.tanh(self.linear(z) + x)


@pytest.mark.slow
def test_deq_gradients_match_unrolled():
    linear = eqx.nn.Linear(6, 6, key=jax.random.PRNGKey(0), dtype=jnp.float64)
    linear = eqx.tree_at(lambda l: l.weight, linear, 0.5 * linear.weight)
    solver = nl.Anderson(rtol=1e-12, atol=1e-12)
    deq = nl.DEQ(_Cell(linear), latent_shape=(6,), solver=solver)
    x = jax.random.normal(jax.random.PRNGKey(1), (6,))
    z = deq(x)
    np.testing.assert_allclose(z, jnp.tanh(deq.cell.linear(z) + x), atol=1e-11)
    loss = lambda model, x: jnp.sum(model(x) ** 2)
    unrolled = eqx.tree_at(lambda d: d.adjoint, deq, nl.RecursiveCheckpointAdjoint())
    grads = eqx.filter_jit(
        lambda m, u, x: (eqx.filter_grad(loss)(m, x), eqx.filter_grad(loss)(u, x))
    )
    g_implicit, g_unrolled = grads(deq, unrolled, x)
    np.testing.assert_allclose(
        g_implicit.cell.linear.weight, g_unrolled.cell.linear.weight, atol=1e-9
    )
    np.testing.assert_allclose(g_implicit.cell.linear.bias, g_unrolled.cell.linear.bias, atol=1e-9)
