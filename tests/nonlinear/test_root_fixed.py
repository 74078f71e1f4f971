"""Root finders and fixed-point solvers: x = cos x + theta (dx*/dtheta = 1/(1 + sin x*)) in
reverse and forward mode and unrolled, x^3 = a under vmap, finite-difference checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import cos_fixed_point, finite_difference_grad

nl = js.nonlinear
TIGHT = dict(rtol=1e-12, atol=1e-12)
THETA = jnp.array(0.3)

ROOT_FINDERS = {
    "newton": nl.Newton(**TIGHT),
    "chord": nl.Chord(**TIGHT),
    "broyden": nl.Broyden(**TIGHT),
    "bisection": nl.Bisection(lower=0.0, upper=2.0, **TIGHT),
}
FIXED_POINT_SOLVERS = {
    "iteration": nl.FixedPointIteration(**TIGHT),
    "anderson": nl.Anderson(**TIGHT),
    "newton": nl.Newton(**TIGHT),
}


def _cos_root(x, theta):
    return cos_fixed_point(x, theta) - x


def _check_cos(x, reverse, forward):
    expected = 1.0 / (1.0 + np.sin(float(x)))
    np.testing.assert_allclose(float(x), np.cos(float(x)) + 0.3, atol=1e-11)
    np.testing.assert_allclose(reverse, expected, rtol=1e-9)
    np.testing.assert_allclose(forward, expected, rtol=1e-9)


@pytest.mark.parametrize("name", list(ROOT_FINDERS))
def test_cos_root_find(name):
    solver = ROOT_FINDERS[name]
    solve = lambda theta: nl.root_find(_cos_root, solver, jnp.array(1.0), theta).value
    run = jax.jit(lambda t: (solve(t), jax.grad(solve)(t), jax.jacfwd(solve)(t)))
    _check_cos(*run(THETA))


@pytest.mark.parametrize("name", list(FIXED_POINT_SOLVERS))
def test_cos_fixed_point(name):
    solver = FIXED_POINT_SOLVERS[name]
    solve = lambda theta: nl.fixed_point(cos_fixed_point, solver, jnp.array(1.0), theta).value
    run = jax.jit(lambda t: (solve(t), jax.grad(solve)(t), jax.jacfwd(solve)(t)))
    _check_cos(*run(THETA))


def test_cos_fixed_point_unrolled_adjoint():
    # The unrolling adjoints shared with diffeq: reverse (recursive checkpointing), both modes
    # (nested scans), forward mode.
    solver = nl.FixedPointIteration(**TIGHT)

    def solve(theta, adjoint):
        return nl.fixed_point(cos_fixed_point, solver, jnp.array(1.0), theta, adjoint=adjoint).value

    x = solve(THETA, nl.RecursiveCheckpointAdjoint())
    expected = 1.0 / (1.0 + np.sin(float(x)))
    reverse = jax.jit(jax.grad(solve), static_argnums=1)(THETA, nl.RecursiveCheckpointAdjoint())
    direct = jax.jit(
        lambda t: (jax.grad(solve)(t, nl.DirectAdjoint()), jax.jacfwd(solve)(t, nl.DirectAdjoint()))
    )
    forward = jax.jit(jax.jacfwd(solve), static_argnums=1)(THETA, nl.ForwardMode())
    for value in (reverse, *direct(THETA), forward):
        np.testing.assert_allclose(value, expected, rtol=1e-8)


def test_cube_root_under_vmap():
    a = jnp.array([0.5, 2.0, 8.0, 27.0])
    solve = lambda a: (
        nl.root_find(lambda x, a: x**3 - a, nl.Newton(**TIGHT), jnp.array(1.0), a).value
    )
    batched = jax.jit(jax.vmap(solve))
    np.testing.assert_allclose(batched(a), np.cbrt(np.asarray(a)), rtol=1e-12)
    # d a^(1/3) / da = a^(-2/3) / 3, per element, through vmap of grad.
    grads = jax.jit(jax.vmap(jax.grad(solve)))(a)
    np.testing.assert_allclose(grads, np.asarray(a) ** (-2 / 3) / 3, rtol=1e-10)
    # jit = eager = vmap
    np.testing.assert_allclose(solve(a[1]), batched(a)[1], rtol=1e-14)


def test_pytree_root_and_linear_fixed_point():
    # A linear fixed point x = M x + b (pytree-free) with solution (I - M)^-1 b, and its
    # derivative in b: (I - M)^-1 (a matrix), via Anderson.
    rng = np.random.default_rng(0)
    M = jnp.asarray(0.3 * rng.normal(size=(4, 4)) / 2)
    b = jnp.asarray(rng.normal(size=4))
    solver = nl.Anderson(**TIGHT)
    solve = lambda b: nl.fixed_point(lambda x, b: M @ x + b, solver, jnp.zeros(4), b).value
    expected_jac = np.linalg.inv(np.eye(4) - np.asarray(M))
    x, jac = jax.jit(lambda b: (solve(b), jax.jacrev(solve)(b)))(b)
    np.testing.assert_allclose(x, expected_jac @ np.asarray(b), atol=1e-11)
    np.testing.assert_allclose(jac, expected_jac, atol=1e-10)
    # A pytree unknown: {"u": u, "v": v} with u^2 = p, v = u + q.
    fn = lambda y, p: {"u": y["u"] ** 2 - p[0], "v": y["v"] - y["u"] - p[1]}
    y0 = {"u": jnp.array(1.0), "v": jnp.array(0.0)}
    sol = nl.root_find(fn, nl.Broyden(**TIGHT), y0, jnp.array([4.0, 1.0]))
    np.testing.assert_allclose(sol.value["u"], 2.0, atol=1e-12)
    np.testing.assert_allclose(sol.value["v"], 3.0, atol=1e-12)


def test_root_and_fixed_point_finite_differences():
    # A 3-D nonlinear system with a vector parameter: Newton (root) and Anderson (fixed point).
    def fn(y, theta):
        return jnp.tanh(y) + 2.0 * y - theta * jnp.array([1.0, 2.0, 3.0]) - jnp.roll(y, 1) * 0.3

    weights = jnp.array([1.0, -1.0, 0.5])

    def root_objective(theta):
        return jnp.vdot(weights, nl.root_find(fn, nl.Newton(**TIGHT), jnp.zeros(3), theta).value)

    def fixed_objective(theta):
        # y = y - 0.3 fn(y) is a contraction near the root; the same solution.
        step = lambda y, theta: y - 0.3 * fn(y, theta)
        return jnp.vdot(
            weights, nl.fixed_point(step, nl.Anderson(**TIGHT), jnp.zeros(3), theta).value
        )

    theta = jnp.array([0.4, -0.2, 0.7])
    for objective in (root_objective, fixed_objective):
        grad = jax.jit(jax.grad(objective))(theta)
        np.testing.assert_allclose(
            grad, finite_difference_grad(jax.jit(objective), theta), atol=1e-7
        )
