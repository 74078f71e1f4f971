"""HOStS on the CIR SDE and the state-dependent step-size controller: strong order on the
virtual Brownian tree, positivity, the step rule, jit/vmap/grad, no recompilation, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.diffeq._grid_path import GridBrownianPath
from tests.helpers import fitted_slope

d = js.diffeq

NUM_PATHS = 48
KEYS = jax.random.split(jax.random.key(3), NUM_PATHS)
TREE_TOL = 2.0**-11


def _term(key, a=1.0, b=1.0, sigma=1.0, shape=(), t1=1.0, tol=TREE_TOL):
    bm = js.brownian.VirtualBrownianTree(0.0, t1, tol, shape, key, levy_area="space-time")
    return d.CIRTerm(a, b, sigma, bm)


class _Rule(eqx.Module):
    ctol: jax.Array

    def __call__(self, t, y):
        return (self.ctol * jnp.maximum(y, 0)) ** (2 / 3)


def _one_step_reference(y0, a, b, sigma, h, w, hh):
    """eq. (5.3) of Foster, dos Reis & Strange written out in NumPy (float64)."""
    tb = b - sigma**2 / (4 * a)
    c1, c2 = np.exp(a * h * (np.sqrt(3) - 3) / 6), np.exp(-a * h / np.sqrt(3))
    z1 = c1 * y0 + (1 - c1) * tb
    z2 = (np.sqrt(z1) + sigma / 2 * (w / 2 + np.sqrt(3) * hh)) ** 2
    z3 = c2 * z2 + (1 - c2) * tb
    z4 = (np.sqrt(z3) + sigma / 2 * (w / 2 - np.sqrt(3) * hh)) ** 2
    return c1 * z4 + (1 - c1) * tb


def test_one_step_matches_the_formula_and_the_drift_and_noise_flows():
    term = _term(KEYS[0], a=2.0, b=0.7, sigma=0.9)
    inc = term.brownian.increment(0.0, 0.25)
    out = d.HOStS().step(term, 0.0, 0.25, jnp.asarray(0.4), None, inc, None)
    expected = _one_step_reference(0.4, 2.0, 0.7, 0.9, 0.25, float(inc.W), float(inc.H))
    np.testing.assert_allclose(out.y1, expected, rtol=1e-12)
    # sigma -> 0: the exact solution of the linear ODE y' = a (b - y)
    quiet = d.CIRTerm(2.0, 0.7, 1e-9, term.brownian)
    ode = d.HOStS().step(quiet, 0.0, 0.25, jnp.asarray(0.4), None, inc, None).y1
    np.testing.assert_allclose(ode, 0.7 + (0.4 - 0.7) * np.exp(-0.5), rtol=1e-8)
    # several independent CIR entries in one array: entrywise the scalar step
    vec = _term(KEYS[1], shape=(3,))
    inc3 = vec.brownian.increment(0.0, 0.25)
    y3 = jnp.array([0.2, 1.0, 3.0])
    out3 = d.HOStS().step(vec, 0.0, 0.25, y3, None, inc3, None).y1
    for i in range(3):
        w, hh = float(inc3.W[i]), float(inc3.H[i])
        expected = _one_step_reference(float(y3[i]), 1.0, 1.0, 1.0, 0.25, w, hh)
        np.testing.assert_allclose(out3[i], expected, rtol=1e-12)


def test_strong_order_constant_steps_on_the_tree():
    """sigma = 1 (Feller holds, paths stay away from 0): order 1.5 against a fine reference on
    the same tree."""

    @jax.jit
    def run(keys, dt0):
        def one(key):
            sol = d.solve(
                _term(key), d.HOStS(), 0.0, 1.0, jnp.asarray(1.0), dt0=dt0, max_steps=4096,
                adjoint=d.ForwardMode(),
            )  # fmt: skip
            return sol.ys[-1]

        return jax.vmap(one)(keys)

    reference = run(KEYS, TREE_TOL)
    steps = [4, 8, 16, 32]
    errors = [float(jnp.sqrt(jnp.mean((run(KEYS, 1.0 / n) - reference) ** 2))) for n in steps]
    slope = fitted_slope(1.0 / np.array(steps), errors)
    assert abs(slope - 1.5) < 0.15, (errors, slope)


def test_positive_with_large_steps_where_euler_goes_negative():
    """b > sigma²/(4a) but 2ab < sigma² (Feller fails): HOStS stays > 0 even with dt = 0.5;
    Euler–Maruyama on the same paths does not."""

    @jax.jit
    def lowest(key):
        path = GridBrownianPath(0.0, 4.0, 8, (), key)
        term = d.CIRTerm(1.0, 1.0, 1.8, path)
        sde = d.SDETerm(
            lambda t, y, args: 1.0 - y, lambda t, y, args: 1.8 * jnp.sqrt(jnp.maximum(y, 0)), path
        )
        steps = d.SaveAt(steps=True)
        y0 = jnp.asarray(1.0)
        hosts = d.solve(term, d.HOStS(), 0.0, 4.0, y0, dt0=0.5, saveat=steps).ys
        euler = d.solve(sde, d.EulerMaruyama(), 0.0, 4.0, y0, dt0=0.5, saveat=steps).ys
        return jnp.min(hosts), jnp.min(euler)

    hosts, euler = jax.vmap(lowest)(jax.random.split(jax.random.key(7), 32))
    assert bool(jnp.all(hosts > 0))
    assert bool(jnp.any(euler < 0))


def test_state_dependent_steps_follow_the_rule_and_beat_constant_steps():
    """Accepted steps are within factor x the rule at both ends; the adaptive solve is more
    accurate than constant steps with as many steps (a = b = 1, sigma = 1.5, T = 4)."""
    keys = KEYS[:16]
    t1 = 4.0
    max_steps = 3000

    @jax.jit
    def adaptive(keys, ctol):
        rule = _Rule(ctol)
        controller = d.StateDependentStep(rule, dtmin=2.0**-12, dtmax=1.0)

        def one(key):
            sol = d.solve(
                _term(key, sigma=1.5, t1=t1, tol=2.0**-13), d.HOStS(), 0.0, t1, jnp.asarray(1.0), dt0=0.1,
                controller=controller, max_steps=max_steps, adjoint=d.ForwardMode(),
                saveat=d.SaveAt(t0=True, steps=True),
            )  # fmt: skip
            return sol.ts, sol.ys, sol.stats["num_accepted_steps"]

        return jax.vmap(one)(keys)

    @jax.jit
    def constant(keys, dt0):
        def one(key):
            sol = d.solve(
                _term(key, sigma=1.5, t1=t1, tol=2.0**-13), d.HOStS(), 0.0, t1, jnp.asarray(1.0), dt0=dt0,
                max_steps=max_steps, adjoint=d.ForwardMode(),
            )  # fmt: skip
            return sol.ys[-1]

        return jax.vmap(one)(keys)

    ts, ys, accepted = adaptive(keys, 2.0**-7)
    reference = ys[jnp.arange(len(keys)), accepted]
    ts, ys, accepted = adaptive(keys, 2.0**-3)
    for i in range(len(keys)):
        n = int(accepted[i]) + 1
        t, y = np.asarray(ts[i, :n]), np.asarray(ys[i, :n])
        dt = np.diff(t)
        target = np.clip((2.0**-3 * np.minimum(y[:-1], y[1:])) ** (2 / 3), 2.0**-12, 1.0)
        assert np.all(dt <= 1.1 * target * (1 + 1e-3))
        assert np.all(y > 0)
    final = ys[jnp.arange(len(keys)), accepted]
    error_adaptive = float(jnp.sqrt(jnp.mean((final - reference) ** 2)))
    mean_steps = float(jnp.mean(accepted))
    error_constant = float(jnp.sqrt(jnp.mean((constant(keys, t1 / mean_steps) - reference) ** 2)))
    assert error_adaptive < 0.7 * error_constant, (error_adaptive, error_constant, mean_steps)


def test_controller_jit_vmap_grad_and_no_recompile():
    """A new ctol (an array field of the rule) and new a, b, sigma do not recompile. The
    gradient through the state-dependent solve is that of the solution on the step sequence
    taken (steps held constant, as with the PID controller)."""

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def final(term, controller):
        sol = d.solve(
            term, d.HOStS(), 0.0, 1.0, jnp.asarray(0.8), dt0=0.05, controller=controller,
            max_steps=2000,
        )  # fmt: skip
        return sol.ys[-1], sol.stats["num_steps"]

    bm = _term(KEYS[1]).brownian
    controller = d.StateDependentStep(_Rule(jnp.asarray(0.1)), dtmin=1e-4, dtmax=0.5)
    y_a, n_a = final(d.CIRTerm(1.0, 1.0, 1.0, bm), controller)
    y_b, n_b = final(
        d.CIRTerm(1.5, 0.9, 0.8, bm),
        d.StateDependentStep(_Rule(jnp.asarray(0.02)), factor=1.2, dtmin=1e-4, dtmax=0.5),
    )
    assert int(n_b) > int(n_a)

    # Step sizes are rounded to 12 bits (solve's `_quantise`): for a tiny change of b the step
    # sequence stays the same, so central differences see the held-constant-steps derivative.
    def loss(b):
        return final(d.CIRTerm(1.0, b, 1.0, bm), controller)[0]

    eps = 1e-8
    fd = (loss(1.0 + eps) - loss(1.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(jax.grad(loss)(1.0), fd, rtol=1e-5)


def test_float32():
    """float32 in, float32 out, close to the same solve in float64; the controller keeps the
    dtype of time."""

    path64 = GridBrownianPath(0.0, 1.0, 2**10, (), KEYS[4])

    def solve(dtype):
        # the same Brownian path in both precisions
        path = jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, path64)
        y0 = jnp.asarray(1.0, dtype)
        return d.solve(d.CIRTerm(1.0, 1.0, 1.5, path), d.HOStS(), 0.0, 1.0, y0, dt0=2.0**-6).ys

    single, double = solve(jnp.float32), solve(jnp.float64)
    assert single.dtype == jnp.float32
    np.testing.assert_allclose(single, double, rtol=1e-4)
    controller = d.StateDependentStep(_Rule(jnp.asarray(0.1, jnp.float32)), dtmin=1e-3)
    t0, t1 = jnp.asarray(0.0, jnp.float32), jnp.asarray(0.05, jnp.float32)
    y0, y1 = jnp.asarray(1.0, jnp.float32), jnp.asarray(0.9, jnp.float32)
    accept, dt_next, _, underflow = controller.adapt(t0, t1, y0, y1, None, 2.0, None)
    assert dt_next.dtype == jnp.float32 and not bool(underflow)
    target = (0.1 * 0.9) ** (2 / 3)  # 0.2 > 0.05: accepted, next step from y1
    assert bool(accept) and np.isclose(float(dt_next), target, rtol=1e-6)
    accept, dt_next, _, _ = controller.adapt(t0, t0 + 0.5, y0, y1, None, 2.0, None)
    assert not bool(accept) and np.isclose(float(dt_next), target, rtol=1e-6)


def test_underflow_without_dtmin_and_errors():
    bm = _term(KEYS[5]).brownian
    term = d.CIRTerm(1.0, 1.0, 1.0, bm)
    # a rule that allows no step once t > 0.5: dt_underflow, reported (throw=False) or raised
    stop = d.StateDependentStep(lambda t, y: jnp.where(t > 0.5, 0.0, 0.1))
    sol = d.solve(term, d.HOStS(), 0.0, 1.0, jnp.asarray(1.0), dt0=0.1, controller=stop,
                  throw=False)  # fmt: skip
    assert sol.result == js.RESULTS.dt_underflow
    with pytest.raises(ValueError, match="scalar"):
        d.solve(
            d.CIRTerm(1.0, 1.0, 1.0, _term(KEYS[5], shape=(2,)).brownian), d.HOStS(), 0.0, 1.0,
            jnp.ones(2), dt0=0.1, controller=d.StateDependentStep(lambda t, y: 0.1 * y),
        )  # fmt: skip
    with pytest.raises(TypeError, match="callable"):
        d.StateDependentStep(0.1)
    with pytest.raises(ValueError, match="factor"):
        d.StateDependentStep(lambda t, y: 0.1, factor=0.0)
    with pytest.raises(ValueError, match="dtmin"):
        d.StateDependentStep(lambda t, y: 0.1, dtmin=1.0, dtmax=0.5)
    with pytest.raises(ValueError, match="sigma"):
        d.CIRTerm(1.0, 1.0, -1.0, bm)
    with pytest.raises(ValueError, match="shape"):
        d.solve(term, d.HOStS(), 0.0, 1.0, jnp.ones(2), dt0=0.1)
    with pytest.raises(ValueError, match="space-time"):
        plain = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (), KEYS[5])
        d.solve(d.CIRTerm(1.0, 1.0, 1.0, plain), d.HOStS(), 0.0, 1.0, jnp.asarray(1.0), dt0=0.1)
    with pytest.raises(ValueError, match="integrates CIRTerm"):
        sde = d.SDETerm(lambda t, y, a: -y, lambda t, y, a: y, bm)
        d.solve(sde, d.HOStS(), 0.0, 1.0, jnp.asarray(1.0), dt0=0.1)
