"""diffrax's standard ODE problems re-created (tests/helpers.py) and run through jaxsolve:
SaveAt combinations with known solutions, backward time, the order test, failures reported as
result codes (issue 8, bug 4) and dense-output accuracy (bug 5), side by side with diffrax
where it is installed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import (
    decay_saveat_problem,
    fitted_slope,
    harmonic_exact,
    harmonic_oscillator,
    linear_system_problem,
    reversed_vector_field,
)

d = js.diffeq
F64 = jnp.float64


# ---------------------------------------------------------------------------------------------
# SaveAt (diffrax's test_saveat_solution): y' = -0.5 y on [0.1, 1.1], Dopri5, rtol=atol=1e-8
# ---------------------------------------------------------------------------------------------


def _decay_solve(saveat, **kwargs):
    field, t0, t1, y0, _ = decay_saveat_problem(F64)
    controller = d.PIDController(rtol=1e-8, atol=1e-8)
    return d.solve(d.ODETerm(field), d.Dopri5(), t0, t1, y0, saveat=saveat,
                   controller=controller, **kwargs)  # fmt: skip


def test_saveat_combinations_match_the_closed_form():
    *_, y0, exact = decay_saveat_problem(F64)
    sol = _decay_solve(d.SaveAt(t0=True))
    assert sol.ts.shape == (1,) and sol.ys.shape == (1, 1)
    assert float(sol.ts[0]) == 0.1 and float(sol.ys[0, 0]) == 2.1

    sol = _decay_solve(d.SaveAt(t1=True))
    assert float(sol.ts[0]) == 1.1
    np.testing.assert_allclose(np.asarray(sol.ys), exact([1.1]), rtol=1e-7)

    sol = _decay_solve(d.SaveAt(ts=jnp.asarray([0.5, 0.8], F64)))
    np.testing.assert_allclose(np.asarray(sol.ts), [0.5, 0.8])
    np.testing.assert_allclose(np.asarray(sol.ys), exact([0.5, 0.8]), rtol=1e-7)

    # Every combination at once: order t0, ts, steps, t1; the steps buffer is inf-padded.
    max_steps = 64
    sol = _decay_solve(
        d.SaveAt(t0=True, t1=True, ts=jnp.asarray([0.1, 0.6, 1.1], F64), steps=True),
        max_steps=max_steps,
    )
    accepted = int(sol.stats["num_accepted_steps"])
    assert sol.ts.shape == (1 + 3 + max_steps + 1,)
    ts, ys = np.asarray(sol.ts), np.asarray(sol.ys)
    np.testing.assert_allclose(ts[:4], [0.1, 0.1, 0.6, 1.1])
    step_ts = ts[4 : 4 + max_steps]
    assert np.all(np.isfinite(step_ts[:accepted])) and np.all(np.isinf(step_ts[accepted:]))
    assert np.all(np.diff(step_ts[:accepted]) > 0) and step_ts[accepted - 1] == 1.1
    assert np.all(np.isinf(ys[4 + accepted : 4 + max_steps]))
    finite = np.isfinite(ts)
    np.testing.assert_allclose(ys[finite], exact(ts[finite]), rtol=1e-7)
    assert ys[0, 0] == 2.1 and ys[1, 0] == 2.1  # saved t0 and ts[0] = t0 exactly


def test_saveat_values_agree_with_diffrax():
    diffrax = pytest.importorskip("diffrax")
    field, t0, t1, y0, exact = decay_saveat_problem(F64)
    save_ts = jnp.asarray(np.linspace(0.1, 1.1, 7), F64)
    ours = _decay_solve(d.SaveAt(ts=save_ts))
    theirs = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Dopri5(), t0, t1, None, y0,
        saveat=diffrax.SaveAt(ts=save_ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
    )  # fmt: skip
    truth = exact(np.asarray(save_ts))
    err_ours = np.max(np.abs(np.asarray(ours.ys) - truth))
    err_theirs = np.max(np.abs(np.asarray(theirs.ys) - truth))
    np.testing.assert_allclose(np.asarray(ours.ys), np.asarray(theirs.ys), rtol=1e-7)
    assert err_ours <= 3 * err_theirs + 1e-12, (err_ours, err_theirs)


def test_saveat_outside_the_interval_raises_also_when_traced():
    # Concrete: at the call.
    with pytest.raises(ValueError, match="SaveAt"):
        _decay_solve(d.SaveAt(ts=jnp.asarray([0.0], F64)))

    # Traced under jit: a run-time error, not an extrapolated value.
    @jax.jit
    def run(save_ts):
        return _decay_solve(d.SaveAt(ts=save_ts)).ys

    *_, exact = decay_saveat_problem(F64)
    np.testing.assert_allclose(
        np.asarray(run(jnp.asarray([0.5, 0.8], F64))), exact([0.5, 0.8]), rtol=1e-7
    )
    for outside in ([0.5, 3.0], [0.0, 0.5]):
        with pytest.raises(Exception, match="(?i)saveat|ts"):
            jax.block_until_ready(run(jnp.asarray(outside, F64)))


# ---------------------------------------------------------------------------------------------
# Backward time (diffrax's test_reverse_time): y' = -y from 4 to 0.3 equals y' = +y from -4 to
# -0.3 at mirrored times; dt0 deliberately does not divide the interval.
# ---------------------------------------------------------------------------------------------

REVERSE_CASES = [
    ("Euler", d.Euler(), 0.3),
    ("Tsit5-constant", d.Tsit5(), 0.3),
    ("Tsit5-adaptive", d.Tsit5(), None),
]


@pytest.mark.parametrize("name,solver,step", REVERSE_CASES, ids=[c[0] for c in REVERSE_CASES])
def test_backward_time_equals_time_reversed_problem(name, solver, step):
    def field(t, y, args):
        return -y

    y0 = jnp.asarray(np.random.default_rng(0).standard_normal((2, 2)), F64)
    controller = None if step is not None else d.PIDController(rtol=1e-3, atol=1e-6)
    max_steps = 64
    backward = d.solve(
        d.ODETerm(field), solver, 4.0, 0.3, y0, dt0=None if step is None else -step,
        saveat=d.SaveAt(t0=True, ts=jnp.asarray([3.5, 0.7], F64), steps=True, t1=True),
        controller=controller, max_steps=max_steps,
    )  # fmt: skip
    mirrored = d.solve(
        d.ODETerm(reversed_vector_field(field)), solver, -4.0, -0.3, y0, dt0=step,
        saveat=d.SaveAt(t0=True, ts=jnp.asarray([-3.5, -0.7], F64), steps=True, t1=True),
        controller=controller, max_steps=max_steps,
    )  # fmt: skip
    finite = np.isfinite(np.asarray(mirrored.ts))
    np.testing.assert_array_equal(np.isfinite(np.asarray(backward.ts)), finite)
    np.testing.assert_allclose(
        np.asarray(backward.ts)[finite], -np.asarray(mirrored.ts)[finite], rtol=1e-12
    )
    np.testing.assert_allclose(np.asarray(backward.ys), np.asarray(mirrored.ys), rtol=1e-10)
    # And both are right: y(t) = y0 exp(4 - t).
    ts = np.asarray(backward.ts)[finite]
    ys = np.asarray(backward.ys)[finite]
    exact = np.asarray(y0)[None] * np.exp(4.0 - ts)[:, None, None]
    tol = {"Euler": 0.5, "Tsit5-constant": 1e-3, "Tsit5-adaptive": 1e-2}[name]
    np.testing.assert_allclose(ys, exact, rtol=tol)


def test_backward_time_under_jit_with_traced_t1():
    # y' = -y from t0 = 1 back to a traced t1 = 0: y(0) = e (as diffrax).
    @jax.jit
    def run(t1):
        return d.solve(d.ODETerm(lambda t, y, a: -y), d.Tsit5(), 1.0, t1, jnp.ones(1, F64),
                       controller=d.PIDController(rtol=1e-9, atol=1e-9)).ys[-1, 0]  # fmt: skip

    np.testing.assert_allclose(float(run(jnp.asarray(0.0, F64))), np.e, rtol=1e-7)
    np.testing.assert_allclose(float(run(jnp.asarray(2.0, F64))), np.exp(-1.0), rtol=1e-7)


def test_equal_times_return_y0():
    y0 = jnp.asarray([1.5, -2.0], F64)
    term = d.ODETerm(lambda t, y, a: -y)
    controller = d.PIDController(rtol=1e-6, atol=1e-8)
    sol = d.solve(term, d.Tsit5(), 0.5, 0.5, y0, saveat=d.SaveAt(t0=True, t1=True),
                  controller=controller)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(sol.ys), np.asarray([y0, y0]))
    assert sol.result == js.RESULTS.successful

    run = jax.jit(
        lambda t1: (
            d.solve(
                term,
                d.Tsit5(),
                0.5,
                t1,
                y0,
                controller=controller,
                saveat=d.SaveAt(ts=jnp.stack([t1]), t1=True),
            ).ys
        )  # fmt: skip
    )
    np.testing.assert_array_equal(np.asarray(run(jnp.asarray(0.5, F64))), np.asarray([y0, y0]))


# ---------------------------------------------------------------------------------------------
# Order (diffrax's test_ode_order): y' = A y, A = 0.5 N(0,1)^{10x10}, on [0, 4]
# ---------------------------------------------------------------------------------------------

ORDER_CASES = [(d.Euler(), 1), (d.Heun(), 2), (d.Bosh3(), 3), (d.RK4(), 4), (d.Tsit5(), 5)]


@pytest.mark.parametrize(
    "solver,order", ORDER_CASES, ids=[type(s).__name__ for s, _ in ORDER_CASES]
)
def test_linear_system_order(solver, order):
    field, t0, t1, y0, exact = linear_system_problem(dtype=F64)
    truth = exact([t1])[0]
    exponents = {1: [-6, -7, -8], 2: [-4, -5, -6], 3: [-3, -4, -5], 4: [-3, -4, -5]}
    exponents = exponents.get(order, [-2, -3, -4])
    errors = []
    for exponent in exponents:
        sol = d.solve(d.ODETerm(field), solver, t0, t1, y0, dt0=2.0**exponent, max_steps=2048)
        errors.append(float(np.sum(np.abs(np.asarray(sol.ys[-1]) - truth))))
    slope = fitted_slope([2.0**e for e in exponents], errors)
    assert abs(slope - order) < 0.3, (errors, slope)


# ---------------------------------------------------------------------------------------------
# Failures inside the computation (bug 4)
# ---------------------------------------------------------------------------------------------


def test_nonfinite_inside_adaptive_solve_is_reported_as_nonfinite():
    # y' = y blows up to NaN once y > 2 (at t = log 2): a NaN, not a step-size underflow.
    def field(t, y, args):
        return jnp.where(y > 2.0, jnp.nan, y)

    sol = d.solve(d.ODETerm(field), d.Tsit5(), 0.0, 2.0, jnp.ones(1, F64), dt0=0.1,
                  controller=d.PIDController(rtol=1e-6, atol=1e-8), throw=False)  # fmt: skip
    assert sol.result == js.RESULTS.nonfinite, sol.result
    with pytest.raises(Exception, match="nonfinite"):
        d.solve(d.ODETerm(field), d.Tsit5(), 0.0, 2.0, jnp.ones(1, F64), dt0=0.1,
                controller=d.PIDController(rtol=1e-6, atol=1e-8))  # fmt: skip


def test_max_steps_reached_is_a_result_code_with_throw_false():
    term = d.ODETerm(lambda t, y, a: -y)
    adaptive = d.solve(term, d.Tsit5(), 0.0, 2.0, jnp.ones(1, F64), dt0=0.1, max_steps=3,
                       controller=d.PIDController(rtol=1e-8, atol=1e-8), throw=False)  # fmt: skip
    assert adaptive.result == js.RESULTS.max_steps_reached
    # Constant steps on a concrete grid of 20 steps, too: a result code, not an exception.
    constant = d.solve(term, d.Tsit5(), 0.0, 2.0, jnp.ones(1, F64), dt0=0.1, max_steps=3,
                       throw=False)  # fmt: skip
    assert constant.result == js.RESULTS.max_steps_reached
    with pytest.raises(Exception, match="max_steps"):
        d.solve(term, d.Tsit5(), 0.0, 2.0, jnp.ones(1, F64), dt0=0.1, max_steps=3)


def test_wrong_vector_field_shape_raises_clearly():
    term = d.ODETerm(lambda t, y, a: jnp.ones(3, F64))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)|\(2,\).*\(3,\)"):
        d.solve(term, d.Tsit5(), 0.0, 1.0, jnp.ones(2, F64), dt0=0.1)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)|\(2,\).*\(3,\)"):
        jax.jit(lambda y: d.solve(term, d.Tsit5(), 0.0, 1.0, y, dt0=0.1).ys)(jnp.ones(2, F64))


# ---------------------------------------------------------------------------------------------
# Dense output (bug 5): Tsit5 and Dopri5 use their own continuous extensions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Tsit5", "Dopri5"])
def test_dense_output_is_as_accurate_as_the_steps(name):
    y0 = jnp.asarray([1.0, 0.5], F64)
    t1 = 10.0
    # Save between the steps: 97 points with no special relation to the step grid.
    save_ts = jnp.asarray(np.linspace(0.0, t1, 99)[1:-1] + 0.013, F64)
    controller = d.PIDController(rtol=1e-8, atol=1e-8)
    term = d.ODETerm(harmonic_oscillator)
    ours = d.solve(term, getattr(d, name)(), 0.0, t1, y0, dt0=0.1, controller=controller,
                   saveat=d.SaveAt(ts=save_ts))  # fmt: skip
    steps = d.solve(term, getattr(d, name)(), 0.0, t1, y0, dt0=0.1, controller=controller,
                    saveat=d.SaveAt(steps=True), max_steps=512)  # fmt: skip
    accepted = int(steps.stats["num_accepted_steps"])
    step_ts = np.asarray(steps.ts[:accepted])
    err_steps = np.max(np.abs(np.asarray(steps.ys[:accepted]) - harmonic_exact(step_ts, y0)))
    err_dense = np.max(np.abs(np.asarray(ours.ys) - harmonic_exact(save_ts, y0)))
    assert err_dense <= 3 * err_steps, (err_dense, err_steps, accepted)

    diffrax = pytest.importorskip("diffrax")
    theirs = diffrax.diffeqsolve(
        diffrax.ODETerm(harmonic_oscillator), getattr(diffrax, name)(), 0.0, t1, 0.1, y0,
        saveat=diffrax.SaveAt(ts=save_ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
    )  # fmt: skip
    err_theirs = np.max(np.abs(np.asarray(theirs.ys) - harmonic_exact(save_ts, y0)))
    assert err_dense <= 3 * max(err_theirs, err_steps), (err_dense, err_theirs, err_steps)
