"""Dense output (`SaveAt(dense=True)`, `sol.evaluate`), `SaveAt(fn=...)` and `SaveAt(steps=k)`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxsolve as js

d = js.diffeq

_A = np.array([[-0.5, 2.0], [-2.0, -0.5]])
_Y0 = jnp.array([1.0, 0.5])
LINEAR = d.ODETerm(lambda t, y, args: args @ y)
PID = d.PIDController(rtol=1e-9, atol=1e-11)


def _exact(ts, scale=1.0):
    return np.stack([scipy.linalg.expm(scale * _A * t) @ np.asarray(_Y0) for t in np.ravel(ts)])


@pytest.mark.parametrize(
    "solver, kwargs, tol",
    [
        (d.Tsit5(), {"controller": PID, "max_steps": 128}, 1e-8),  # own continuous extension
        (d.Bosh3(), {"controller": PID, "max_steps": 2048}, 1e-6),  # cubic Hermite
        (d.RK4(), {"dt0": 1e-2}, 1e-7),  # fixed grid, lax.scan path
    ],
)
def test_evaluate_matches_exact_and_saveat_ts(solver, kwargs, tol):
    ts = jnp.linspace(0.0, 2.0, 13)
    saveat = d.SaveAt(ts=ts, dense=True)
    sol = d.solve(LINEAR, solver, 0.0, 2.0, _Y0, args=jnp.asarray(_A), saveat=saveat,
                  **kwargs)  # fmt: skip
    values = sol.evaluate(ts)
    assert values.shape == (13, 2)
    np.testing.assert_allclose(values, _exact(ts), atol=tol)
    # The same interpolant as SaveAt.ts.
    np.testing.assert_allclose(values, sol.ys, rtol=1e-12, atol=1e-13)
    # Any shape of t; scalars.
    grid = jnp.array([[0.1, 0.2], [1.3, 1.99]])
    assert sol.evaluate(grid).shape == (2, 2, 2)
    np.testing.assert_allclose(sol.evaluate(grid).reshape(4, 2), _exact(grid), atol=tol)
    np.testing.assert_allclose(sol.evaluate(2.0), _exact(2.0)[0], atol=tol)


def test_evaluate_backwards_in_time():
    sol = d.solve(LINEAR, d.Tsit5(), 2.0, 0.0, _Y0, args=jnp.asarray(_A), controller=PID,
                  saveat=d.SaveAt(dense=True))  # fmt: skip
    assert sol.ts.shape == (0,)  # dense only: nothing else saved
    ts = jnp.array([2.0, 1.5, 0.3, 0.0])
    expected = _exact(2.0 - ts, -1.0)  # y(t) = expm(A (t - 2)) y0
    np.testing.assert_allclose(sol.evaluate(ts), expected, atol=1e-8)


def test_evaluate_gradients_in_t_and_args():
    @jax.jit
    def evaluate(scale, t):
        sol = d.solve(LINEAR, d.Tsit5(), 0.0, 2.0, _Y0, args=scale * jnp.asarray(_A),
                      controller=PID, saveat=d.SaveAt(dense=True), max_steps=128)  # fmt: skip
        return sol.evaluate(t)[0]

    t = 0.77
    exact = _exact(t)[0]
    # d/dt y(t) = A y(t): the derivative of the interpolant, to its accuracy.
    np.testing.assert_allclose(jax.grad(evaluate, argnums=1)(1.0, t), (_A @ exact)[0], atol=1e-6)
    # d/dscale y(t) = t A expm(scale A t) y0 at scale = 1; reverse mode through the loop.
    grad = jax.jit(jax.grad(evaluate))(1.0, t)
    np.testing.assert_allclose(grad, t * (_A @ exact)[0], atol=1e-7)
    eps = 1e-6
    fd = (evaluate(1 + eps, t) - evaluate(1 - eps, t)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, atol=1e-6)


def test_evaluate_under_jit_and_vmap():
    ts = jnp.linspace(0.0, 2.0, 5)

    @jax.jit
    def curve(scale):
        sol = d.solve(LINEAR, d.Tsit5(), 0.0, 2.0, _Y0, args=scale * jnp.asarray(_A),
                      controller=PID, saveat=d.SaveAt(dense=True), max_steps=512)  # fmt: skip
        return sol.evaluate(ts)

    scales = jnp.array([0.5, 1.0, 2.0])
    batched = jax.vmap(curve)(scales)
    for i, scale in enumerate(scales):
        np.testing.assert_allclose(batched[i], curve(scale), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(batched[i], _exact(ts, float(scale)), atol=1e-7)


def test_evaluate_errors():
    sol = d.solve(LINEAR, d.Tsit5(), 0.0, 1.0, _Y0, args=jnp.asarray(_A), controller=PID)
    with pytest.raises(ValueError, match="dense=True"):
        sol.evaluate(0.5)
    sol = d.solve(LINEAR, d.Tsit5(), 0.0, 1.0, _Y0, args=jnp.asarray(_A), controller=PID,
                  saveat=d.SaveAt(dense=True))  # fmt: skip
    with pytest.raises(Exception, match="outside the interval"):
        sol.evaluate(jnp.array([0.5, 1.5]))


def test_saveat_fn_everywhere():
    def energy(t, y, args):
        return {"norm": jnp.sum(y**2), "t": t}

    ts = jnp.array([0.5, 1.0])
    kwargs = dict(args=jnp.asarray(_A), controller=PID)
    full = d.solve(LINEAR, d.Tsit5(), 0.0, 2.0, _Y0,
                   saveat=d.SaveAt(t0=True, ts=ts, steps=True, t1=True), **kwargs)  # fmt: skip
    summary = d.solve(LINEAR, d.Tsit5(), 0.0, 2.0, _Y0,
                      saveat=d.SaveAt(t0=True, ts=ts, steps=True, t1=True, fn=energy), **kwargs)  # fmt: skip
    expected = jax.vmap(energy, in_axes=(0, 0, None))(full.ts, full.ys, None)
    np.testing.assert_allclose(summary.ys["norm"], expected["norm"], rtol=1e-12)
    np.testing.assert_array_equal(summary.ys["t"], full.ts)
    assert summary.ys["norm"].shape == full.ts.shape  # a scalar per save, not the state
    # Fixed grid (lax.scan path), backwards in time, with args.
    for t0, t1, ts in ((1.0, 0.0, [0.5, 0.25]),):
        saves = dict(t0=True, ts=jnp.array(ts), steps=True, t1=True)
        kwargs = dict(args=jnp.asarray(_A), dt0=0.1 * np.sign(t1 - t0))
        sol = d.solve(LINEAR, d.RK4(), t0, t1, _Y0,
                      saveat=d.SaveAt(**saves, fn=lambda t, y, args: args @ y), **kwargs)  # fmt: skip
        plain = d.solve(LINEAR, d.RK4(), t0, t1, _Y0, saveat=d.SaveAt(**saves), **kwargs)
        np.testing.assert_allclose(sol.ys, plain.ys @ _A.T, rtol=1e-12)


@pytest.mark.parametrize("fixed", [False, True])
def test_saveat_every_kth_step(fixed):
    kwargs = {"dt0": 0.05} if fixed else {"controller": d.PIDController(rtol=1e-6, atol=1e-8)}
    solver = d.RK4() if fixed else d.Tsit5()

    def run(steps):
        return d.solve(LINEAR, solver, 0.0, 2.0, _Y0, args=jnp.asarray(_A), max_steps=64,
                       saveat=d.SaveAt(steps=steps), **kwargs)  # fmt: skip

    every, each = run(3), run(True)
    finite = np.isfinite(np.asarray(each.ts))
    num = int(finite.sum())
    np.testing.assert_array_equal(np.asarray(every.ts)[: num // 3], np.asarray(each.ts)[2:num:3])
    np.testing.assert_array_equal(np.asarray(every.ys)[: num // 3], np.asarray(each.ys)[2:num:3])
    if not fixed:
        assert every.ts.shape == (64 // 3,)
        assert np.all(np.isinf(np.asarray(every.ts)[num // 3 :]))
    else:
        assert every.ts.shape == (40 // 3,)


def test_saveat_bad_input():
    with pytest.raises(ValueError, match="steps"):
        d.SaveAt(steps=0)
    with pytest.raises(TypeError, match="steps"):
        d.SaveAt(steps=1.5)
    with pytest.raises(TypeError, match="fn"):
        d.SaveAt(t1=True, fn=3)
    with pytest.raises(TypeError, match="dense"):
        d.SaveAt(dense=1)
    assert d.SaveAt(dense=True).every == 0 and d.SaveAt(steps=True).every == 1


@pytest.mark.float32
def test_dense_float32():
    y0 = jnp.array([1.0, 0.5], jnp.float32)
    sol = d.solve(LINEAR, d.Tsit5(), 0.0, 1.0, y0, args=jnp.asarray(_A, jnp.float32),
                  controller=d.PIDController(rtol=1e-5, atol=1e-6), max_steps=64,
                  saveat=d.SaveAt(dense=True, t1=True, fn=lambda t, y, a: a @ y))  # fmt: skip
    values = sol.evaluate(jnp.linspace(0.0, 1.0, 4, dtype=jnp.float32))
    assert values.dtype == jnp.float32 and sol.ys.dtype == jnp.float32
    np.testing.assert_allclose(values, _exact(np.linspace(0, 1, 4)), atol=1e-4)
