"""Stiff ODE solvers (ImplicitEuler, Kvaerno3/4/5): convergence orders, embedded error order,
Robertson and stiff van der Pol against scipy's Radau, Newton failure rejecting steps, jit/vmap,
gradients against finite differences, float32, models in args, other root/linear solvers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import jaxsolve as js
from tests.helpers import fitted_slope

d = js.diffeq


def _newton(rtol, atol):
    return d.ModifiedNewton(rtol=rtol, atol=atol)


# A smooth, mildly stiff nonlinear problem: y0' = -k (y0 - sin t) + cos t + (y1 - 1/(1+t)),
# y1' = -y1^2, whose solution from (0, 1) is (sin t, 1/(1+t)).
def _mild(t, y, k):
    return jnp.stack([-k * (y[0] - jnp.sin(t)) + jnp.cos(t) + (y[1] - 1 / (1 + t)), -(y[1] ** 2)])


MILD = d.ODETerm(_mild)
_MILD_EXACT = np.array([np.sin(2.0), 1 / 3])


def _robertson(t, y, args):
    a, b, c = y[0], y[1], y[2]
    return jnp.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b**2, 3e7 * b**2])


def _robertson_np(t, y):
    a, b, c = y
    return [-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b**2, 3e7 * b**2]


def _robertson_jac(t, y):
    a, b, c = y
    return [[-0.04, 1e4 * c, 1e4 * b], [0.04, -1e4 * c - 6e7 * b, -1e4 * b], [0, 6e7 * b, 0]]


def _vdp(t, y, mu):
    return jnp.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


ROBERTSON = d.ODETerm(_robertson)
VDP = d.ODETerm(_vdp)


@pytest.fixture(scope="module")
def robertson_reference():
    sol = solve_ivp(
        _robertson_np, (0.0, 1e5), [1.0, 0.0, 0.0], method="Radau", rtol=1e-12, atol=1e-14,
        jac=_robertson_jac,
    )  # fmt: skip
    return sol.y[:, -1]


@pytest.mark.parametrize(
    "solver, order, dts",
    [
        (d.ImplicitEuler(), 1, (0.02, 0.01, 0.005)),
        (d.Kvaerno3(), 3, (0.1, 0.05, 0.025)),
        (d.Kvaerno4(), 4, (0.05, 0.025, 0.0125)),
        (d.Kvaerno5(), 5, (0.08, 0.04, 0.02)),
    ],
)
def test_convergence_order(solver, order, dts):
    solver = eqx.tree_at(lambda s: s.root_finder, solver, _newton(1e-12, 1e-12))

    @jax.jit
    def error(dt):  # a traced dt0: one compilation for every step size
        sol = d.solve(MILD, solver, 0.0, 2.0, jnp.array([0.0, 1.0]), args=3.0, dt0=dt)
        return jnp.max(jnp.abs(sol.ys[-1] - _MILD_EXACT))

    errors = [float(error(jnp.asarray(dt))) for dt in dts]
    assert abs(fitted_slope(dts, errors) - order) < 0.15, errors


@pytest.mark.parametrize(
    "solver, error_order",
    [(d.ImplicitEuler(), 2), (d.Kvaerno3(), 3), (d.Kvaerno4(), 4), (d.Kvaerno5(), 5)],
)
def test_embedded_error_order(solver, error_order):
    # One step driven by hand (init/step, as a user's own loop would): the local error estimate
    # shrinks like h^(order of the embedded pair + 1), and it estimates the actual local error
    # within a modest factor (the lower-order solution's error dominates).
    solver = eqx.tree_at(lambda s: s.root_finder, solver, _newton(1e-13, 1e-13))
    y0 = jnp.array([0.0, 1.0])

    @jax.jit
    def step(h):
        state = solver.init(MILD, 0.0, h, y0, 3.0)
        return solver.step(MILD, jnp.zeros_like(h), h, y0, 3.0, None, state)

    hs = (0.04, 0.02, 0.01)
    estimates = []
    for h in hs:
        out = step(jnp.asarray(h))
        estimates.append(float(jnp.max(jnp.abs(out.y_error))))
        exact = np.array([np.sin(h), 1 / (1 + h)])
        assert float(jnp.max(jnp.abs(out.y1 - exact))) < 2 * estimates[-1]
    assert abs(fitted_slope(hs, estimates) - error_order) < 0.2, estimates


def test_robertson_against_radau(robertson_reference):
    rtol, atol = 1e-6, 1e-10
    solver = d.Kvaerno5(root_finder=_newton(rtol, atol))
    sol = d.solve(ROBERTSON, solver, 0.0, 1e5, jnp.array([1.0, 0.0, 0.0]),
                  controller=d.PIDController(rtol=rtol, atol=atol), max_steps=2000)  # fmt: skip
    y = np.asarray(sol.ys[-1])
    assert sol.result == js.RESULTS.successful
    np.testing.assert_allclose(y, robertson_reference, rtol=1e-4)
    assert abs(y.sum() - 1.0) < 1e-8  # the linear invariant a + b + c = 1
    assert int(sol.stats["num_steps"]) < 200


def test_tsit5_hits_max_steps_where_kvaerno5_succeeds():
    rtol, atol = 1e-4, 1e-8
    controller = d.PIDController(rtol=rtol, atol=atol)
    y0 = jnp.array([1.0, 0.0, 0.0])
    explicit = d.solve(ROBERTSON, d.Tsit5(), 0.0, 1e5, y0, controller=controller,
                       max_steps=2000, throw=False)  # fmt: skip
    assert explicit.result == js.RESULTS.max_steps_reached
    assert float(explicit.ts[-1]) < 1e3  # stability-bound steps: nowhere near the end
    implicit = d.solve(ROBERTSON, d.Kvaerno5(root_finder=_newton(rtol, atol)), 0.0, 1e5, y0,
                       controller=controller, max_steps=2000)  # fmt: skip
    assert implicit.result == js.RESULTS.successful
    assert int(implicit.stats["num_steps"]) < 200


def test_stiff_van_der_pol():
    mu, t1 = 1000.0, 100.0
    ref = solve_ivp(
        lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, t1), [2.0, 0.0],
        method="Radau", rtol=1e-12, atol=1e-14,
        jac=lambda t, y: [[0, 1], [-2 * mu * y[0] * y[1] - 1, mu * (1 - y[0] ** 2)]],
    ).y[:, -1]  # fmt: skip
    rtol, atol = 1e-6, 1e-9
    sol = d.solve(VDP, d.Kvaerno5(root_finder=_newton(rtol, atol)), 0.0, t1, jnp.array([2.0, 0.0]),
                  args=mu, controller=d.PIDController(rtol=rtol, atol=atol), max_steps=2000)  # fmt: skip
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), ref, rtol=1e-4)
    assert int(sol.stats["num_steps"]) < 100


def test_newton_failure_rejects_the_step():
    # With one Newton iteration per stage the nonlinear stages cannot meet the test: every
    # large step fails, is rejected and shrunk, and the solve still ends accurate.
    rtol, atol = 1e-6, 1e-9
    controller = d.PIDController(rtol=rtol, atol=atol)
    y0 = jnp.array([2.0, 0.0])
    good = d.solve(VDP, d.Kvaerno5(root_finder=_newton(rtol, atol)), 0.0, 10.0, y0, args=1000.0,
                   controller=controller, max_steps=2000)  # fmt: skip
    starved = d.Kvaerno5(root_finder=_newton(rtol, atol), max_newton_steps=2)
    sol = d.solve(VDP, starved, 0.0, 10.0, y0, args=1000.0, controller=controller, max_steps=2000)
    assert sol.result == js.RESULTS.successful
    assert int(sol.stats["num_rejected_steps"]) > int(good.stats["num_rejected_steps"])
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), np.asarray(good.ys[-1]), rtol=1e-4)
    # With constant steps a failed stage cannot be rejected: the solve says so (no garbage).
    fixed = d.solve(VDP, d.Kvaerno5(max_newton_steps=1), 0.0, 10.0, y0, args=1000.0, dt0=1.0,
                    throw=False)  # fmt: skip
    assert fixed.result == js.RESULTS.nonfinite


@pytest.mark.float32
def test_jit_vmap_over_initial_conditions():
    rtol, atol = 1e-4, 1e-7
    solver = d.Kvaerno5(root_finder=_newton(rtol, atol))
    controller = d.PIDController(rtol=rtol, atol=atol)

    @jax.jit
    def final(y0):
        return d.solve(VDP, solver, 0.0, 5.0, y0, args=jnp.asarray(50.0, y0.dtype),
                       controller=controller).ys[-1]  # fmt: skip

    y0s = jnp.array([[2.0, 0.0], [1.0, 0.5], [-1.5, 0.2]])
    batched = jax.vmap(final)(y0s)
    for y0, y in zip(y0s, batched, strict=True):
        ref = solve_ivp(
            lambda t, y: [y[1], 50.0 * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, 5.0),
            np.asarray(y0, np.float64), method="Radau", rtol=1e-10, atol=1e-12,
        ).y[:, -1]  # fmt: skip
        np.testing.assert_allclose(np.asarray(y), ref, rtol=2e-3, atol=1e-4)


@pytest.mark.float32
def test_float32_robertson(robertson_reference):
    rtol, atol = 1e-3, 1e-6
    y0 = jnp.array([1.0, 0.0, 0.0], jnp.float32)
    sol = d.solve(ROBERTSON, d.Kvaerno5(root_finder=_newton(rtol, atol)), 0.0, 1e5, y0,
                  controller=d.PIDController(rtol=rtol, atol=atol))  # fmt: skip
    assert sol.ys.dtype == jnp.float32
    assert sol.result == js.RESULTS.successful
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), robertson_reference, rtol=1e-2, atol=1e-6)


class _Kinetics(eqx.Module):
    """A model in `args`: the Robertson rate constants as parameters (log scale)."""

    log_rates: jax.Array

    def __call__(self, y):
        k1, k2, k3 = jnp.exp(self.log_rates)
        a, b, c = y[0], y[1], y[2]
        return jnp.stack([-k1 * a + k3 * b * c, k1 * a - k3 * b * c - k2 * b**2, k2 * b**2])


def test_model_in_args_and_gradients_against_finite_differences():
    rtol, atol = 1e-8, 1e-11  # tight: finite differences see the step-size decisions too
    term = d.ODETerm(lambda t, y, model: model(y))
    model = _Kinetics(jnp.log(jnp.array([0.04, 3e7, 1e4])))
    controller = d.PIDController(rtol=rtol, atol=atol)
    solver = d.Kvaerno3(root_finder=_newton(rtol, atol))  # 3 implicit stages: quicker to compile

    y0 = jnp.array([1.0, 0.0, 0.0])

    def c_final(model, y0):
        return d.solve(term, solver, 0.0, 40.0, y0, args=model, controller=controller,
                       max_steps=2000).ys[-1, 2]  # fmt: skip

    plain = d.solve(ROBERTSON, solver, 0.0, 40.0, jnp.array([1.0, 0.0, 0.0]),
                    controller=controller, max_steps=2000).ys[-1, 2]  # fmt: skip
    np.testing.assert_allclose(float(c_final(model, y0)), float(plain), rtol=1e-6)
    # Gradients in the model's parameters and in y0, against central differences.
    grad_model, grad_y0 = jax.jit(jax.grad(c_final, argnums=(0, 1)))(model, y0)
    value = jax.jit(c_final)
    eps = 1e-3
    for i in range(3):
        bump = lambda s: _Kinetics(model.log_rates.at[i].add(s))
        fd = (value(bump(eps), y0) - value(bump(-eps), y0)) / (2 * eps)
        np.testing.assert_allclose(float(grad_model.log_rates[i]), float(fd), rtol=1e-4, atol=1e-9)
    for i in (0, 2):  # (b < 0 makes Robertson explode: no central difference in y0[1])
        e = jnp.zeros(3).at[i].set(eps)
        fd = (value(model, y0 + e) - value(model, y0 - e)) / (2 * eps)
        np.testing.assert_allclose(float(grad_y0[i]), float(fd), rtol=1e-4, atol=1e-9)


def test_iterative_linear_solver_matches_lu():
    # The Newton systems solved by BiCGStab at each iteration (nothing factorised) instead of
    # one LU per step: the same solution up to the linear solves' tolerance.
    rtol, atol = 1e-5, 1e-8
    controller = d.PIDController(rtol=rtol, atol=atol)
    iterative = d.ImplicitEuler(
        root_finder=_newton(rtol, atol), linear_solver=js.linear.BiCGStab(rtol=1e-12, atol=1e-14)
    )
    runs = [
        d.solve(VDP, solver, 0.0, 1.0, jnp.array([2.0, 0.0]), args=100.0, controller=controller)
        for solver in (d.ImplicitEuler(root_finder=_newton(rtol, atol)), iterative)
    ]
    assert int(runs[0].stats["num_steps"]) == int(runs[1].stats["num_steps"])
    np.testing.assert_allclose(np.asarray(runs[1].ys[-1]), np.asarray(runs[0].ys[-1]), rtol=1e-8)


def test_nonlinear_newton_as_root_finder():
    # jaxsolve.nonlinear.Newton (a new Jacobian and solve at every iteration) on each stage.
    mu, t1 = 100.0, 3.0
    ref = solve_ivp(
        lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, t1), [2.0, 0.0],
        method="Radau", rtol=1e-12, atol=1e-14,
    ).y[:, -1]  # fmt: skip
    solver = d.Kvaerno3(root_finder=js.nonlinear.Newton(rtol=1e-9, atol=1e-12))
    sol = d.solve(VDP, solver, 0.0, t1, jnp.array([2.0, 0.0]), args=mu,
                  controller=d.PIDController(rtol=1e-7, atol=1e-10))  # fmt: skip
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), ref, rtol=1e-5)


def test_bad_fields():
    with pytest.raises(TypeError, match="root_finder"):
        d.Kvaerno5(root_finder=js.linear.LU())
    with pytest.raises(TypeError, match="linear_solver"):
        d.Kvaerno5(linear_solver=js.nonlinear.Newton())
    with pytest.raises(ValueError, match="max_newton_steps"):
        d.Kvaerno5(max_newton_steps=0)
    with pytest.raises(ValueError, match="rtol"):
        d.ModifiedNewton(rtol=-1.0)
    with pytest.raises(ValueError, match="kappa"):
        d.ModifiedNewton(kappa=0.0)


def test_new_tolerances_do_not_recompile():
    term = d.ODETerm(lambda t, y, args: -100.0 * (y - jnp.cos(t)))

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(solver):
        return d.solve(term, solver, 0.0, 1.0, jnp.zeros(()),
                       controller=d.PIDController(rtol=1e-6, atol=1e-8)).ys[-1]  # fmt: skip

    a = run(d.Kvaerno3(root_finder=_newton(1e-6, 1e-8)))
    b = run(d.Kvaerno3(root_finder=_newton(1e-7, 1e-9)))
    np.testing.assert_allclose(float(a), float(b), rtol=1e-4)


def test_import_layering():
    # DESIGN section 1: _core <- linear <- implicit <- nonlinear <- diffeq. The stiff solvers
    # made diffeq import nonlinear and linear; nothing below diffeq may import it back.
    import ast
    import pathlib

    root = pathlib.Path(js.__file__).parent
    for package in ("_core", "linear", "implicit", "nonlinear"):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [alias.name for alias in node.names]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                assert not any("diffeq" in name for name in names), f"{path} imports diffeq"
