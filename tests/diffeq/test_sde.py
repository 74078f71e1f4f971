"""SDE solvers: strong orders (fitted slopes) against exact solutions or a fine reference on the
same Brownian path; the fixed-step scan equals the step-by-step loop on the virtual tree;
adaptive ShARK with a PID controller on the tree; general noise."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.diffeq._grid_path import GridBrownianPath
from tests.helpers import fitted_slope

d = js.diffeq

NUM_PATHS = 128
KEYS = jax.random.split(jax.random.key(0), NUM_PATHS)
NUM_CELLS = 2**9
Y0 = jnp.array([1.0, 0.5])

# Geometric Brownian motion with diagonal noise: y = y0 exp((mu - c sigma^2/2) t + sigma W_t),
# c = 1 in the Itô sense, c = 0 in the Stratonovich sense.
MU = jnp.array([0.5, -0.2])
SIGMA = jnp.array([0.8, 0.5])


def _gbm_term(path):
    return d.SDETerm(lambda t, y, a: MU * y, lambda t, y, a: SIGMA * y, path)


# A nonlinear, non-autonomous drift with additive noise (no closed form: fine reference). The
# noise is large enough that the stochastic O(h^1.5) error dominates the deterministic O(h^2).
def _additive_term(path):
    return d.SDETerm(
        lambda t, y, a: -jnp.sin(y) + 0.3 * jnp.cos(2 * t),
        lambda t, y, a: jnp.array([1.5, 1.0]),
        path,
        noise="additive",
    )


def _rms(errors):
    return float(jnp.sqrt(jnp.mean(jnp.sum(errors**2, axis=-1))))


def _grid_path(key, levy_area="space-time"):
    return GridBrownianPath(0.0, 1.0, NUM_CELLS, (2,), key, levy_area)


def _errors_gbm(solver, ito, steps):
    @jax.jit
    def run(keys):
        def one(key):
            path = _grid_path(key)
            term = _gbm_term(path)
            w = path.evaluate(1.0)
            exact = Y0 * jnp.exp((MU - (0.5 * SIGMA**2 if ito else 0.0)) + SIGMA * w)
            return [d.solve(term, solver, 0.0, 1.0, Y0, dt0=1.0 / n).ys[-1] - exact for n in steps]

        return jax.vmap(one)(keys)

    return [_rms(e) for e in run(KEYS)]


@functools.cache
def _additive_reference():
    @jax.jit
    def run(keys):
        def one(key):
            term = _additive_term(_grid_path(key))
            return d.solve(term, d.ShARK(), 0.0, 1.0, Y0, dt0=1.0 / NUM_CELLS).ys[-1]

        return jax.vmap(one)(keys)

    return run(KEYS)


def _errors_additive(solver, steps):
    @jax.jit
    def run(keys):
        def one(key):
            term = _additive_term(_grid_path(key))
            return [d.solve(term, solver, 0.0, 1.0, Y0, dt0=1.0 / n).ys[-1] for n in steps]

        return jax.vmap(one)(keys)

    reference = _additive_reference()
    return [_rms(e - reference) for e in run(KEYS)]


GBM_CASES = [
    (d.EulerMaruyama(), True, 0.5),
    (d.Milstein(), True, 1.0),
    (d.Heun(), False, 1.0),
    (d.SPaRK(), False, 1.0),
]


@pytest.mark.parametrize(
    "solver,ito,order", GBM_CASES, ids=[type(c[0]).__name__ for c in GBM_CASES]
)
def test_strong_order_diagonal_noise(solver, ito, order):
    steps = [8, 16, 32, 64]
    errors = _errors_gbm(solver, ito, steps)
    slope = fitted_slope(1.0 / np.array(steps), errors)
    assert abs(slope - order) < 0.2, (errors, slope)
    assert solver.strong_order(_gbm_term(_grid_path(KEYS[0]))) == order


ADDITIVE_CASES = [
    (d.EulerMaruyama(), 1.0),
    (d.Heun(), 1.0),
    (d.SEA(), 1.0),
    (d.ShARK(), 1.5),
    (d.SRA1(), 1.5),
    (d.SPaRK(), 1.5),
]


@pytest.mark.parametrize(
    "solver,order", ADDITIVE_CASES, ids=[type(c[0]).__name__ for c in ADDITIVE_CASES]
)
def test_strong_order_additive_noise(solver, order):
    steps = [4, 8, 16, 32]
    errors = _errors_additive(solver, steps)
    slope = fitted_slope(1.0 / np.array(steps), errors)
    assert abs(slope - order) < 0.2, (errors, slope)
    assert solver.strong_order(_additive_term(_grid_path(KEYS[0]))) == order


def test_general_noise_matches_diagonal():
    """A diagonal diffusion written as a (2, 2) matrix with noise="general" gives the same
    numbers as noise="diagonal"."""
    path = _grid_path(KEYS[1])
    diagonal = _gbm_term(path)
    general = d.SDETerm(
        lambda t, y, a: MU * y, lambda t, y, a: jnp.diag(SIGMA * y), path, noise="general"
    )
    for solver in (d.EulerMaruyama(), d.Heun(), d.SPaRK()):
        a = d.solve(diagonal, solver, 0.0, 1.0, Y0, dt0=1 / 16).ys[-1]
        b = d.solve(general, solver, 0.0, 1.0, Y0, dt0=1 / 16).ys[-1]
        np.testing.assert_allclose(a, b, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# On the virtual Brownian tree
# ---------------------------------------------------------------------------------------------

TREE_PATHS = 24
TREE_KEYS = KEYS[:TREE_PATHS]
TREE_TOL = 2.0**-9


def _tree_term(key):
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, TREE_TOL, (2,), key, levy_area="space-time")
    return _additive_term(bm)


@jax.jit
def _tree_loop(keys, dt0):
    """Constant steps with a traced dt0: the while loop, one tree query per step."""

    def one(key):
        sol = d.solve(
            _tree_term(key), d.ShARK(), 0.0, 1.0, Y0, dt0=dt0, max_steps=600,
            adjoint=d.ForwardMode(),
        )  # fmt: skip
        return sol.ys[-1]

    return jax.vmap(one)(keys)


def test_tree_scan_equals_loop_and_strong_order():
    @jax.jit
    def scan(keys):
        return jax.vmap(
            lambda k: d.solve(_tree_term(k), d.ShARK(), 0.0, 1.0, Y0, dt0=1 / 8).ys[-1]
        )(keys)

    # Pre-drawn increments (bm.increments of the grid) and per-step queries agree.
    np.testing.assert_allclose(scan(TREE_KEYS), _tree_loop(TREE_KEYS, 1 / 8), rtol=1e-10)
    reference = _tree_loop(TREE_KEYS, TREE_TOL)
    steps = [4, 8, 16, 32]
    errors = [_rms(_tree_loop(TREE_KEYS, 1.0 / n) - reference) for n in steps]
    slope = fitted_slope(1.0 / np.array(steps), errors)
    assert abs(slope - 1.5) < 0.25, (errors, slope)

    # Adaptive ShARK + PID on the same trees: rejected steps re-query the same path, the error
    # against the fine reference shrinks with the tolerance, and the work grows.
    @jax.jit
    def adaptive(keys, tol):
        def one(key):
            sol = d.solve(
                _tree_term(key), d.ShARK(), 0.0, 1.0, Y0, dt0=1 / 8,
                controller=d.PIDController(rtol=tol, atol=tol),
                adjoint=d.ForwardMode(), max_steps=2000,
            )  # fmt: skip
            return sol.ys[-1], sol.stats["num_steps"], sol.stats["num_rejected_steps"]

        return jax.vmap(one)(keys)

    loose, steps_loose, rejected = adaptive(TREE_KEYS, 1e-2)
    tight, steps_tight, _ = adaptive(TREE_KEYS, 1e-3)
    again, _, _ = adaptive(TREE_KEYS, 1e-2)
    np.testing.assert_array_equal(loose, again)
    assert int(jnp.sum(rejected)) > 0
    assert _rms(tight - reference) < 0.3 * _rms(loose - reference)
    assert float(jnp.mean(steps_tight)) > float(jnp.mean(steps_loose))


class _GridOnlyPath(js.brownian.AbstractBrownianPath):
    """Answers `increments(grid)` correctly and single queries with NaN: a fixed-step solve that
    fell back to per-step queries returns NaN."""

    inner: GridBrownianPath
    t0: float = 0.0
    t1: float = 1.0
    shape: tuple = (2,)
    levy_area: str = "space-time"

    def increment(self, s, t):
        return jax.tree.map(lambda x: x * jnp.nan, self.inner.increment(s, t))

    def increments(self, ts):
        return self.inner.increments(ts)

    def evaluate(self, t):
        return self.inner.evaluate(t)


def test_fixed_steps_pre_draw_increments_under_jit():
    @jax.jit
    def run(key):
        path = _GridOnlyPath(_grid_path(key))
        return d.solve(_additive_term(path), d.ShARK(), 0.0, 1.0, Y0, dt0=1 / 16, throw=False)

    plain = d.solve(_additive_term(_grid_path(KEYS[2])), d.ShARK(), 0.0, 1.0, Y0, dt0=1 / 16)
    sol = run(KEYS[2])
    assert sol.result == js.RESULTS.successful
    np.testing.assert_allclose(sol.ys[-1], plain.ys[-1], rtol=1e-12)
