"""Failures found when jaxsolve.nonlinear was used as research code is written (issue 8): models
in `args`, stopping tests that read as success, traced hyperparameters and traced bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js

nl = js.nonlinear


def _mlp_args():
    mlp = eqx.nn.MLP(2, 2, 8, 1, activation=jax.nn.relu, key=jax.random.key(0))
    return mlp, jnp.array([0.5, -0.2])


def _residual(y, args):
    model, data = args
    return 0.3 * model(y) + y - data


# tests/research/test_nonlinear_models.py runs least_squares, minimize and root_find with a model
# in `args` by default; here fixed_point by default and the rest in the slow run.
@pytest.mark.parametrize(
    "entry",
    [
        "fixed_point",
        pytest.param("least_squares", marks=pytest.mark.slow),
        pytest.param("root_find", marks=pytest.mark.slow),
        pytest.param("minimize", marks=pytest.mark.slow),
    ],
)
def test_args_may_hold_a_model_with_functions(entry):
    # An equinox MLP (its activation is a function, not an array) inside `args`: every entry
    # point accepts it and solves the problem.
    args = _mlp_args()
    tight = dict(rtol=1e-11, atol=1e-11)
    if entry == "least_squares":
        sol = nl.least_squares(_residual, nl.LevenbergMarquardt(**tight), jnp.zeros(2), args)
    elif entry == "root_find":
        sol = nl.root_find(_residual, nl.Newton(**tight), jnp.zeros(2), args)
    elif entry == "fixed_point":
        fp = lambda y, a: y - _residual(y, a)
        sol = nl.fixed_point(fp, nl.FixedPointIteration(**tight), jnp.zeros(2), args)
    else:
        loss = lambda y, a: 0.5 * jnp.sum(_residual(y, a) ** 2)
        sol = nl.minimize(loss, nl.BFGS(**tight), jnp.zeros(2), args)
    np.testing.assert_allclose(_residual(sol.value, args), 0.0, atol=1e-9)


def test_bfgs_and_lbfgs_solve_an_objective_with_a_large_offset():
    # rtol * |f| was 1e4 here, so the old gradient test held at the first iterate.
    offset = lambda y, _: 1e10 + jnp.sum((y - 3.0) ** 2)
    for solver in (nl.BFGS(), nl.LBFGS(), nl.NonlinearCG()):
        sol = nl.minimize(offset, solver, jnp.ones(2), throw=False)
        assert sol.result == js.RESULTS.successful
        np.testing.assert_allclose(sol.value, 3.0, atol=1e-4)


def test_divergence_and_nonfinite_are_reported_by_every_family():
    unbounded = lambda y, _: -jnp.sum(y**2)
    codes = (js.RESULTS.divergence, js.RESULTS.nonfinite)
    # Gradient descent with a step too large for the curvature: f runs off to +inf.
    too_fast = nl.GradientDescent(learning_rate=1.5)
    sol = nl.minimize(lambda y, _: jnp.sum(y**2), too_fast, jnp.ones(2), throw=False)
    assert sol.result == js.RESULTS.divergence
    with pytest.raises(Exception, match="`divergence`"):
        nl.minimize(lambda y, _: jnp.sum(y**2), too_fast, jnp.ones(2))
    # Unbounded below: every minimiser reports it instead of "successful".
    for solver in (nl.GradientDescent(learning_rate=1.0), nl.BFGS(), nl.LBFGS()):
        sol = nl.minimize(unbounded, solver, jnp.ones(2), throw=False)
        assert sol.result in codes, type(solver).__name__
    sol = nl.minimize(unbounded, nl.OptaxMinimizer(optax.sgd(1.0)), jnp.ones(2), throw=False)
    assert sol.result in codes
    # Least squares by undamped Gauss-Newton on a residual whose step overshoots ever more.
    runaway = lambda y, _: jnp.cbrt(y)
    sol = nl.least_squares(runaway, nl.GaussNewton(), jnp.ones(1), throw=False)
    assert sol.result in codes
    # Newton on cbrt(y) = 0 steps y -> -2y: it diverges.
    sol = nl.root_find(lambda y, _: jnp.cbrt(y), nl.Newton(), jnp.ones(1), throw=False)
    assert sol.result in codes
    # A fixed-point map that produces NaN: nonfinite, not a "converged" NaN.
    sol = nl.fixed_point(lambda y, _: jnp.log(y - 2.0), nl.Anderson(), jnp.ones(1), throw=False)
    assert sol.result == js.RESULTS.nonfinite


def test_no_retrace_for_optax_hyperparameters():
    # The documented way to change an optax hyperparameter without recompiling.
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    quadratic = lambda y, _: jnp.sum((y - 2.0) ** 2)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def first_step(learning_rate):
        solver = nl.OptaxMinimizer(sgd, hyperparams={"learning_rate": learning_rate})
        return nl.minimize(quadratic, solver, jnp.zeros(1), max_steps=1, throw=False).value

    # One sgd step from 0 with gradient -4: y = 4 * learning_rate, so the value is used.
    np.testing.assert_allclose(first_step(jnp.array(0.1)), [0.4], rtol=1e-6)
    np.testing.assert_allclose(first_step(jnp.array(0.05)), [0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="does not inject"):
        nl.minimize(quadratic, nl.OptaxMinimizer(sgd, hyperparams={"momentum": 0.9}), jnp.zeros(1))


def test_no_retrace_for_sinkhorn_hyperparameters_passed_as_arrays():
    x = jax.random.normal(jax.random.key(0), (6, 2), jnp.float32)
    cost = jnp.sum((x[:, None] - x[None, ::-1]) ** 2, -1)
    a = jnp.full((6,), 1 / 6, jnp.float32)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def cost_of(epsilon, threshold):
        return nl.sinkhorn(cost, a, a, epsilon, threshold=threshold).reg_ot_cost

    # float64 arrays (x64 is on) for a float32 problem: used in the problem's dtype.
    first = cost_of(jnp.asarray(0.5), jnp.asarray(1e-4))
    second = cost_of(jnp.asarray(0.3), jnp.asarray(1e-5))
    assert first.dtype == jnp.float32 and float(first) != float(second)


def test_traced_bad_input_is_caught_under_jit():
    quadratic = lambda y, _: jnp.sum(y**2)

    @jax.jit
    def with_rtol(rtol):
        return nl.minimize(quadratic, nl.BFGS(rtol=rtol, atol=1e-8), jnp.ones(2)).value

    np.testing.assert_allclose(with_rtol(jnp.asarray(1e-8)), 0.0, atol=1e-6)
    with pytest.raises(Exception, match="BFGS.rtol` must be finite and >= 0"):
        with_rtol(jnp.asarray(-1.0))
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        nl.minimize(quadratic, nl.BFGS(atol=-1.0), jnp.ones(2))
    # A wrong-shaped output is an error under jit as well (shapes are static).
    with pytest.raises(ValueError, match="shape"):
        jax.jit(lambda y: nl.root_find(lambda y, _: y[:1], nl.Newton(), y).value)(jnp.ones(2))
    x = jnp.linspace(0.0, 1.0, 4)
    cost = (x[:, None] - x[None]) ** 2
    a = jnp.full((4,), 0.25)
    with pytest.raises(Exception, match="`epsilon` must be finite and > 0"):
        jax.jit(lambda eps: nl.sinkhorn(cost, a, a, eps).plan)(jnp.asarray(-0.1))


def _rosenbrock(y, args=None):
    return jnp.sum(100.0 * (y[1:] - y[:-1] ** 2) ** 2 + (1.0 - y[:-1]) ** 2)


@pytest.mark.parametrize("solver", [nl.LBFGS(rtol=1e-5, atol=1e-5), nl.BFGS(rtol=1e-5, atol=1e-5)])
def test_float32_tolerance_below_roundoff_stalls_promptly(solver):
    """float32 Rosenbrock (n = 20) with a gradient tolerance at the roundoff of the gradient: the
    iterates reach y = 1 to ~1e-6, then every line search returns a step too small to change y.
    That is reported as `stalled` at once, not after `max_steps` of 30-trial line searches
    (which is what happened: 5000 steps, 135 000 evaluations, for L-BFGS at n = 100)."""
    y0 = jnp.zeros(20, jnp.float32)
    sol = nl.minimize(_rosenbrock, solver, y0, max_steps=5000, throw=False)
    assert sol.result in (js.RESULTS.successful, js.RESULTS.stalled)
    assert int(sol.stats["num_steps"]) < 1000
    assert float(jnp.max(jnp.abs(sol.value - 1.0))) < 1e-4
    if sol.result == js.RESULTS.stalled:
        assert bool(jnp.all(sol.state.y_diff == 0))
    with pytest.raises(Exception, match="floating-point resolution"):
        # the 100-dimensional case from the report stalls (max|g| 3.6e-5 > tolerance 3e-5)
        nl.minimize(_rosenbrock, nl.LBFGS(rtol=1e-5, atol=1e-5), jnp.zeros(100, jnp.float32),
                    max_steps=5000)  # fmt: skip


def test_optax_minimiser_is_not_stalled_by_a_zero_first_learning_rate():
    """A warm-up schedule starting at 0 leaves y unchanged on the first step; the optax state
    (step count, momenta) still moves, so that is not a stall."""
    schedule = optax.linear_schedule(0.0, 0.1, 10)
    solver = nl.OptaxMinimizer(optax.adam(schedule), rtol=1e-4, atol=1e-4)
    sol = nl.minimize(lambda y, _: jnp.sum((y - 2.0) ** 2), solver, jnp.zeros(3), max_steps=5000)
    assert sol.result == js.RESULTS.successful
    np.testing.assert_allclose(sol.value, 2.0, atol=1e-3)
