"""Sinkhorn: values and gradients against ott-jax (when installed) and against properties that
hold exactly (grad of the regularised cost in C is the plan; implicit = unrolled gradients)."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import finite_difference_grad

nl = js.nonlinear
EPS = 0.1


def _problem(n=24, m=27):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k1, (n, 2))
    y = jax.random.normal(k2, (m, 2)) + 0.5
    cost = jnp.sum((x[:, None] - y[None]) ** 2, -1)
    a = jnp.full(n, 1.0 / n)
    b = jax.random.uniform(k3, (m,)) + 0.5
    return cost, a, b / jnp.sum(b)


COST, A, B = _problem()


def _centred(g):
    return np.asarray(g) - np.mean(np.asarray(g))


@jax.jit
def _solve_and_grads(cost, a, b):
    def reg_cost(cost, a, b):
        return nl.sinkhorn(cost, a, b, EPS, threshold=1e-11).reg_ot_cost

    sol = nl.sinkhorn(cost, a, b, EPS, threshold=1e-11)
    return sol, jax.grad(reg_cost, argnums=(0, 1, 2))(cost, a, b)


def test_sinkhorn_marginals_and_danskin():
    sol, (g_cost, _, _) = _solve_and_grads(COST, A, B)
    assert sol.result == js.RESULTS.successful
    np.testing.assert_allclose(sol.plan.sum(1), A, atol=1e-11)
    np.testing.assert_allclose(sol.plan.sum(0), B, atol=1e-11)
    # Envelope theorem: d reg_ot_cost / d C = P.
    np.testing.assert_allclose(g_cost, sol.plan, atol=1e-10)
    # Gradients in the marginals are the (centred) potentials.
    _, (_, g_a, g_b) = _solve_and_grads(COST, A, B)
    np.testing.assert_allclose(_centred(g_a), _centred(sol.f - EPS * (jnp.log(A) + 1)), atol=1e-8)
    np.testing.assert_allclose(_centred(g_b), _centred(sol.g - EPS * (jnp.log(B) + 1)), atol=1e-8)


@pytest.mark.slow
def test_sinkhorn_against_ott():
    pytest.importorskip("ott")
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn as ott_sinkhorn

    def ott_cost(cost, a, b):
        with jax.numpy_dtype_promotion("standard"):
            geom = geometry.Geometry(cost_matrix=cost, epsilon=EPS)
            solver = ott_sinkhorn.Sinkhorn(threshold=1e-11, max_iterations=5000)
            out = solver(linear_problem.LinearProblem(geom, a, b))
            return out.reg_ot_cost, out.matrix

    sol, grads = _solve_and_grads(COST, A, B)
    value, plan = ott_cost(COST, A, B)
    np.testing.assert_allclose(sol.reg_ot_cost, value, rtol=1e-10)
    np.testing.assert_allclose(sol.plan, plan, atol=1e-10)
    with jax.numpy_dtype_promotion("standard"):
        ott_grads = jax.grad(lambda *x: ott_cost(*x)[0], argnums=(0, 1, 2))(COST, A, B)
    np.testing.assert_allclose(grads[0], ott_grads[0], atol=1e-9)
    # Marginal gradients are defined up to a constant (the simplex's normal direction).
    np.testing.assert_allclose(_centred(grads[1]), _centred(ott_grads[1]), atol=1e-8)
    np.testing.assert_allclose(_centred(grads[2]), _centred(ott_grads[2]), atol=1e-8)


@pytest.mark.slow
def test_sinkhorn_implicit_matches_unrolled():
    weights = jnp.asarray(np.random.default_rng(0).normal(size=COST.shape))

    def objective(cost, adjoint=None):
        sol = nl.sinkhorn(cost, A, B, EPS, threshold=1e-12, adjoint=adjoint)
        return jnp.sum(weights * sol.plan)

    unrolled = lambda c: objective(c, nl.RecursiveCheckpointAdjoint())
    g_implicit, g_unrolled = jax.jit(lambda c: (jax.grad(objective)(c), jax.grad(unrolled)(c)))(
        COST
    )
    np.testing.assert_allclose(g_implicit, g_unrolled, atol=1e-9)


def test_sinkhorn_forward_mode_finite_differences():
    weights = jnp.asarray(np.random.default_rng(0).normal(size=COST.shape))

    def objective(cost, adjoint=None):
        sol = nl.sinkhorn(cost, A, B, EPS, threshold=1e-12, adjoint=adjoint)
        return jnp.sum(weights * sol.plan)

    # Forward mode along one direction agrees with a central difference.
    direction = jnp.asarray(np.random.default_rng(1).normal(size=COST.shape))
    _, tangent = jax.jit(lambda c, d: jax.jvp(objective, (c,), (d,)))(COST, direction)
    line = jax.jit(lambda s: objective(COST + s[0] * direction))
    fd = finite_difference_grad(line, jnp.zeros(1), eps=1e-5)[0]
    np.testing.assert_allclose(tangent, fd, rtol=1e-6)


def test_sinkhorn_float32_and_errors():
    sol = nl.sinkhorn(COST.astype(jnp.float32), A.astype(jnp.float32), B.astype(jnp.float32), 0.1)
    assert sol.plan.dtype == jnp.float32
    np.testing.assert_allclose(sol.plan.sum(1), A, atol=2e-3)
    with pytest.raises(ValueError, match="`a` must have shape"):
        nl.sinkhorn(COST, A[:-1], B, EPS)
    with pytest.raises(ValueError, match="`cost` must be a 2-D"):
        nl.sinkhorn(COST[0], A, B, EPS)
    with pytest.raises(ValueError, match="`epsilon`"):
        nl.sinkhorn(COST, A, B, -1.0)
    with pytest.raises(
        Exception, match="jaxsolve.nonlinear.sinkhorn failed with result `max_steps_reached`"
    ):
        nl.sinkhorn(COST, A, B, 1e-3, max_steps=10)


def test_sinkhorn_solver_in_a_users_loop_matches_entry_point():
    """`Sinkhorn.init/step/terminate` in the user's own jitted `lax.while_loop` reproduce
    `sinkhorn` exactly (same sweeps, same stopping test), and a new epsilon does not retrace."""

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(solver, cost, a, b):
        state = jax.lax.while_loop(
            lambda s: ~solver.terminate(cost, a, b, s)[0],
            lambda s: solver.step(cost, a, b, s),
            solver.init(cost, a, b),
        )
        return solver.solution(cost, a, b, state)

    for epsilon in (EPS, 0.2):
        solver = nl.Sinkhorn(epsilon=epsilon, threshold=1e-9, check_every=5)
        ours = run(solver, COST, A, B)
        reference = nl.sinkhorn(COST, A, B, epsilon, threshold=1e-9, check_every=5)
        chex.assert_shape(ours.plan, COST.shape)
        chex.assert_trees_all_equal(ours.stats["num_steps"], reference.stats["num_steps"])
        # Equal up to rounding: the two are compiled separately.
        chex.assert_trees_all_close(
            (ours.plan, ours.f, ours.g, ours.reg_ot_cost, ours.stats["marginal_error"]),
            (
                reference.plan,
                reference.f,
                reference.g,
                reference.reg_ot_cost,
                reference.stats["marginal_error"],
            ),
            rtol=1e-10,
            atol=1e-14,
        )
        assert ours.result == js.RESULTS.successful
    done, result = solver.terminate(COST, A, B, solver.init(COST, A, B))
    assert not done and result == js.RESULTS.successful


def test_sinkhorn_solver_validates_hyperparameters():
    with pytest.raises(ValueError, match="`epsilon`"):
        nl.Sinkhorn(epsilon=0.0)
    with pytest.raises(ValueError, match="`check_every`"):
        nl.Sinkhorn(epsilon=0.1, check_every=0)
