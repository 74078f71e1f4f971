"""Underdamped Langevin solvers: strong order on one tree, stationary law, adaptive solve."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import fitted_slope

T = 1.0
TREE_TOL = 2.0**-9


def _grad_f(x, args):
    # f(x) = x⁴/4 + x²/2: a nonlinear force, so that the order of the quadrature shows.
    return x**3 + x


def _bm(key, levy="space-time-time"):
    return js.brownian.VirtualBrownianTree(0.0, T, TREE_TOL, (2,), key, levy_area=levy)


@functools.cache
def _runner(solver):
    """One compiled function per solver: `n` steps of size T/n by the solver's own
    init/step in a while loop (the user-loop use of the solver API), on paths of `keys`."""

    @jax.jit
    def run(keys, num_steps):
        def one(key):
            term = js.diffeq.UnderdampedLangevinTerm(2.0, 1.0, _grad_f, _bm(key))
            y0 = (jnp.array([1.0, -0.5]), jnp.array([0.0, 0.3]))
            dt = T / num_steps.astype(jnp.float64)
            state = solver.init(term, 0.0, dt, y0, None)

            def body(i, carry):
                y, state = carry
                t0 = i.astype(jnp.float64) * dt
                t1 = jnp.where(i + 1 == num_steps, T, t0 + dt)
                inc = term.brownian.increment(t0, t1)
                out = solver.step(term, t0, t1, y, None, inc, state)
                return out.y1, out.state

            y, _ = jax.lax.fori_loop(0, num_steps, body, (y0, state))
            return jnp.concatenate(y)

        return jax.vmap(one)(keys)

    return run


@pytest.mark.parametrize(
    "solver, order",
    [(js.diffeq.ALIGN(), 2.0), (js.diffeq.ShOULD(), 3.0), (js.diffeq.QUICSORT(), 3.0)],
)
def test_strong_order(solver, order):
    keys = jr.split(jr.key(0), 16)
    run = _runner(solver)
    ref = run(keys, jnp.asarray(2**9))
    steps = [4, 8, 16, 32]
    errors = [
        float(jnp.mean(jnp.linalg.norm(run(keys, jnp.asarray(n)) - ref, axis=-1))) for n in steps
    ]
    slope = -fitted_slope(steps, errors)
    assert abs(slope - order) < 0.2, (errors, slope)


def test_solve_matches_own_loop_and_adaptive_meets_tolerance():
    key = jr.key(3)
    solver = js.diffeq.QUICSORT()
    term = js.diffeq.UnderdampedLangevinTerm(2.0, 1.0, _grad_f, _bm(key))
    y0 = (jnp.array([1.0, -0.5]), jnp.array([0.0, 0.3]))
    fixed = js.diffeq.solve(term, solver, 0.0, T, y0, dt0=T / 8)
    mine = _runner(solver)(key[None], jnp.asarray(8))[0]
    np.testing.assert_allclose(
        jnp.concatenate([fixed.ys[0][-1], fixed.ys[1][-1]]), mine, rtol=1e-10
    )
    ref = _runner(solver)(key[None], jnp.asarray(2**9))[0]
    adaptive = js.diffeq.solve(
        term, solver, 0.0, T, y0, dt0=T / 8,
        controller=js.diffeq.PIDController(rtol=1e-4, atol=1e-4),
    )  # fmt: skip
    err = jnp.abs(jnp.concatenate([adaptive.ys[0][-1], adaptive.ys[1][-1]]) - ref).max()
    assert err < 1e-3
    assert int(adaptive.stats["num_steps"]) > 8


def test_gaussian_target_mean_and_variance():
    # f(x) = (x - m)² / (2 s²): in the stationary law x ~ N(m, s²) and v ~ N(0, u). Many
    # independent chains (one key each) run long enough to mix; tolerances from their number.
    m, s2, u = jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0]), 1.0
    horizon, dt, num = 20.0, 0.5, 1000

    def chain(key):
        bm = js.brownian.VirtualBrownianTree(
            0.0, horizon, dt, (2,), key, levy_area="space-time-time"
        )
        term = js.diffeq.UnderdampedLangevinTerm(1.0, u, lambda x, a: (x - m) / s2, bm)
        sol = js.diffeq.solve(
            term, js.diffeq.QUICSORT(), 0.0, horizon, (jnp.zeros(2), jnp.zeros(2)), dt0=dt
        )
        return sol.ys[0][-1], sol.ys[1][-1]

    x, v = (np.asarray(a) for a in jax.jit(jax.vmap(chain))(jr.split(jr.key(11), num)))
    s2 = np.asarray(s2)
    assert np.all(np.abs(x.mean(0) - np.asarray(m)) < 5 * np.sqrt(s2 / num))
    assert np.all(np.abs(x.var(0) / s2 - 1) < 5 * np.sqrt(2 / num))
    assert np.all(np.abs(v.var(0) / u - 1) < 5 * np.sqrt(2 / num))


@pytest.mark.float32
def test_errors():
    bm = _bm(jr.key(0), levy="space-time")
    term = js.diffeq.UnderdampedLangevinTerm(1.0, 1.0, _grad_f, bm)
    y0 = (jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match="space-time-time"):
        js.diffeq.solve(term, js.diffeq.QUICSORT(), 0.0, T, y0, dt0=0.1)
    with pytest.raises(ValueError, match="pair"):
        js.diffeq.solve(term, js.diffeq.ALIGN(), 0.0, T, jnp.zeros(2), dt0=0.1)
    with pytest.raises(ValueError, match="positive"):
        js.diffeq.UnderdampedLangevinTerm(-1.0, 1.0, _grad_f, bm)
    with pytest.raises(ValueError, match="Brownian"):
        js.diffeq.solve(term, js.diffeq.ALIGN(), 0.0, T, (jnp.zeros(3), jnp.zeros(3)), dt0=0.1)
