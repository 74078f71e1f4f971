"""Bad input raises clear errors before tracing; failures inside the solve become RESULTS codes
(raised with throw=True, returned with throw=False); progress meters."""

import jax
import jax.numpy as jnp
import pytest

import jaxsolve as js
from tests.diffeq._grid_path import GridBrownianPath

d = js.diffeq
DECAY = d.ODETerm(lambda t, y, args: -y)
Y0 = jnp.array([1.0, 2.0])


def _path(levy_area="space-time", shape=(2,), dtype=jnp.float64):
    return GridBrownianPath(0.0, 1.0, 64, shape, jax.random.key(0), levy_area, dtype)


@pytest.mark.float32
def test_eager_input_errors():
    with pytest.raises(ValueError, match="`dt0` must have the sign of t1 - t0"):
        d.solve(DECAY, d.Euler(), 1.0, 0.0, Y0, dt0=0.1)
    with pytest.raises(ValueError, match="`t0` and `t1` must be finite"):
        d.solve(DECAY, d.Euler(), 0.0, jnp.inf, Y0, dt0=0.1)
    with pytest.raises(ValueError, match=r"`y0` must have the shape of the vector field's output"):
        d.solve(d.ODETerm(lambda t, y, a: jnp.zeros(3)), d.Euler(), 0.0, 1.0, Y0, dt0=0.1)
    with pytest.raises(ValueError, match="`dt0` is required"):
        d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0)
    with pytest.raises(ValueError, match="no embedded error estimate"):
        d.solve(DECAY, d.RK4(), 0.0, 1.0, Y0, controller=d.PIDController(rtol=1e-3, atol=1e-3))
    with pytest.raises(ValueError, match="`max_steps`=5 is less than the 10 constant steps"):
        d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0, dt0=0.1, max_steps=5)
    with pytest.raises(ValueError, match=r"`SaveAt.ts` must lie in \[t0, t1\]"):
        d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0, dt0=0.1, saveat=d.SaveAt(ts=jnp.array([0.5, 2.0])))
    with pytest.raises(ValueError, match="`SaveAt.ts` must be monotone"):
        d.SaveAt(ts=jnp.array([0.5, 0.2, 0.7]))
    with pytest.raises(ValueError, match="`SaveAt.ts` must be non-decreasing in the direction"):
        d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0, dt0=0.1, saveat=d.SaveAt(ts=jnp.array([0.5, 0.2])))
    with pytest.raises(ValueError, match="saves nothing"):
        d.SaveAt()
    with pytest.raises(TypeError, match="complex"):
        d.solve(DECAY, d.Euler(), 0.0, 1.0, jnp.array([1.0 + 1.0j]), dt0=0.1)
    with pytest.raises(ValueError, match="`rtol` and `atol` cannot both be 0"):
        d.PIDController(rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="`dt0` must have the sign of t1 - t0"):
        d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0, dt0=-0.1)
    with pytest.raises(ValueError, match="`dt0` must be finite and nonzero"):
        d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0, dt0=0.0)
    with pytest.raises(TypeError, match="`controller` must be"):
        d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0, dt0=0.1, controller="pid")


