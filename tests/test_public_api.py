"""The public API of DESIGN.md section 5, called exactly as written there."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js


def test_top_level_exports():
    for name in (
        "brownian",
        "diffeq",
        "diffusion",
        "linear",
        "implicit",
        "nonlinear",
        "optimizers",
        "RESULTS",
    ):
        assert hasattr(js, name)


def test_brownian_api():
    key = jax.random.key(0)
    for levy_area, fields in (
        ("none", ()),
        ("space-time", ("H",)),
        ("space-time-time", ("H", "K")),
    ):
        bm = js.brownian.VirtualBrownianTree(
            0.0, 1.0, 1e-2, (3,), key, levy_area=levy_area, dtype=None
        )
        inc = bm.increment(0.1, 0.4)
        assert np.isclose(float(inc.dt), 0.3) and inc.W.shape == (3,)
        for field in fields:
            assert getattr(inc, field).shape == (3,)
        assert bm.evaluate(0.5).shape == (3,)
        ts = jnp.array([0.0, 0.25, 0.5, 1.0])
        incs = bm.increments(ts)
        assert incs.W.shape == (3, 3)
        np.testing.assert_allclose(incs.W[1], bm.increment(0.25, 0.5).W, rtol=1e-10, atol=1e-12)


def test_diffeq_api():
    d = js.diffeq
    sol = d.solve(d.ODETerm(lambda t, y, args: -args * y), d.Tsit5(), 0.0, 1.0, jnp.ones(2), dt0=0.1, args=1.0,
                  saveat=d.SaveAt(t1=True), controller=d.PIDController(rtol=1e-6, atol=1e-8), max_steps=4096,
                  adjoint=None, throw=True, progress=False)  # fmt: skip
    np.testing.assert_allclose(sol.ys[-1], np.exp(-1.0) * np.ones(2), rtol=1e-5)
    assert sol.result == js.RESULTS.successful
    assert {"num_steps", "num_accepted_steps"} <= set(sol.stats)
    for name in ("Euler", "Heun", "Midpoint", "RK4", "Bosh3", "Dopri5", "Tsit5"):
        out = d.solve(d.ODETerm(lambda t, y, args: -y), getattr(d, name)(), 0.0, 1.0, jnp.ones(()), dt0=0.25,
                      saveat=d.SaveAt(t0=True, t1=True), controller=d.ConstantStep())  # fmt: skip
        assert out.ys.shape == (2,)
    bm = js.brownian.VirtualBrownianTree(
        0.0, 1.0, 1e-3, (2,), jax.random.key(1), levy_area="space-time"
    )
    for noise in ("diagonal", "additive"):
        term = d.SDETerm(
            lambda t, y, a: -y, lambda t, y, a: 0.3 * jnp.ones_like(y), bm, noise=noise
        )
        for name in ("EulerMaruyama", "Milstein", "SRA1", "ShARK", "SEA", "SPaRK"):
            if noise == "diagonal" and name in ("SRA1", "ShARK", "SEA"):
                continue  # additive-noise methods
            out = d.solve(term, getattr(d, name)(), 0.0, 1.0, jnp.ones(2), dt0=0.125)
            assert out.ys.shape == (1, 2) and bool(jnp.all(jnp.isfinite(out.ys)))
    general = d.SDETerm(
        lambda t, y, a: -y, lambda t, y, a: 0.1 * jnp.ones((2, 2)), bm, noise="general"
    )
    assert d.solve(general, d.EulerMaruyama(), 0.0, 1.0, jnp.ones(2), dt0=0.125).ys.shape == (1, 2)
    assert callable(d.UnderdampedLangevinTerm) and all(
        hasattr(d, n) for n in ("ALIGN", "ShOULD", "QUICSORT")
    )


def test_diffusion_api():
    D = js.diffusion
    scheds = [D.VPLinear(beta_min=0.1, beta_max=20.0), D.VPCosine(s=0.008), D.VPDiscrete(jnp.linspace(1e-4, 0.02, 1000)),
              D.VE(sigma_min=0.01, sigma_max=50.0), D.FlowMatching()]  # fmt: skip
    t = jnp.array(0.5)
    for sched in scheds:
        lam = sched.logsnr(t)
        np.testing.assert_allclose(lam, jnp.log(sched.alpha(t) / sched.sigma(t)), rtol=1e-6)
        np.testing.assert_allclose(sched.t_of_logsnr(lam), t, rtol=1e-5)
    sched = scheds[0]
    model = D.Model(lambda x, t: 0.1 * x, sched, prediction="eps")
    for spacing in ("logsnr", "uniform", "quadratic", "karras"):
        ts = D.timesteps(sched, 6, spacing=spacing, t_start=None, t_end=None)
        assert ts.shape == (7,) and bool(jnp.all(jnp.diff(ts) < 0))
    ts = D.timesteps(sched, 6)
    x_T = jax.random.normal(jax.random.key(0), (4, 2))
    samplers = [D.DDIM(), D.DPMSolver(order=2), D.DPMSolverPP(order=3), D.UniPC(order=2, variant="bh2"),
                D.DEIS(order=2), D.PNDM(), D.EulerEDM(), D.HeunEDM(), D.GHVB(order=2, beta=0.8), D.BDIA(gamma=0.5)]  # fmt: skip
    for sampler in samplers:
        assert D.sample(sampler, model, x_T, ts, key=None, guidance=None).shape == x_T.shape
    for order in (1, 2):
        out = D.sample(D.SDEDPMSolverPP(order=order), model, x_T, ts, key=jax.random.key(3))
        assert out.shape == x_T.shape
    x0 = D.sample(D.DDIM(), model, x_T, ts)
    assert D.invert(D.DDIM(), model, x0, ts).shape == x_T.shape


def test_linear_implicit_nonlinear_api():
    A = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    b = jnp.array([1.0, 2.0])
    expected = jnp.linalg.solve(A, b)
    L = js.linear
    for solver in (L.LU(), L.Cholesky(), L.QR(), L.CG(rtol=1e-10, atol=1e-10, max_steps=None), L.GMRES(rtol=1e-10, atol=1e-10),
                   L.BiCGStab(rtol=1e-10, atol=1e-10), L.SOR(omega=1.1, rtol=1e-10, atol=1e-10), L.Auto()):  # fmt: skip
        sol = L.solve(A, b, solver=solver, throw=True)
        np.testing.assert_allclose(sol.value, expected, rtol=1e-7)
        assert sol.result == js.RESULTS.successful and isinstance(sol.stats, dict)
    np.testing.assert_allclose(
        L.solve(lambda v: A @ v, b, solver=L.CG(rtol=1e-10, atol=1e-10)).value, expected, rtol=1e-7
    )

    @js.implicit.custom_root(lambda x, a: x**3 - a, solve=None)
    def cube_root(x_init, a):
        return jnp.cbrt(a) + 0.0 * x_init

    np.testing.assert_allclose(jax.grad(lambda a: cube_root(1.0, a))(8.0), 1 / 12, rtol=1e-10)

    @js.implicit.custom_fixed_point(lambda x, theta: jnp.cos(x) + theta, solve=None)
    def fixed(x_init, theta):
        return js.nonlinear.fixed_point(
            lambda x, th: jnp.cos(x) + th,
            js.nonlinear.Anderson(rtol=1e-12, atol=1e-12),
            x_init,
            theta,
        ).value

    x_star = fixed(0.0, 0.5)
    np.testing.assert_allclose(
        jax.grad(lambda th: fixed(0.0, th))(0.5), 1 / (1 + jnp.sin(x_star)), rtol=1e-8
    )

    N = js.nonlinear
    sol = N.root_find(
        lambda y, a: y**3 - a,
        N.Newton(rtol=1e-12, atol=1e-12),
        jnp.array(1.0),
        jnp.array(8.0),
        max_steps=256,
        adjoint=None,
        throw=True,
    )
    np.testing.assert_allclose(sol.value, 2.0, rtol=1e-10)
    assert sol.result == js.RESULTS.successful and isinstance(sol.stats, dict)
    quad = lambda y, args: jnp.sum((y - args) ** 2)
    target = jnp.array([1.0, -2.0])
    for solver in (N.GradientDescent(learning_rate=0.1, rtol=1e-9, atol=1e-9), N.NonlinearCG(rtol=1e-9, atol=1e-9),
                   N.BFGS(rtol=1e-9, atol=1e-9), N.LBFGS(rtol=1e-9, atol=1e-9), N.OptaxMinimizer(optax.adam(0.05), rtol=1e-6, atol=1e-6)):  # fmt: skip
        out = N.minimize(quad, solver, jnp.zeros(2), target, max_steps=2000)
        np.testing.assert_allclose(out.value, target, atol=1e-3)
    for solver in (N.GaussNewton(rtol=1e-9, atol=1e-9), N.LevenbergMarquardt(rtol=1e-9, atol=1e-9)):
        out = N.least_squares(lambda y, args: y - args, solver, jnp.zeros(2), target)
        np.testing.assert_allclose(out.value, target, atol=1e-8)
    names = (
        "Chord",
        "Broyden",
        "Bisection",
        "FixedPointIteration",
        "ProjectedGradient",
        "FrankWolfe",
        "sinkhorn",
    )
    assert all(hasattr(N, n) for n in names)


def test_bad_option_strings_are_clear():
    with pytest.raises(ValueError, match="levy_area"):
        js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (), jax.random.key(0), levy_area="area")
    with pytest.raises(ValueError, match="prediction"):
        js.diffusion.Model(lambda x, t: x, js.diffusion.VPLinear(), prediction="noise")
    with pytest.raises(ValueError, match="spacing"):
        js.diffusion.timesteps(js.diffusion.VPLinear(), 5, spacing="cosine")
