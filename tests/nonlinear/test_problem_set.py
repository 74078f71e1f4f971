"""optimistix's standard problems (re-created in tests/helpers.py) through every minimiser and
least-squares solver that applies, in float64, against their known minima; and side by side
with optimistix on a few."""

import chex
import jax
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import nonlinear_problem_set

nl = js.nonlinear
TIGHT = dict(rtol=1e-10, atol=1e-10)
LEAST_SQUARES, MINIMISATION = nonlinear_problem_set()
MINIMISERS = {
    "nonlinear_cg": nl.NonlinearCG(**TIGHT),
    "bfgs": nl.BFGS(**TIGHT),
    "lbfgs": nl.LBFGS(**TIGHT),
}
LEAST_SQUARES_SOLVERS = {
    "gauss_newton": nl.GaussNewton(**TIGHT),
    "levenberg_marquardt": nl.LevenbergMarquardt(**TIGHT),
    "bfgs": nl.BFGS(**TIGHT),
}
# One pair per solver runs by default; the full grid is marked slow (each pair compiles).
_FAST = {
    ("beale", "bfgs"),
    ("himmelblau", "lbfgs"),
    ("square_minus_one", "nonlinear_cg"),
    ("rosenbrock_pytree", "levenberg_marquardt"),
}


def _grid(problems, solvers):
    return [
        pytest.param(p, name, id=f"{p.name}-{name}", marks=() if (p.name, name) in _FAST else pytest.mark.slow)
        for p in problems
        for name in solvers
    ]  # fmt: skip


def _check(problem, sol):
    assert sol.result == js.RESULTS.successful
    chex.assert_trees_all_equal_shapes_and_dtypes(sol.value, problem.y0)
    np.testing.assert_allclose(problem.objective(sol.value), problem.minimum, rtol=0, atol=1e-12)
    if problem.argmin is not None:
        chex.assert_trees_all_close(sol.value, problem.argmin, rtol=0, atol=1e-6)


@pytest.mark.parametrize("problem, name", _grid(MINIMISATION, MINIMISERS))
def test_minimisers_reach_known_minima(problem, name):
    solve = jax.jit(
        lambda y0: nl.minimize(problem.fn, MINIMISERS[name], y0, problem.args, max_steps=1000)
    )
    _check(problem, solve(problem.y0))


@pytest.mark.parametrize("problem, name", _grid(LEAST_SQUARES, LEAST_SQUARES_SOLVERS))
def test_least_squares_solvers_reach_known_minima(problem, name):
    solver = LEAST_SQUARES_SOLVERS[name]
    solve = jax.jit(
        lambda y0: nl.least_squares(problem.fn, solver, y0, problem.args, max_steps=1000)
    )
    _check(problem, solve(problem.y0))


@pytest.mark.slow
def test_same_minima_as_optimistix():
    optx = pytest.importorskip("optimistix")
    by_name = {p.name: p for p in LEAST_SQUARES + MINIMISATION}
    rosenbrock = by_name["rosenbrock_pytree"]
    ours = nl.least_squares(
        rosenbrock.fn, nl.LevenbergMarquardt(**TIGHT), rosenbrock.y0, rosenbrock.args
    )
    theirs = optx.least_squares(
        rosenbrock.fn, optx.LevenbergMarquardt(**TIGHT), rosenbrock.y0, rosenbrock.args
    )
    chex.assert_trees_all_close(ours.value, theirs.value, rtol=0, atol=1e-8)
    beale = by_name["beale"]
    ours = nl.minimize(beale.fn, nl.BFGS(**TIGHT), beale.y0, beale.args)
    theirs = optx.minimise(beale.fn, optx.BFGS(**TIGHT), beale.y0, beale.args, max_steps=1000)
    chex.assert_trees_all_close(ours.value, theirs.value, rtol=0, atol=1e-8)
