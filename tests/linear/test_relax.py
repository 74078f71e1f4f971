"""OmegaBandit (Learning to Relax): a Tsallis-INF bandit over SOR's omega."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxsolve as js
from tests.helpers import poisson_2d


def _play(bandit, mean_costs, key, num_rounds):
    def round_(state, key):
        key_arm, key_noise = jax.random.split(key)
        arm, probs = bandit.propose(state, key_arm)
        cost = mean_costs[arm] + jax.random.uniform(key_noise, (), minval=-5.0, maxval=5.0)
        return bandit.update(state, arm, cost, probs), mean_costs[arm]

    state, costs = lax.scan(round_, bandit.init(), jax.random.split(key, num_rounds))
    return state, costs


def test_regret_is_small_against_the_best_fixed_arm():
    num_arms, num_rounds = 8, 4000
    mean_costs = 40.0 + 10.0 * jnp.abs(
        jnp.arange(num_arms, dtype=jnp.float64) - 5.0
    )  # arm 5 is best
    bandit = js.linear.OmegaBandit(jnp.linspace(1.0, 1.9, num_arms), max_cost=100.0, baseline=0.0)
    state, costs = jax.jit(_play, static_argnums=3)(
        bandit, mean_costs, jax.random.key(0), num_rounds
    )
    regret = float(jnp.sum(costs) - num_rounds * jnp.min(mean_costs))
    uniform_regret = num_rounds * float(jnp.mean(mean_costs) - jnp.min(mean_costs))
    # Tsallis-INF: expected regret <= 4 sqrt(K T) in normalised units (x max_cost).
    assert regret <= 4.0 * np.sqrt(num_arms * num_rounds) * 100.0 / 4
    assert regret <= 0.15 * uniform_regret, (regret, uniform_regret)
    probs = bandit.probabilities(state)
    np.testing.assert_allclose(jnp.sum(probs), 1.0, rtol=1e-12)
    assert int(jnp.argmax(probs)) == 5


def test_bandit_with_sor_prefers_near_optimal_omega():
    grid = 6
    matrix = js.linear.FunctionOperator(poisson_2d(grid), jnp.zeros((grid, grid))).as_matrix()
    omegas = jnp.array([1.0, 1.4, 1.9])
    max_steps = 300
    bandit = js.linear.OmegaBandit(omegas, max_cost=float(max_steps))

    @jax.jit
    def run(key):
        def round_(state, key):
            key_arm, key_b = jax.random.split(key)
            arm, probs = bandit.propose(state, key_arm)
            b = jax.random.normal(key_b, (grid * grid,))
            solver = js.linear.SOR(omega=omegas[arm], rtol=1e-6, atol=0.0, max_steps=max_steps)
            steps = js.linear.solve(matrix, b, solver, throw=False).stats["num_steps"]
            return bandit.update(state, arm, steps, probs), steps

        return lax.scan(round_, bandit.init(), jax.random.split(key, 150))

    state, _ = run(jax.random.key(1))
    # omega = 1.4 is closest to 2 / (1 + sin(pi / 7)) = 1.40 among the three.
    assert int(jnp.argmax(bandit.probabilities(state))) == 1


def test_bad_grid():
    with pytest.raises(ValueError, match="`omegas`"):
        js.linear.OmegaBandit(jnp.array([0.5, 2.5]), max_cost=10.0)
    with pytest.raises(ValueError, match="`omegas`"):
        js.linear.OmegaBandit(jnp.array([1.0]), max_cost=10.0)


def test_contextual_bandit_learns_a_different_arm_per_context():
    # Two contexts with opposite best arms: a single bandit cannot serve both, the
    # contextual one learns each.
    num_rounds = 3000
    omegas = jnp.array([1.0, 1.3, 1.6, 1.9])
    mean_costs = jnp.array([[20.0, 35.0, 50.0, 60.0], [60.0, 50.0, 35.0, 20.0]])
    bandit = js.linear.ContextualOmegaBandit(omegas, jnp.array([0.5]), max_cost=60.0)

    @jax.jit
    def run(key):
        def round_(state, key):
            key_context, key_arm = jax.random.split(key)
            context = jax.random.bernoulli(key_context).astype(jnp.float64)
            arm, probs = bandit.propose(state, context, key_arm)
            cost = mean_costs[context.astype(jnp.int32), arm]
            return bandit.update(state, context, arm, cost, probs), None

        return lax.scan(round_, bandit.init(), jax.random.split(key, num_rounds))[0]

    state = run(jax.random.key(2))
    assert int(jnp.argmax(bandit.probabilities(state, 0.0))) == 0
    assert int(jnp.argmax(bandit.probabilities(state, 1.0))) == 3
    assert int(jnp.sum(state.num_rounds)) == num_rounds
