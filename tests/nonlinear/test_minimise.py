"""Minimisers: ridge hypergradients (closed form) in reverse and forward mode through every
minimiser, quadratics, constrained problems with known optima, Rosenbrock by least squares."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js
from tests.helpers import (
    finite_difference_grad,
    ridge_closed_form,
    ridge_loss,
    ridge_problem,
    rosenbrock_residuals,
)

nl = js.nonlinear
TIGHT = dict(rtol=1e-12, atol=1e-12)
X, Y = ridge_problem(num_samples=40, num_features=6)
LAM = jnp.array(0.3)

MINIMISERS = {
    "gradient_descent": nl.GradientDescent(learning_rate=0.68, **TIGHT),
    "nonlinear_cg": nl.NonlinearCG(**TIGHT),
    "bfgs": nl.BFGS(**TIGHT),
    "bfgs_armijo": nl.BFGS(search=nl.BacktrackingArmijo(), **TIGHT),
    "lbfgs": nl.LBFGS(history_size=5, **TIGHT),
    "optax_sgd": nl.OptaxMinimizer(optax.sgd(0.68), **TIGHT),
    # Inactive constraints: the same optimum and hypergradient as the unconstrained problem.
    "projected_gradient_box": nl.ProjectedGradient(nl.Box(lower=-50.0, upper=50.0), **TIGHT),
    "projected_gradient_ball": nl.ProjectedGradient(nl.Ball(radius=100.0), **TIGHT),
}


def _ridge_solution(solver, lam):
    return nl.minimize(ridge_loss, solver, jnp.zeros(6), (lam, X, Y), max_steps=2000).value


@jax.jit
def _ridge_all(solver, lam):
    # One compilation for the value and both modes of differentiation.
    return (
        _ridge_solution(solver, lam),
        jax.jacrev(_ridge_solution, argnums=1)(solver, lam),
        jax.jacfwd(_ridge_solution, argnums=1)(solver, lam),
    )


_FAST = ("lbfgs", "projected_gradient_box", "optax_sgd")


@pytest.mark.parametrize(
    "name",
    [n if n in _FAST else pytest.param(n, marks=pytest.mark.slow) for n in MINIMISERS],
)
def test_ridge_hypergradient_every_minimiser(name):
    solver = MINIMISERS[name]
    w_exact, dw_exact = ridge_closed_form(LAM, X, Y)
    w, reverse, forward = _ridge_all(solver, LAM)
    np.testing.assert_allclose(w, w_exact, rtol=0, atol=1e-10)
    np.testing.assert_allclose(reverse, dw_exact, rtol=0, atol=1e-9)
    np.testing.assert_allclose(forward, dw_exact, rtol=0, atol=1e-9)


def test_ridge_hypergradient_unrolled_matches_implicit():
    solver = nl.GradientDescent(learning_rate=0.68, **TIGHT)
    _, dw_exact = ridge_closed_form(LAM, X, Y)

    def unrolled(lam):
        adjoint = nl.RecursiveCheckpointAdjoint()
        return nl.minimize(
            ridge_loss, solver, jnp.zeros(6), (lam, X, Y), max_steps=100, adjoint=adjoint
        ).value

    np.testing.assert_allclose(jax.jit(jax.jacrev(unrolled))(LAM), dw_exact, rtol=0, atol=1e-7)


def test_float32_hypergradient_default_backward_solve():
    X32, Y32 = X.astype(jnp.float32), Y.astype(jnp.float32)
    lam = jnp.array(0.3, jnp.float32)
    solver = nl.LBFGS(rtol=1e-6, atol=1e-6)

    def solve(lam):
        return nl.minimize(ridge_loss, solver, jnp.zeros(6, jnp.float32), (lam, X32, Y32)).value

    w, dw = ridge_closed_form(0.3, X, Y)
    value, grad = jax.jit(lambda lam: (solve(lam), jax.jacrev(solve)(lam)))(lam)
    assert value.dtype == jnp.float32 and grad.dtype == jnp.float32
    assert np.linalg.norm(np.asarray(grad, np.float64) - dw) / np.linalg.norm(dw) <= 1e-4


@pytest.mark.parametrize(
    "method",
    [
        "polak_ribiere",
        pytest.param("fletcher_reeves", marks=pytest.mark.slow),
        pytest.param("hestenes_stiefel", marks=pytest.mark.slow),
        pytest.param("dai_yuan", marks=pytest.mark.slow),
    ],
)
def test_nonlinear_cg_on_quadratic(method):
    rng = np.random.default_rng(1)
    M = rng.normal(size=(8, 8))
    A = jnp.asarray(M @ M.T + 8 * np.eye(8))
    b = jnp.asarray(rng.normal(size=8))
    exact = np.linalg.solve(A, b)
    quadratic = lambda y, args: 0.5 * jnp.vdot(y, args[0] @ y) - jnp.vdot(args[1], y)
    solver = nl.NonlinearCG(method=method, rtol=1e-10, atol=1e-10)
    sol = nl.minimize(quadratic, solver, jnp.zeros(8), (A, b))
    np.testing.assert_allclose(sol.value, exact, rtol=0, atol=1e-9)
    # Conjugate directions: a few times n steps on an n-dimensional quadratic, not hundreds
    # (Dai-Yuan, with the gradient test relative to the initial gradient, needs about 6n).
    assert int(sol.stats["num_steps"]) <= 8 * 8


def test_pytree_variable_and_user_driven_loop():
    # Pytree y: a dict of arrays, minimised by BFGS; then the same solver driven by hand.
    target = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    loss = lambda y, t: sum(jnp.sum((y[k] - t[k]) ** 2) for k in y)
    y0 = {"a": jnp.zeros(2), "b": jnp.array(0.0)}
    sol = nl.minimize(loss, nl.BFGS(**TIGHT), y0, target)
    assert jax.tree.structure(sol.value) == jax.tree.structure(y0)
    np.testing.assert_allclose(sol.value["a"], target["a"], atol=1e-10)

    solver = nl.LBFGS(**TIGHT)
    flat_loss = lambda y, args: jnp.sum((y - args) ** 2)
    args = jnp.array([1.0, 2.0, 3.0])

    @jax.jit
    def run(y):
        state = solver.init(flat_loss, y, args, {})

        def body(carry, _):
            y, state = carry
            return solver.step(flat_loss, y, args, {}, state), None

        (y, state), _ = jax.lax.scan(body, (y, state), None, length=5)
        return y, solver.terminate(flat_loss, y, args, {}, state)

    y, (done, result) = run(jnp.zeros(3))
    np.testing.assert_allclose(y, args, atol=1e-10)
    assert bool(done) and result == js.RESULTS.successful


def _simplex_projection_reference(v):
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1
    rho = np.nonzero(u - css / np.arange(1, v.size + 1) > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0)


def test_projected_gradient_known_optima():
    point = jnp.array([0.8, 0.5, -0.2, 0.3, 0.1])
    distance = lambda y, c: jnp.sum((y - c) ** 2)
    cases = [
        (nl.Simplex(), _simplex_projection_reference(np.asarray(point))),
        (nl.Box(lower=0.0, upper=0.4), np.clip(point, 0.0, 0.4)),
        (nl.Ball(radius=0.5), 0.5 * point / np.linalg.norm(point)),
    ]
    for constraint, expected in cases:
        sol = nl.minimize(distance, nl.ProjectedGradient(constraint, **TIGHT), jnp.zeros(5), point)
        np.testing.assert_allclose(sol.value, expected, atol=1e-10)
        np.testing.assert_allclose(constraint.project(point), expected, atol=1e-12)


def test_projected_gradient_simplex_jacobian():
    # d proj/dv = diag(s) - s s^T / |S| on the support S (s its indicator).
    point = jnp.array([0.8, 0.5, -0.2, 0.3, 0.1])
    solver = nl.ProjectedGradient(nl.Simplex(), **TIGHT)

    def project(c):
        return nl.minimize(lambda y, c: jnp.sum((y - c) ** 2), solver, jnp.zeros(5), c).value

    s = (_simplex_projection_reference(np.asarray(point)) > 0).astype(float)
    expected = np.diag(s) - np.outer(s, s) / s.sum()
    reverse, forward = jax.jit(lambda p: (jax.jacrev(project)(p), jax.jacfwd(project)(p)))(point)
    np.testing.assert_allclose(reverse, expected, atol=1e-8)
    np.testing.assert_allclose(forward, expected, atol=1e-8)


def test_frank_wolfe_known_optima():
    # min |y - c|^2 over the simplex: the projection of c. Open-loop steps converge like O(1/t).
    point = jnp.array([0.8, 0.5, -0.2, 0.3, 0.1])
    expected = _simplex_projection_reference(np.asarray(point))
    distance = lambda y, c: jnp.sum((y - c) ** 2)
    y0 = jnp.full(5, 0.2)
    open_loop = nl.FrankWolfe(nl.Simplex(), rtol=1e-4, atol=1e-4)
    sol = nl.minimize(distance, open_loop, y0, point, max_steps=5000)
    np.testing.assert_allclose(sol.value, expected, atol=5e-3)
    # Line-search steps converge linearly when the optimum is in the simplex's relative
    # interior (Guelat & Marcotte 1986); the gap bounds f - f* >= |y - y*|^2.
    interior = jnp.array([0.35, 0.3, 0.2, 0.15, 0.1])
    searched = nl.FrankWolfe(nl.Simplex(), step_size="line_search", rtol=1e-9, atol=1e-9)
    sol_ls = nl.minimize(distance, searched, y0, interior, max_steps=3000)
    np.testing.assert_allclose(sol_ls.value, np.asarray(interior) - 0.02, atol=5e-5)
    # Linear objective over the ball: the optimum is -r c/|c|, found in one step.
    ball = nl.FrankWolfe(nl.Ball(radius=2.0), rtol=1e-9, atol=1e-9)
    sol_ball = nl.minimize(lambda y, c: jnp.vdot(c, y), ball, jnp.zeros(5), point, max_steps=10)
    np.testing.assert_allclose(sol_ball.value, -2.0 * point / jnp.linalg.norm(point), atol=1e-12)
    box = nl.FrankWolfe(nl.Box(lower=-1.0, upper=2.0), rtol=1e-9, atol=1e-9)
    sol_box = nl.minimize(lambda y, c: jnp.vdot(c, y), box, jnp.zeros(5), point, max_steps=10)
    np.testing.assert_allclose(sol_box.value, np.where(point > 0, -1.0, 2.0), atol=1e-12)


@pytest.mark.parametrize("solver", [nl.LevenbergMarquardt(**TIGHT), nl.GaussNewton(**TIGHT)])
def test_rosenbrock_least_squares(solver):
    # The classic start; (4-D Rosenbrock has a second local minimum, so stay in 2-D here.)
    y0 = jnp.array([-1.2, 1.0])
    sol = nl.least_squares(rosenbrock_residuals, solver, y0, max_steps=200)
    np.testing.assert_allclose(sol.value, np.ones(2), atol=1e-10)
    assert sol.result == js.RESULTS.successful


def test_least_squares_by_minimiser_and_data_fit_gradient():
    # Exponential fit r_i = c0 exp(-c1 t_i) - d_i: LM, and BFGS on 0.5|r|^2, agree; dy*/d data
    # agrees with finite differences.
    t = jnp.linspace(0.0, 2.0, 12)
    data = 2.0 * jnp.exp(-1.3 * t) + 0.01 * jnp.sin(7 * t)
    residuals = lambda c, d: c[0] * jnp.exp(-c[1] * t) - d
    y0 = jnp.array([1.0, 1.0])
    lm = nl.least_squares(residuals, nl.LevenbergMarquardt(**TIGHT), y0, data).value
    # (A line search sees f only to rounding error, so |grad| cannot go far below
    # sqrt(eps f |H|) ~ 1e-10 here: a gradient tolerance of 1e-9.)
    bfgs = nl.least_squares(residuals, nl.BFGS(rtol=1e-9, atol=1e-9), y0, data).value
    np.testing.assert_allclose(lm, bfgs, atol=1e-8)
    weights = jnp.arange(1.0, 3.0)

    def objective(d):
        return jnp.vdot(
            weights, nl.least_squares(residuals, nl.LevenbergMarquardt(**TIGHT), y0, d).value
        )

    # eps = 1e-4: central differences are O(eps^2) accurate; the solve's own error (~1e-9 at
    # this nonzero-residual optimum) divided by eps bounds the disagreement.
    fd = finite_difference_grad(jax.jit(objective), data, eps=1e-4)
    np.testing.assert_allclose(jax.jit(jax.grad(objective))(data), fd, atol=2e-5)


def test_minimiser_finite_difference_gradients():
    # A non-quadratic objective with a vector of parameters: LBFGS (implicit) vs central FD.
    def objective(y, theta):
        return jnp.sum(jnp.cosh(y - theta)) + 0.5 * jnp.sum(y**2) * theta[0] ** 2

    weights = jnp.array([1.0, -2.0, 0.5])

    def outer(theta):
        return jnp.vdot(
            weights, nl.minimize(objective, nl.LBFGS(**TIGHT), jnp.zeros(3), theta).value
        )

    theta = jnp.array([0.7, -0.3, 0.2])
    np.testing.assert_allclose(
        jax.grad(outer)(theta), finite_difference_grad(jax.jit(outer), theta), atol=1e-7
    )


def test_constrained_finite_difference_gradients():
    # Projected gradient on the simplex with a non-quadratic objective.
    def objective(y, theta):
        return jnp.sum(jnp.exp(y) * theta) + jnp.sum(y**2)

    solver = nl.ProjectedGradient(nl.Simplex(), **TIGHT)
    weights = jnp.array([1.0, -2.0, 0.5, 3.0])

    def outer(theta):
        return jnp.vdot(weights, nl.minimize(objective, solver, jnp.full(4, 0.25), theta).value)

    theta = jnp.array([0.7, 1.3, 0.9, 1.1])
    np.testing.assert_allclose(
        jax.grad(outer)(theta), finite_difference_grad(jax.jit(outer), theta), atol=1e-7
    )


def test_no_retrace_on_new_hyperparameters():
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def solve(solver, lam):
        return nl.minimize(ridge_loss, solver, jnp.zeros(6), (lam, X, Y), max_steps=500).value

    for lr, rtol in [(0.68, 1e-10), (0.5, 1e-8), (0.6, 1e-9)]:
        solve(nl.GradientDescent(learning_rate=lr, rtol=rtol, atol=1e-10), LAM)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def solve_lbfgs(solver, lam):
        return nl.minimize(ridge_loss, solver, jnp.zeros(6), (lam, X, Y)).value

    for c1, rtol in [(1e-4, 1e-10), (1e-3, 1e-8)]:
        solve_lbfgs(nl.LBFGS(rtol=rtol, atol=1e-10, search=nl.StrongWolfe(c1=c1)), LAM)
