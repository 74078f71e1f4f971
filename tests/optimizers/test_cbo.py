"""Consensus-based optimisation: Rastrigin in d = 10, the mean-field variance laws, the solver
contract (jit, vmap, no recompile, float32, user loops), failures and bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

opt = js.optimizers


def _rastrigin(x, shift=1.0):
    y = x - shift
    return 10 * y.size + jnp.sum(y**2 - 10 * jnp.cos(2 * jnp.pi * y))


def test_rastrigin_d10_global_minimum_in_at_least_90_percent_of_20_seeds():
    # The exploratory regime (strong anisotropic noise, sigma**2 > 2 lam; Carrillo, Jin, Li &
    # Zhu 2021): particles keep exploring, so the run is a fixed horizon (throw=False: it ends
    # at max_steps without collapsing). Minimiser at (1, ..., 1), start uniform on [-3, 3]^10.
    dim, num_particles = 10, 100

    def run(key):
        init_key, noise_key = jax.random.split(key)
        particles = jax.random.uniform(init_key, (num_particles, dim), minval=-3.0, maxval=3.0)
        return opt.cbo_minimize(
            _rastrigin, particles, noise_key, alpha=3.0, sigma=5.0, dt=0.04, max_steps=600,
            throw=False,
        )  # fmt: skip

    sols = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), 20))
    error = np.max(np.abs(np.asarray(sols.value) - 1.0), axis=1)
    successes = int(np.sum(error < 0.25))  # the success criterion of Pinnau et al. 2017
    assert successes >= 18, error


def _variance_run(solver, fn, particles, key, num_steps):
    """A user's loop over CBO.step, recording E|X - v|^2 and E|X - x*|^2 after each step."""

    def body(state, _):
        state = solver.step(fn, state)
        x = state.particles
        return state, (jnp.mean(jnp.sum((x - state.consensus) ** 2, -1)), state.consensus)

    state = solver.init(fn, particles, key)
    _, (variance, consensus) = jax.lax.scan(body, state, None, length=num_steps)
    v0 = jnp.mean(jnp.sum((particles - state.consensus) ** 2, -1))
    return jnp.concatenate([v0[None], variance]), consensus


def test_alpha_zero_variance_law_is_exact():
    # alpha = 0: the consensus point is the particle mean. For the Euler-Maruyama particle
    # system in 1-D, E[V_{k+1} | X_k] = ((1 - lam dt)^2 + sigma^2 dt (1 - 1/N)) V_k exactly
    # (the noise of the mean costs the 1/N); as dt -> 0 and N -> inf this is the mean-field law
    # d/dt E|X - v|^2 = -(2 lam - sigma^2) E|X - v|^2 (Carrillo et al. 2018).
    lam, sigma, dt, num_particles, num_steps = 1.0, 0.5, 0.02, 1000, 100
    solver = opt.CBO(alpha=0.0, lam=lam, sigma=sigma, dt=dt)
    fn = lambda x: jnp.sum(x**2)

    def ratio(key):
        init_key, noise_key = jax.random.split(key)
        particles = jax.random.normal(init_key, (num_particles, 1))
        variance, _ = _variance_run(solver, fn, particles, noise_key, num_steps)
        return variance[-1] / variance[0]

    ratios = np.asarray(jax.jit(jax.vmap(ratio))(jax.random.split(jax.random.key(0), 64)))
    factor = (1 - lam * dt) ** 2 + sigma**2 * dt * (1 - 1 / num_particles)
    expected = factor**num_steps
    error = ratios.std(ddof=1) / np.sqrt(ratios.size)
    assert abs(ratios.mean() - expected) <= 4 * error, (ratios.mean(), expected, error)
    assert 4 * error < 0.1 * expected  # precise enough to tell a 10% error in the law
    # and the per-step rate is the mean-field one up to O(dt)
    rate = -np.log(ratios.mean()) / (num_steps * dt)
    assert abs(rate - (2 * lam - sigma**2)) < 0.05


@pytest.mark.parametrize("anisotropic", [True, False])
def test_large_alpha_mean_field_rate_and_consensus_at_the_minimiser(anisotropic):
    # For large alpha, V(t) = E|X - x*|^2 decays like exp(-(2 lam - sigma^2) t) (anisotropic)
    # or exp(-(2 lam - d sigma^2) t) (isotropic), and v -> x* (Fornasier, Klock & Riedl 2024,
    # Theorem 12; anisotropic: Fornasier, Klock & Riedl 2022). d = 2 tells the two apart.
    lam, sigma, dt, dim, num_steps = 1.0, 0.5, 0.01, 2, 300
    minimiser = jnp.array([0.5, -0.25])
    fn = lambda x: jnp.sum((x - minimiser) ** 2)
    solver = opt.CBO(alpha=1e6, lam=lam, sigma=sigma, dt=dt, anisotropic=anisotropic)

    def run(key):
        init_key, noise_key = jax.random.split(key)
        particles = minimiser + jax.random.normal(init_key, (2000, dim))

        def body(state, _):
            state = solver.step(fn, state)
            return state, jnp.mean(jnp.sum((state.particles - minimiser) ** 2, -1))

        state = solver.init(fn, particles, noise_key)
        state, distance = jax.lax.scan(body, state, None, length=num_steps)
        return distance, state.consensus

    distance, consensus = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(1), 4))
    times = dt * np.arange(1, num_steps + 1)
    slope = np.polyfit(times, np.log(np.asarray(distance).mean(0)), 1)[0]
    expected = 2 * lam - (1 if anisotropic else dim) * sigma**2
    assert abs(-slope - expected) < 0.06 * expected, (slope, expected)
    np.testing.assert_allclose(consensus, np.broadcast_to(minimiser, consensus.shape), atol=0.05)


