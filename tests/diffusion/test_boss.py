"""BOSS: the dynamic programme is exact, and its grid beats uniform Euler steps at equal NFE."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from jaxsolve.diffusion._boss import bellman_path
from tests.helpers import GaussianMixtureData, standard_gaussian_case

D = js.diffusion
SCHED = D.FlowMatching()


def test_bellman_path_is_the_exact_minimum():
    # Brute force over every 3-step sub-grid of 9 points, random (upper-triangular) costs.
    rng = np.random.default_rng(0)
    n, k = 9, 3
    costs = np.where(np.triu(np.ones((n, n)), 1) > 0, rng.uniform(size=(n, n)), np.inf)
    path = np.asarray(bellman_path(jnp.asarray(costs), k))
    total = lambda p: sum(costs[a, b] for a, b in zip(p[:-1], p[1:], strict=True))
    best = min(total((0, *mid, n - 1)) for mid in itertools.combinations(range(1, n - 1), k - 1))
    assert path[0] == 0 and path[-1] == n - 1 and np.all(np.diff(path) > 0)
    np.testing.assert_allclose(total(path), best, rtol=1e-12)


def _problems():
    gauss, _ = standard_gaussian_case(SCHED)
    wide = GaussianMixtureData(
        jnp.asarray([0.5, 0.5]),
        jnp.asarray([[1.0, 0.5], [-1.0, -0.5]]),
        jnp.asarray([0.3 * jnp.eye(2), 0.3 * jnp.eye(2)]),
        SCHED,
    )
    return {"gaussian": (gauss.model("x0"), 3), "mixture": (wide.model("x0"), 2)}


@pytest.mark.parametrize("name", ["gaussian", "mixture"])
def test_boss_beats_uniform_euler_at_equal_nfe(name):
    model, dim = _problems()[name]
    x_fit = jax.random.normal(jax.random.key(0), (128, dim), jnp.float64)
    x_new = jax.random.normal(jax.random.key(1), (256, dim), jnp.float64)
    fine = D.timesteps(SCHED, 200, spacing="uniform", dtype=jnp.float64)
    exact = D.sample(D.DPMSolverPP(order=3), model, x_new, fine)
    error = jax.jit(
        lambda ts: jnp.mean(jnp.linalg.norm(D.sample(D.DDIM(), model, x_new, ts) - exact, axis=-1))
    )
    boss = jax.jit(lambda x: D.boss_timesteps(model, x, 4, num_fine=50))(x_fit)
    assert boss.shape == (5,) and np.all(np.diff(np.asarray(boss)) < 0)
    np.testing.assert_allclose([boss[0], boss[-1]], [fine[0], fine[-1]])
    # Chosen on 128 paths, tested on new noise: better than uniform at the same 4 NFE.
    # (The margin is small here, 1-3%: these paths bend evenly; see the report.)
    assert float(error(boss)) < float(error(D.timesteps(SCHED, 4, spacing="uniform")))


def test_bad_inputs():
    model, _ = _problems()["gaussian"]
    x = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="num_steps"):
        D.boss_timesteps(model, x, 0)
    with pytest.raises(ValueError, match="num_fine"):
        D.boss_timesteps(model, x, 8, num_fine=4)
    with pytest.raises(ValueError, match="deterministic"):
        D.boss_timesteps(model, x, 2, num_fine=4, reference=D.DDIM(eta=1.0))
    with pytest.raises(ValueError, match="batch"):
        D.boss_timesteps(model, jnp.zeros(()), 2, num_fine=4)