def test_sde_input_errors():
    drift, diffusion = (lambda t, y, a: -y), (lambda t, y, a: 0.5 * jnp.ones(2))
    with pytest.raises(ValueError, match="`noise` must be one of"):
        d.SDETerm(drift, diffusion, _path(), noise="scalar")
    with pytest.raises(TypeError, match="`brownian` must be a Brownian motion"):
        d.SDETerm(drift, diffusion, object())
    additive = d.SDETerm(drift, diffusion, _path("none"), noise="additive")
    with pytest.raises(ValueError, match="needs the 'space-time' Lévy area.*provides 'none'"):
        d.solve(additive, d.ShARK(), 0.0, 1.0, Y0, dt0=0.1)
    diagonal = d.SDETerm(drift, lambda t, y, a: 0.5 * y, _path())
    with pytest.raises(ValueError, match=r"ShARK handles SDEs with noise in \('additive',\)"):
        d.solve(diagonal, d.ShARK(), 0.0, 1.0, Y0, dt0=0.1)
    with pytest.raises(ValueError, match="Euler integrates ODETerm, got SDETerm; for SDEs use"):
        d.solve(diagonal, d.Euler(), 0.0, 1.0, Y0, dt0=0.1)
    with pytest.raises(ValueError, match="EulerMaruyama integrates SDETerm, got ODETerm"):
        d.solve(DECAY, d.EulerMaruyama(), 0.0, 1.0, Y0, dt0=0.1)
    with pytest.raises(ValueError, match="Brownian motion must have the shape of `y0`"):
        d.solve(
            d.SDETerm(drift, lambda t, y, a: y, _path(shape=(3,))),
            d.EulerMaruyama(), 0.0, 1.0, Y0, dt0=0.1,
        )  # fmt: skip
    general = d.SDETerm(drift, lambda t, y, a: jnp.ones((2, 2)), _path(shape=(3,)), noise="general")
    with pytest.raises(ValueError, match=r"\(\*y.shape, \*w.shape\) = \[\(2, 3\)\]"):
        d.solve(general, d.EulerMaruyama(), 0.0, 1.0, Y0, dt0=0.1)
    with pytest.raises(TypeError, match="must match `y0`"):
        d.solve(
            d.SDETerm(drift, lambda t, y, a: y, _path(dtype=jnp.float32)),
            d.EulerMaruyama(), 0.0, 1.0, Y0, dt0=0.1,
        )  # fmt: skip
    with pytest.raises(ValueError, match="`dt0` is required for SDEs"):
        d.solve(
            d.SDETerm(drift, diffusion, _path(), noise="additive"), d.SRA1(), 0.0, 1.0, Y0,
            controller=d.PIDController(rtol=1e-3, atol=1e-3),
        )  # fmt: skip


@pytest.mark.float32
def test_runtime_failures_as_result_codes():
    pid = d.PIDController(rtol=1e-10, atol=1e-10)
    sol = d.solve(DECAY, d.Tsit5(), 0.0, 10.0, Y0, controller=pid, max_steps=8, throw=False)
    assert sol.result == js.RESULTS.max_steps_reached
    assert int(sol.stats["num_steps"]) == 8
    with pytest.raises(Exception, match="failed with result `max_steps_reached`"):
        d.solve(DECAY, d.Tsit5(), 0.0, 10.0, Y0, controller=pid, max_steps=8)

    blow_up = d.ODETerm(lambda t, y, a: y**2)  # y = 1 / (1 - t): infinite at t = 1
    sol = d.solve(blow_up, d.Euler(), 0.0, 3.0, jnp.array([2.0]), dt0=0.1, throw=False)
    assert sol.result == js.RESULTS.nonfinite

    stiff = d.ODETerm(lambda t, y, a: -1e4 * (y - jnp.cos(t)))
    tight = d.PIDController(rtol=1e-8, atol=1e-8, dtmin=1e-2, force_dtmin=False)
    sol = d.solve(stiff, d.Heun(), 0.0, 1.0, jnp.array([0.0]), dt0=0.1, controller=tight,
                  throw=False)  # fmt: skip
    assert sol.result == js.RESULTS.dt_underflow
    forced = d.PIDController(rtol=1e-8, atol=1e-8, dtmin=1e-2)
    sol = d.solve(stiff, d.Heun(), 0.0, 0.05, jnp.array([0.0]), dt0=0.01, controller=forced,
                  throw=False)  # fmt: skip
    assert sol.result != js.RESULTS.dt_underflow

    ok = d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0, dt0=0.1, throw=False)
    assert ok.result == js.RESULTS.successful


def test_progress_meter(capfd):
    meter = js._core.TextProgressMeter(label="decay")
    sol = d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0, dt0=0.05, progress=meter)
    jax.block_until_ready(sol.ys)
    err = capfd.readouterr().err
    assert "decay: 100%" in err
    quiet = d.solve(DECAY, d.Euler(), 0.0, 1.0, Y0, dt0=0.05)
    assert jnp.allclose(quiet.ys, sol.ys)
