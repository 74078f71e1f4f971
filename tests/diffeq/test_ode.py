"""ODE solvers: convergence orders, adaptive tolerance, dense output, gradients, jit/vmap,
retracing, user-written solvers, float32."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxsolve as js
from tests.helpers import fitted_slope

d = js.diffeq

# y' = A y with a rotation-plus-decay matrix: the exact solution is expm(A t) y0.
_A = jnp.array([[-0.5, 2.0], [-2.0, -0.5]])
_Y0 = jnp.array([1.0, 0.5])


def _linear(t, y, args):
    return args @ y


def _exact(t):
    return np.asarray(scipy.linalg.expm(np.asarray(_A) * float(t)) @ np.asarray(_Y0))


def _exact_many(ts):
    return np.stack([_exact(t) for t in np.asarray(ts)])


LINEAR = d.ODETerm(_linear)


# Order-test problems. y' = y^2 (y = 1/(2 - t)) and y' = -y^3 (y = 1/sqrt(2t + 1)) are nonlinear;
# the fifth-order pairs are tested on y' = -y, where their leading error term dominates already
# at moderate steps (on nonlinear problems their tiny fifth-order error constants make the
# observed slope pre-asymptotically closer to 6).
def _nonlinear(t, y, args):
    return jnp.stack([y[0] ** 2, -(y[1] ** 3)])


def _nonlinear_exact(t):
    return jnp.array([1 / (2 - t), 1 / np.sqrt(2 * t + 1)])


NONLINEAR = d.ODETerm(_nonlinear)
DECAY = d.ODETerm(lambda t, y, args: -y)

ORDERS = [
    (d.Euler(), 1),
    (d.Heun(), 2),
    (d.Midpoint(), 2),
    (d.RK4(), 4),
    (d.Bosh3(), 3),
    (d.Dopri5(), 5),
    (d.Tsit5(), 5),
]


@pytest.mark.parametrize("solver,order", ORDERS, ids=[type(s).__name__ for s, _ in ORDERS])
def test_fixed_step_order(solver, order):
    steps = {1: [32, 64, 128], 2: [16, 32, 64], 5: [16, 32, 64]}.get(order, [8, 16, 32])
    errors = []
    for n in steps:
        if order < 5:
            sol = d.solve(NONLINEAR, solver, 0.0, 1.0, _nonlinear_exact(0.0), dt0=1.0 / n)
            errors.append(float(jnp.max(jnp.abs(sol.ys[-1] - _nonlinear_exact(1.0)))))
        else:
            sol = d.solve(DECAY, solver, 0.0, 1.0, jnp.ones(1), dt0=1.0 / n)
            errors.append(float(jnp.abs(sol.ys[-1, 0] - np.exp(-1.0))))
    slope = fitted_slope(1.0 / np.array(steps), errors)
    assert abs(slope - order) < 0.2, (errors, slope)


@pytest.mark.parametrize(
    "solver", [d.Bosh3(), d.Dopri5(), d.Tsit5()], ids=lambda x: type(x).__name__
)
def test_adaptive_meets_tolerance_and_dense_output(solver):
    ts = jnp.linspace(0.0, 3.0, 13)
    errs = []
    for tol in (1e-4, 1e-7):
        sol = d.solve(
            LINEAR,
            solver,
            0.0,
            3.0,
            _Y0,
            args=_A,
            saveat=d.SaveAt(ts=ts, t1=True),
            controller=d.PIDController(rtol=tol, atol=tol),
        )
        assert sol.result == js.RESULTS.successful
        exact = _exact_many(sol.ts)
        err = float(jnp.max(jnp.abs(sol.ys - exact)))
        # global error of a tolerance-proportional controller: within a small multiple of tol
        assert err < 100 * tol, (tol, err)
        assert int(sol.stats["num_accepted_steps"]) + int(sol.stats["num_rejected_steps"]) == int(
            sol.stats["num_steps"]
        )
        errs.append(err)
    assert errs[1] < errs[0]


def test_dense_output_fixed_steps_is_fourth_order():
    ts = jnp.linspace(0.0, 2.0, 41)
    errors = []
    for n in (10, 20):
        sol = d.solve(LINEAR, d.RK4(), 0.0, 2.0, _Y0, dt0=2.0 / n, args=_A, saveat=d.SaveAt(ts=ts))
        errors.append(float(jnp.max(jnp.abs(sol.ys - _exact_many(ts)))))
    # cubic Hermite through the RK4 values and derivatives: O(h^4)
    assert np.log2(errors[0] / errors[1]) > 3.5, errors


def test_saveat_layout_and_steps():
    ts = jnp.array([0.0, 0.5, 1.0])
    sol = d.solve(
        LINEAR, d.Heun(), 0.0, 1.0, _Y0, dt0=0.25, args=_A,
        saveat=d.SaveAt(t0=True, ts=ts, steps=True, t1=True),
    )  # fmt: skip
    expected = np.array([0.0, 0.0, 0.5, 1.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_allclose(sol.ts, expected)
    assert sol.ys.shape == (9, 2)
    np.testing.assert_allclose(sol.ys[0], _Y0)
    np.testing.assert_allclose(sol.ys[1], _Y0)
    np.testing.assert_allclose(sol.ys[-1], sol.ys[-2])
    adaptive = d.solve(
        LINEAR, d.Tsit5(), 0.0, 1.0, _Y0, args=_A, max_steps=64,
        saveat=d.SaveAt(steps=True), controller=d.PIDController(rtol=1e-6, atol=1e-6),
    )  # fmt: skip
    accepted = int(adaptive.stats["num_accepted_steps"])
    assert np.all(np.isfinite(adaptive.ts[:accepted])) and np.all(np.isinf(adaptive.ts[accepted:]))
    assert float(adaptive.ts[accepted - 1]) == 1.0


def _decay_at_1(rate, adjoint, controller, dt0=None):
    term = d.ODETerm(lambda t, y, k: -k * y)
    sol = d.solve(
        term, d.Tsit5(), 0.0, 1.0, jnp.array([2.0]), args=rate, dt0=dt0,
        controller=controller, adjoint=adjoint, max_steps=64,
    )  # fmt: skip
    return sol.ys[-1, 0]


def test_gradient_matches_analytic():
    rate = 0.7
    exact = -2.0 * np.exp(-rate)  # d/dk 2 exp(-k)
    pid = d.PIDController(rtol=1e-9, atol=1e-9)
    grad_rev = jax.grad(_decay_at_1)(rate, None, pid)
    grad_fwd = jax.jacfwd(_decay_at_1)(rate, d.ForwardMode(), pid)
    grad_fixed = jax.grad(_decay_at_1)(rate, None, None, 0.05)
    assert float(grad_rev) != float(grad_fixed)  # two different discretisations
    np.testing.assert_allclose(grad_rev, exact, rtol=1e-6)
    np.testing.assert_allclose(grad_fwd, exact, rtol=1e-6)
    np.testing.assert_allclose(grad_fixed, exact, rtol=1e-6)


@eqx.filter_jit
def _solve_jitted(y0, matrix, controller):
    return d.solve(LINEAR, d.Tsit5(), 0.0, 1.0, y0, args=matrix, controller=controller).ys[-1]


def test_jit_vmap_plain_agree_and_no_retrace():
    controller = d.PIDController(rtol=1e-6, atol=1e-6)
    plain = d.solve(LINEAR, d.Tsit5(), 0.0, 1.0, _Y0, args=_A, controller=controller).ys[-1]
    jitted = _solve_jitted(_Y0, _A, controller)
    np.testing.assert_allclose(plain, jitted, rtol=1e-12, atol=1e-12)
    batch = jnp.stack([_Y0, 2 * _Y0, -_Y0])
    vmapped = jax.vmap(_solve_jitted, in_axes=(0, None, None))(batch, _A, controller)
    for i in range(3):
        single = _solve_jitted(batch[i], _A, controller)
        np.testing.assert_allclose(vmapped[i], single, rtol=1e-10, atol=1e-12)

    counted = eqx.debug.assert_max_traces(
        lambda y0, matrix, ctrl: d.solve(
            LINEAR, d.Tsit5(), 0.0, 1.0, y0, args=matrix, controller=ctrl
        ).ys[-1],
        max_traces=1,
    )
    counted = eqx.filter_jit(counted)
    counted(_Y0, _A, controller)
    counted(2 * _Y0, 0.5 * _A, d.PIDController(rtol=1e-4, atol=1e-7))  # new floats: no retrace


def test_float32_stays_float32():
    y0 = jnp.array([1.0, 0.5], dtype=jnp.float32)
    matrix = _A.astype(jnp.float32)
    for controller, dt0 in ((None, 0.1), (d.PIDController(rtol=1e-4, atol=1e-4), None)):
        sol = d.solve(LINEAR, d.Tsit5(), 0.0, 1.0, y0, args=matrix, dt0=dt0, controller=controller)
        assert sol.ys.dtype == jnp.float32 and sol.ts.dtype == jnp.float32
        np.testing.assert_allclose(sol.ys[-1], _exact(1.0), rtol=1e-3, atol=1e-4)


def test_traced_times_use_the_loop_and_agree_with_the_scan():
    fixed = d.solve(LINEAR, d.RK4(), 0.0, 1.0, _Y0, dt0=0.1, args=_A).ys[-1]
    traced = jax.jit(
        lambda t1, dt0: d.solve(LINEAR, d.RK4(), 0.0, t1, _Y0, dt0=dt0, args=_A, max_steps=32).ys[
            -1
        ]
    )(1.0, 0.1)
    np.testing.assert_allclose(fixed, traced, rtol=1e-12)


class _MyEuler(d.AbstractSolver):
    """A user-written solver, through the public base class only."""

    term_types = (d.ODETerm,)
    levy_area = "none"
    order = 1
    adaptive = False

    def strong_order(self, terms):
        return None

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, increment, state):
        f0 = terms.vector_field(t0, y0, args)
        y1 = jax.tree.map(lambda y, f: y + (t1 - t0) * f, y0, f0)
        return d.StepOutput(y1, None, d.DenseInfo(y0, y1), None)


def test_user_solver_and_user_loop():
    mine = d.solve(LINEAR, _MyEuler(), 0.0, 1.0, _Y0, dt0=0.1, args=_A).ys[-1]
    ours = d.solve(LINEAR, d.Euler(), 0.0, 1.0, _Y0, dt0=0.1, args=_A).ys[-1]
    np.testing.assert_allclose(mine, ours, rtol=1e-13)

    solver = d.Tsit5()
    state = solver.init(LINEAR, 0.0, 0.1, _Y0, _A)

    @jax.jit
    def run(y, state):
        def body(carry, t):
            y, state = carry
            out = solver.step(LINEAR, t, t + 0.1, y, _A, None, state)
            return (out.y1, out.state), None

        return jax.lax.scan(body, (y, state), jnp.arange(10.0) * 0.1)[0][0]

    np.testing.assert_allclose(run(_Y0, state), _exact(1.0), rtol=1e-6)


def test_pytree_state():
    term = d.ODETerm(lambda t, y, args: {"x": y["v"], "v": -y["x"]})
    y0 = {"x": jnp.array(1.0), "v": jnp.array(0.0)}
    sol = d.solve(
        term, d.Dopri5(), 0.0, np.pi, y0, controller=d.PIDController(rtol=1e-8, atol=1e-8)
    )
    np.testing.assert_allclose(sol.ys["x"][-1], -1.0, atol=1e-6)
    np.testing.assert_allclose(sol.ys["v"][-1], 0.0, atol=1e-6)


def test_many_save_times_gradient_agrees_across_adjoints():
    # More than 64 save times take the per-step inner loop over the covered save times
    # (O(steps + saves)); its derivative must agree across adjoints.
    def loss(k, num_saves, adjoint):
        ts = jnp.linspace(0.0, 2.0, num_saves)
        sol = d.solve(d.ODETerm(lambda t, y, a: -a * y + jnp.sin(3 * t)), d.Tsit5(), 0.0, 2.0,
                      jnp.ones(1), args=k, controller=d.PIDController(rtol=1e-8, atol=1e-8),
                      saveat=d.SaveAt(ts=ts), adjoint=adjoint)  # fmt: skip
        return jnp.mean(sol.ys**2)

    k, num_saves = jnp.asarray(1.3), 200
    reverse = jax.grad(loss)(k, num_saves, d.RecursiveCheckpointAdjoint())
    forward = jax.jacfwd(loss)(k, num_saves, d.ForwardMode())
    np.testing.assert_allclose(reverse, forward, rtol=1e-12)
    # steps are held constant, so the derivative matches finite differences to the solve's
    # tolerance, not exactly
    eps = 1e-6
    fd = (loss(k + eps, num_saves, None) - loss(k - eps, num_saves, None)) / (2 * eps)
    np.testing.assert_allclose(reverse, fd, rtol=1e-4)