def test_entry_point_contract_jit_vmap_no_recompile_and_results():
    fn = lambda x: jnp.sum((x - 0.3) ** 2)
    particles = jax.random.uniform(jax.random.key(0), (64, 3), minval=-2.0, maxval=2.0)
    key = jax.random.key(1)
    # sigma traced: a new value does not recompile
    jitted = jax.jit(
        lambda p, k, s: opt.cbo_minimize(fn, p, k, alpha=1e4, sigma=s, dt=0.05, max_steps=500)
    )
    sol = jitted(particles, key, 1.0)
    assert isinstance(sol, js._core.AbstractSolution)
    assert sol.result == js.RESULTS.successful
    np.testing.assert_allclose(sol.value, 0.3, atol=2e-2)
    assert sol.stats["spread"] <= 1e-3 + 1e-3 * float(jnp.linalg.norm(sol.value))
    assert sol.stats["num_evaluations"] == 64 * (sol.stats["num_steps"] + 1)
    # the same key gives the same numbers under vmap
    keys = jnp.stack([key, jax.random.key(2)])
    batched = jax.vmap(lambda k: jitted(particles, k, 1.0).value)(keys)
    np.testing.assert_allclose(batched[0], sol.value, rtol=1e-10)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(solver, particles, key):
        return jax.lax.fori_loop(
            0, 20, lambda i, s: solver.step(fn, s), solver.init(fn, particles, key)
        )

    a = run(opt.CBO(alpha=1e4, sigma=1.0, dt=0.05), particles, key)
    b = run(opt.CBO(alpha=50.0, sigma=0.7, dt=0.02), particles, key)  # no new trace
    assert not jnp.allclose(a.consensus, b.consensus)

    # pytree particles: each leaf with the particle axis first
    tree = {"a": particles[:, :2], "b": particles[:, 2]}
    tree_fn = lambda x: jnp.sum((x["a"] - 0.3) ** 2) + (x["b"] - 0.3) ** 2
    tree_sol = opt.cbo_minimize(tree_fn, tree, key, alpha=1e4, sigma=1.0, dt=0.05)
    np.testing.assert_allclose(tree_sol.value["b"], 0.3, atol=2e-2)


def test_failures_are_result_codes_and_raise_with_throw():
    fn = lambda x: jnp.sum((x - 0.3) ** 2)
    particles = jax.random.uniform(jax.random.key(0), (8, 2), minval=-2.0, maxval=2.0)
    key = jax.random.key(1)
    capped = opt.cbo_minimize(fn, particles, key, max_steps=3, throw=False)
    assert capped.result == js.RESULTS.max_steps_reached
    with pytest.raises(RuntimeError, match="max_steps_reached"):
        opt.cbo_minimize(fn, particles, key, max_steps=3)
    nan_fn = lambda x: jnp.where(x[0] > 10.0, 0.0, jnp.nan)
    nonfinite = opt.cbo_minimize(nan_fn, particles, key, max_steps=3, throw=False)
    assert nonfinite.result == js.RESULTS.nonfinite and nonfinite.stats["num_steps"] == 0


@pytest.mark.float32
def test_float32():
    fn = lambda x: jnp.sum((x - 0.3) ** 2)
    particles = jax.random.uniform(jax.random.key(0), (64, 3), jnp.float32, -2.0, 2.0)
    sol = jax.jit(lambda p, k: opt.cbo_minimize(fn, p, k, alpha=1e4, sigma=1.0, dt=0.05))(
        particles, jax.random.key(1)
    )
    assert sol.value.dtype == jnp.float32 and sol.result == js.RESULTS.successful
    np.testing.assert_allclose(sol.value, 0.3, atol=2e-2)


def test_bad_input():
    fn = lambda x: jnp.sum(x**2)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="at least 2 particles"):
        opt.cbo_minimize(fn, jnp.ones((1, 3)), key)
    with pytest.raises(ValueError, match="dt"):
        opt.cbo_minimize(fn, jnp.ones((5, 3)), key, dt=-0.01)
    with pytest.raises(ValueError, match="sigma"):
        opt.CBO(sigma=-1.0)
    with pytest.raises(ValueError, match="leading particle axis"):
        opt.cbo_minimize(fn, {"a": jnp.ones((5, 2)), "b": jnp.ones((4,))}, key)
    with pytest.raises(ValueError, match="scalar"):
        opt.cbo_minimize(lambda x: x, jnp.ones((5, 3)), key)
    with pytest.raises(TypeError, match="floating"):
        opt.cbo_minimize(fn, jnp.ones((5, 3), jnp.int32), key)
    with pytest.raises(ValueError, match="max_steps"):
        opt.cbo_minimize(fn, jnp.ones((5, 3)), key, max_steps=0)
