"""Single precision, the way most users run: x64 off, float32 inputs, float32 outputs.

Each test computes something in float32 and compares it with the same computation in float64
(under `jax.enable_x64(True)`, from the same float32 inputs cast up), with a tolerance for
float32 rounding. They run in CI's float32 pass (`JAXSOLVE_TEST_X64=0 pytest`, see
conftest.py); the main pass, with x64 on, skips them (its default float is float64).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

pytestmark = [
    pytest.mark.float32,
    pytest.mark.skipif(
        jax.config.jax_enable_x64, reason="float32 checks run in the float32 pass (x64 off)"
    ),
]


def _float64(fn, *args):
    """`fn(*args)` with x64 on and every floating input cast to float64, returned as NumPy."""
    with jax.enable_x64(True):
        args = jax.tree.map(
            lambda x: (
                jnp.asarray(np.asarray(x, np.float64))
                if np.issubdtype(np.asarray(x).dtype, np.floating)
                else x
            ),
            args,
        )
        out = fn(*args)
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(out))
        return jax.tree.map(np.asarray, out)


def _assert_float32(tree):
    for leaf in jax.tree.leaves(tree):
        assert leaf.dtype == jnp.float32, leaf.dtype


def test_adaptive_tsit5_solve_and_gradient():
    term = js.diffeq.ODETerm(lambda t, y, k: -k * y + jnp.sin(t))

    def value_and_grad(k):
        def final(k):
            controller = js.diffeq.PIDController(rtol=1e-5, atol=1e-6)
            sol = js.diffeq.solve(
                term, js.diffeq.Tsit5(), 0.0, 2.0, jnp.ones_like(k), args=k, controller=controller
            )
            return jnp.sum(sol.ys[-1]), sol.ys[-1]

        (_, ys), grad = jax.value_and_grad(final, has_aux=True)(k)
        return ys, grad

    k = jnp.array([0.5, 1.0, 3.0], jnp.float32)
    ys, grad = value_and_grad(k)
    _assert_float32((ys, grad))
    ys64, grad64 = _float64(value_and_grad, k)
    np.testing.assert_allclose(ys, ys64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad, grad64, rtol=1e-3, atol=1e-5)


def test_shark_on_brownian_tree():
    # ShARK in float32 against its own step formula evaluated in float64 on the same path.
    dim, dt = 16, 1 / 16  # a dyadic step: the solve's grid and `ts` below are the same numbers
    bm = js.brownian.VirtualBrownianTree(
        0.0, 1.0, 1e-2, (dim,), jax.random.key(3), levy_area="space-time"
    )
    sigma = 0.5
    term = js.diffeq.SDETerm(
        lambda t, y, a: -jnp.sin(y), lambda t, y, a: jnp.full(dim, sigma), bm, noise="additive"
    )
    sol = js.diffeq.solve(
        term,
        js.diffeq.ShARK(),
        0.0,
        1.0,
        jnp.zeros(dim),
        dt0=dt,
        saveat=js.diffeq.SaveAt(steps=True),
    )
    _assert_float32((sol.ts, sol.ys))
    assert bm.evaluate(0.5).dtype == jnp.float32

    incs = bm.increments(jnp.arange(17, dtype=jnp.float32) / 16)
    W, H = np.asarray(incs.W, np.float64), np.asarray(incs.H, np.float64)
    f = lambda y: -np.sin(y)
    y, reference = np.zeros(dim), []
    for w, hh in zip(W, H):
        z1 = y + sigma * hh
        z2 = y + (5 / 6) * (dt * f(z1) + sigma * w) + sigma * hh
        y = y + dt * (0.4 * f(z1) + 0.6 * f(z2)) + sigma * w
        reference.append(y)
    np.testing.assert_allclose(sol.ys, np.stack(reference), rtol=1e-5, atol=1e-5)


def test_dpm_solver_pp_sample():
    # Gaussian data N(0, s²): the exact noise prediction is sigma x / (alpha² s² + sigma²).
    s2 = 0.25

    def sample(x_T):
        sched = js.diffusion.VPLinear()

        def eps(x, t):
            alpha, sigma = sched.alpha(t), sched.sigma(t)
            return sigma * x / (alpha**2 * s2 + sigma**2)

        model = js.diffusion.Model(eps, sched, prediction="eps")
        ts = js.diffusion.timesteps(sched, 10, spacing="logsnr")
        return js.diffusion.sample(js.diffusion.DPMSolverPP(order=2), model, x_T, ts)

    x_T = jax.random.normal(jax.random.key(0), (256, 2))
    x0 = sample(x_T)
    _assert_float32(x0)
    np.testing.assert_allclose(x0, _float64(sample, x_T), rtol=1e-4, atol=1e-5)
    # and it samples the data law: standard deviation sqrt(s2) = 0.5
    assert abs(float(jnp.std(x0)) - 0.5) < 0.1


def test_linear_cg_solve():
    def solve(M, b):
        A = jnp.eye(20) + M @ M.T / 20  # symmetric positive definite, condition number ~5
        sol = js.linear.solve(A, b, js.linear.CG(rtol=1e-6, atol=1e-6))
        return sol.value

    M = jax.random.normal(jax.random.key(1), (20, 20))
    b = jax.random.normal(jax.random.key(2), (20,))
    x = solve(M, b)
    _assert_float32(x)
    np.testing.assert_allclose(x, _float64(solve, M, b), rtol=1e-4, atol=1e-5)


def test_lbfgs_minimise_with_implicit_gradient():
    def fit(X, y, lam):
        def loss(w, lam):
            return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * lam * jnp.vdot(w, w)

        def w_star(lam):
            solver = js.nonlinear.LBFGS(rtol=1e-5, atol=1e-5)
            return js.nonlinear.minimize(loss, solver, jnp.zeros(X.shape[1]), lam).value

        return w_star(lam), jax.jacrev(w_star)(lam)

    X = jax.random.normal(jax.random.key(4), (50, 5))
    y = jax.random.normal(jax.random.key(5), (50,))
    lam = jnp.asarray(0.1, jnp.float32)
    w, dw = fit(X, y, lam)
    _assert_float32((w, dw))
    w64, dw64 = _float64(fit, X, y, lam)
    np.testing.assert_allclose(w, w64, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dw, dw64, rtol=1e-2, atol=1e-4)


def test_sinkhorn_and_its_gradient():
    def transport(x, y):
        def cost_of(x):
            cost = jnp.sum((x[:, None] - y[None]) ** 2, -1)
            a = jnp.full(x.shape[0], 1 / x.shape[0])
            b = jnp.full(y.shape[0], 1 / y.shape[0])
            return js.nonlinear.sinkhorn(cost, a, b, 0.1, threshold=1e-5).reg_ot_cost

        return jax.value_and_grad(cost_of)(x)

    x = jax.random.normal(jax.random.key(6), (32, 2))
    y = jax.random.normal(jax.random.key(7), (24, 2)) + 1.0
    value, grad = transport(x, y)
    _assert_float32((value, grad))
    value64, grad64 = _float64(transport, x, y)
    np.testing.assert_allclose(value, value64, rtol=1e-4)
    np.testing.assert_allclose(grad, grad64, rtol=1e-2, atol=1e-4)
