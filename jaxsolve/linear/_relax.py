"""Learning to Relax: an online bandit over SOR's relaxation factor omega.

Khodak, Chow, Balcan and Talwalkar ("Learning to Relax: Setting Solver Parameters Across a
Sequence of Linear System Instances", ICLR 2024) solve a sequence of related systems with SOR
and choose each system's omega from a grid by a multi-armed bandit whose only feedback is the
number of iterations the chosen omega took. With the Tsallis-INF bandit the total number of
iterations approaches that of the best fixed omega in hindsight (regret O(sqrt(K T))).
Tsallis-INF: Zimmert & Seldin, "Tsallis-INF: An Optimal Algorithm for Stochastic and
Adversarial Bandits", JMLR 2021.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .._core import is_concrete


class BanditState(NamedTuple):
    """`loss_estimates`: importance-weighted cumulative normalised costs per arm;
    `num_rounds`: rounds played so far.

    **Example:**

    ```python
    bandit = js.linear.OmegaBandit(jnp.linspace(1.0, 1.9, 4), max_cost=100.0)
    state = bandit.init()  # a BanditState: loss_estimates per arm, num_rounds
    arm, probs = bandit.propose(state, jax.random.PRNGKey(0))
    state = bandit.update(state, arm, 40.0, probs)
    print(state.loss_estimates, state.num_rounds)
    ```
    """

    loss_estimates: jax.Array
    num_rounds: jax.Array


def _tsallis_probabilities(loss_estimates, learning_rate, num_newton: int = 30):
    # p_i = 4 / (eta (L_i - x))^2 with the normaliser x < min L chosen so that sum p = 1.
    # Newton on x from below is monotone: start where the best arm alone has p = 1.
    x = jnp.min(loss_estimates) - 2.0 / learning_rate

    def newton(_, x):
        w = 4.0 / (learning_rate * (loss_estimates - x)) ** 2
        return x - (jnp.sum(w) - 1.0) / (learning_rate * jnp.sum(w**1.5))

    x = lax.fori_loop(0, num_newton, newton, x)
    p = 4.0 / (learning_rate * (loss_estimates - x)) ** 2
    return p / jnp.sum(p)


class OmegaBandit(eqx.Module):
    """An online tuner for SOR's `omega` over a sequence of linear systems (Tsallis-INF).

    Each round: `propose(state, key)` draws an arm (an `omega` from the grid) from the
    Tsallis-INF distribution; run `SOR(omega)` on the next system; then
    `update(state, arm, num_steps, probabilities)` with the number of iterations it took.
    Costs are normalised by `max_cost` into [0, 1] (larger costs are clipped to 1: a few
    times the typical iteration count works better than a loose bound such as `max_steps`,
    because the bandit's progress scales with the normalised gaps between arms). Pure and
    jit-able: the whole sequence can run in one `lax.scan`.

    **Arguments:**

    - `omegas`: the 1-D grid of candidate relaxation factors in (0, 2).
    - `max_cost`: the cost (iterations) that normalises to 1.
    - `learning_rate`: `c` in the learning-rate schedule `eta_t = c / sqrt(t)`.
    - `baseline`: `B` of the reduced-variance loss estimate
      `B + (loss - B) 1[arm played] / p_arm` (Zimmert & Seldin recommend `c = 4`, `B = 1/2`;
      `B = 0` is the plain importance-weighted estimate).

    **Example:**

    ```python
    A = 2.2 * jnp.eye(20) - jnp.eye(20, k=1) - jnp.eye(20, k=-1)
    run = jax.jit(lambda omega, b: js.linear.solve(
        A, b, js.linear.SOR(omega=omega, rtol=1e-6, atol=0.0, max_steps=200), throw=False))
    bandit = js.linear.OmegaBandit(jnp.linspace(1.0, 1.9, 10), max_cost=200.0)
    state = bandit.init()
    for key in jax.random.split(jax.random.PRNGKey(0), 4):  # a sequence of systems
        arm, probs = bandit.propose(state, key)
        sol = run(bandit.omegas[arm], jax.random.normal(key, (20,)))  # omega traced: one compile
        state = bandit.update(state, arm, sol.stats["num_steps"], probs)
    print(bandit.probabilities(state))
    ```

    Reference: Khodak et al., ICLR 2024; Zimmert & Seldin, "Tsallis-INF", JMLR 2021.
    """

    omegas: jax.Array
    max_cost: jax.Array
    learning_rate: jax.Array
    baseline: jax.Array

    def __init__(self, omegas, max_cost, learning_rate=4.0, baseline=0.5):
        omegas = jnp.asarray(omegas)
        if omegas.ndim != 1 or omegas.shape[0] < 2:
            raise ValueError(
                f"`omegas` must be a 1-D grid of at least 2 values, got {omegas.shape}"
            )
        if is_concrete(omegas):
            if not bool(jnp.all((omegas > 0) & (omegas < 2))):
                raise ValueError("`omegas` must lie in (0, 2)")
        self.omegas = omegas
        self.max_cost = jnp.asarray(max_cost)
        self.learning_rate = jnp.asarray(learning_rate)
        self.baseline = jnp.asarray(baseline)

    def init(self) -> BanditState:
        """The state before the first round."""
        return BanditState(jnp.zeros_like(self.omegas), jnp.array(0))

    def probabilities(self, state: BanditState) -> jax.Array:
        """The distribution over arms for the next round."""
        rounds = state.num_rounds.astype(self.omegas.dtype) + 1.0
        learning_rate = self.learning_rate.astype(self.omegas.dtype) / jnp.sqrt(rounds)
        return _tsallis_probabilities(state.loss_estimates, learning_rate)

    def propose(self, state: BanditState, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Draw the next arm: returns `(arm_index, probabilities)`."""
        probs = self.probabilities(state)
        arm = jax.random.choice(key, self.omegas.shape[0], p=probs)
        return arm, probs

    def update(
        self, state: BanditState, arm: jax.Array, cost: jax.Array, probabilities: jax.Array
    ) -> BanditState:
        """Feed back the cost (iterations) of the arm that was played."""
        dtype = self.omegas.dtype
        loss = jnp.clip(jnp.asarray(cost, dtype) / self.max_cost.astype(dtype), 0.0, 1.0)
        baseline = self.baseline.astype(dtype)
        # Unbiased for every arm; subtracting the baseline shrinks the variance of the played
        # arm's estimate when its loss is near it.
        correction = (loss - baseline) / probabilities[arm]
        estimate = jnp.full_like(self.omegas, baseline).at[arm].add(correction)
        return BanditState(state.loss_estimates + estimate, state.num_rounds + 1)


class ContextualOmegaBandit(eqx.Module):
    """The contextual variant: one Tsallis-INF bandit per bin of a scalar context (for example
    the diagonal shift `c` of systems `A + c I`), so that omega can follow the context.

    With a context that predicts the best omega, the total number of iterations can fall below
    that of the best *fixed* omega, towards the instance-optimal one; each bin learns from the
    rounds whose context falls in it.

    **Arguments:**

    - `omegas`, `max_cost`, `learning_rate`, `baseline`: as `OmegaBandit`.
    - `bin_edges`: the increasing 1-D inner edges of the context bins (`len + 1` bins).

    **Example:**

    ```python
    # one OmegaBandit per bin of a scalar context (e.g. a diagonal shift of the system)
    bandit = js.linear.ContextualOmegaBandit(jnp.linspace(1.0, 1.9, 4), jnp.array([0.5]), 100.0)
    state = bandit.init()
    arm, probs = bandit.propose(state, 0.7, jax.random.PRNGKey(0))  # context 0.7: second bin
    state = bandit.update(state, 0.7, arm, 40.0, probs)  # cost: e.g. SOR's num_steps
    print(bandit.probabilities(state, 0.7), bandit.probabilities(state, 0.1))
    ```
    """

    base: OmegaBandit
    bin_edges: jax.Array

    def __init__(self, omegas, bin_edges, max_cost, learning_rate=4.0, baseline=0.5):
        self.base = OmegaBandit(omegas, max_cost, learning_rate, baseline)
        bin_edges = jnp.asarray(bin_edges)
        if bin_edges.ndim != 1:
            raise ValueError(f"`bin_edges` must be 1-D, got shape {bin_edges.shape}")
        self.bin_edges = bin_edges

    @property
    def omegas(self) -> jax.Array:
        return self.base.omegas

    def init(self) -> BanditState:
        num_bins = self.bin_edges.shape[0] + 1
        zeros = jnp.zeros((num_bins, self.omegas.shape[0]), self.omegas.dtype)
        return BanditState(zeros, jnp.zeros((num_bins,), jnp.int32))

    def _bin(self, context):
        return jnp.searchsorted(self.bin_edges, context)

    def _bin_state(self, state: BanditState, index) -> BanditState:
        return BanditState(state.loss_estimates[index], state.num_rounds[index])

    def probabilities(self, state: BanditState, context) -> jax.Array:
        """The distribution over arms for a round with this context."""
        return self.base.probabilities(self._bin_state(state, self._bin(context)))

    def propose(self, state: BanditState, context, key: jax.Array):
        """Draw an arm for a round with this context: `(arm_index, probabilities)`."""
        return self.base.propose(self._bin_state(state, self._bin(context)), key)

    def update(self, state: BanditState, context, arm, cost, probabilities) -> BanditState:
        """Feed back the cost of the arm played in a round with this context."""
        index = self._bin(context)
        new = self.base.update(self._bin_state(state, index), arm, cost, probabilities)
        return BanditState(
            state.loss_estimates.at[index].set(new.loss_estimates),
            state.num_rounds.at[index].set(new.num_rounds.astype(state.num_rounds.dtype)),
        )
