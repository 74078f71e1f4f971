"""Events: `solve(..., event=Event(cond_fn))` stops at the root of `cond_fn`, differentiably."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

d = js.diffeq
GRAVITY = 9.81
BALL = d.ODETerm(lambda t, y, g: jnp.stack([y[1], -g]))  # height, velocity
GROUND = d.Event(lambda t, y, args: y[0])
PID = d.PIDController(rtol=1e-10, atol=1e-12)


def _impact(height, saveat=None):
    saveat = d.SaveAt(t1=True) if saveat is None else saveat
    y0 = jnp.stack([height, jnp.zeros_like(height)])
    return d.solve(BALL, d.Tsit5(), 0.0, 10.0, y0, args=GRAVITY, event=GROUND, controller=PID,
                   saveat=saveat, max_steps=256)  # fmt: skip


def test_bouncing_ball_first_impact_and_its_derivative():
    height = 2.0
    impact = jax.jit(lambda h: _impact(h))
    sol = impact(jnp.asarray(height))
    assert sol.result == js.RESULTS.successful and bool(sol.event_mask)
    exact = np.sqrt(2 * height / GRAVITY)
    assert abs(float(sol.ts[-1]) - exact) < 1e-10
    np.testing.assert_allclose(sol.ys[-1], [0.0, -np.sqrt(2 * GRAVITY * height)], atol=1e-10)

    # d t*/dh, and the state at the event moving with the event time: d v(t*)/dh = -g dt*/dh.
    def time_and_velocity(h):
        sol = _impact(h)
        return jnp.stack([sol.ts[-1], sol.ys[-1, 1]])

    grads = jax.jit(jax.jacrev(time_and_velocity))
    grad, velocity_grad = grads(jnp.asarray(height))
    analytic = 1 / np.sqrt(2 * GRAVITY * height)  # d/dh sqrt(2h/g)
    assert abs(float(grad) - analytic) < 1e-9
    np.testing.assert_allclose(velocity_grad, -GRAVITY * analytic, rtol=1e-9)
    eps = 1e-5
    fd = (impact(height + eps).ts[-1] - impact(height - eps).ts[-1]) / (2 * eps)
    assert abs(float(grad) - float(fd)) < 1e-7

    # Forward mode agrees.
    def forward_time(h):
        return d.solve(BALL, d.Tsit5(), 0.0, 10.0, jnp.stack([h, 0.0]), args=GRAVITY,
                       event=GROUND, controller=PID, adjoint=d.ForwardMode(),
                       max_steps=256).ts[-1]  # fmt: skip

    _, tangent = jax.jvp(forward_time, (jnp.asarray(height),), (jnp.asarray(1.0),))
    assert abs(float(tangent) - analytic) < 1e-9


def test_event_saves_stop_at_the_event():
    ts = jnp.linspace(0.0, 1.0, 6)  # impact at 0.6386 for h = 2
    sol = _impact(jnp.asarray(2.0), d.SaveAt(t0=True, ts=ts, t1=True, steps=True, dense=True))
    event_time = float(sol.ts[-1])
    ys = np.asarray(sol.ys)
    before = np.asarray(ts) <= event_time
    np.testing.assert_allclose(ys[1:7][before, 0], 2.0 - GRAVITY * np.asarray(ts)[before] ** 2 / 2)
    assert np.all(np.isinf(ys[1:7][~before]))  # never reached
    steps = np.asarray(sol.ts[7:-1])
    assert np.nanmax(steps[np.isfinite(steps)]) == pytest.approx(event_time)
    np.testing.assert_allclose(sol.evaluate(event_time), sol.ys[-1], atol=1e-12)


def test_event_under_vmap_lanes_stop_at_different_times():
    heights = jnp.array([0.5, 2.0, 8.0])

    def time_of(h):
        return _impact(h).ts[-1]

    times = jax.jit(jax.vmap(time_of))(heights)
    np.testing.assert_allclose(times, np.sqrt(2 * np.asarray(heights) / GRAVITY), atol=1e-10)
    grads = jax.jit(jax.vmap(jax.grad(time_of)))(heights)
    np.testing.assert_allclose(grads, 1 / np.sqrt(2 * GRAVITY * np.asarray(heights)), atol=1e-9)


def test_event_that_never_fires():
    sol = d.solve(BALL, d.Tsit5(), 0.0, 1.0, jnp.array([100.0, 0.0]), args=GRAVITY,
                  event=GROUND, controller=PID, max_steps=256)  # fmt: skip
    assert not bool(sol.event_mask) and sol.result == js.RESULTS.successful
    assert float(sol.ts[-1]) == 1.0
    np.testing.assert_allclose(sol.ys[-1], [100.0 - GRAVITY / 2, -GRAVITY], rtol=1e-12)


def test_event_directions_and_backwards_time():
    rotation = d.ODETerm(lambda t, y, args: jnp.stack([y[1], -y[0]]))  # (sin t, cos t)
    y0 = jnp.array([np.sin(0.1), np.cos(0.1)])

    def stop(direction, t0=0.1, t1=10.0, start=y0):
        event = d.Event(lambda t, y, args: y[0], direction=direction)
        sol = d.solve(rotation, d.Dopri5(), t0, t1, start, event=event, controller=PID,
                      max_steps=512)  # fmt: skip
        return float(sol.ts[-1])

    assert stop("falling") == pytest.approx(np.pi, abs=1e-9)
    assert stop("both") == pytest.approx(np.pi, abs=1e-9)
    assert stop("rising") == pytest.approx(2 * np.pi, abs=1e-9)
    # Backwards from t = 1: sin reaches 0 at t = 0.
    start = jnp.array([np.sin(1.0), np.cos(1.0)])
    assert stop("both", 1.0, -5.0, start) == pytest.approx(0.0, abs=1e-9)


def test_event_with_constant_steps_and_float32():
    sol = d.solve(BALL, d.RK4(), 0.0, 10.0, jnp.array([2.0, 0.0]), args=GRAVITY, dt0=0.05,
                  event=GROUND)  # fmt: skip
    # RK4 is exact on a quadratic, and the cubic Hermite dense output too.
    assert abs(float(sol.ts[-1]) - np.sqrt(4 / GRAVITY)) < 1e-10
    y0 = jnp.array([2.0, 0.0], jnp.float32)
    sol32 = d.solve(BALL, d.Tsit5(), 0.0, 10.0, y0, args=jnp.float32(GRAVITY), event=GROUND,
                    controller=d.PIDController(rtol=1e-5, atol=1e-6), max_steps=64)  # fmt: skip
    assert sol32.ts.dtype == jnp.float32
    assert abs(float(sol32.ts[-1]) - np.sqrt(4 / GRAVITY)) < 1e-5


def test_event_bad_input():
    with pytest.raises(TypeError, match="cond_fn"):
        d.Event(3.0)
    with pytest.raises(ValueError, match="direction"):
        d.Event(lambda t, y, a: y[0], direction="up")
    with pytest.raises(ValueError, match="scalar"):
        d.solve(BALL, d.Tsit5(), 0.0, 1.0, jnp.array([1.0, 0.0]), args=GRAVITY,
                event=d.Event(lambda t, y, a: y), controller=PID)  # fmt: skip
    with pytest.raises(TypeError, match="Event"):
        d.solve(BALL, d.Tsit5(), 0.0, 1.0, jnp.array([1.0, 0.0]), args=GRAVITY,
                event=lambda t, y, a: y[0], controller=PID)  # fmt: skip
