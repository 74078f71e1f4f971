"""Rectified flow: reflow straightens the paths and cuts the few-step Euler error."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

D = js.diffusion
SCHED = D.FlowMatching()


class Net(eqx.Module):
    """A two-hidden-layer tanh MLP on (x, t), over any leading axes."""

    w1: jax.Array
    b1: jax.Array
    w2: jax.Array
    b2: jax.Array
    w3: jax.Array

    def __init__(self, key, dim, width=32):
        k1, k2, k3 = jax.random.split(key, 3)
        self.w1 = jax.random.normal(k1, (dim + 1, width)) / np.sqrt(dim + 1)
        self.b1 = jnp.zeros(width)
        self.w2 = jax.random.normal(k2, (width, width)) / np.sqrt(width)
        self.b2 = jnp.zeros(width)
        self.w3 = 0.1 * jax.random.normal(k3, (width, dim))

    def __call__(self, x, t):
        h = jnp.concatenate([x, jnp.broadcast_to(t, x.shape[:-1] + (1,))], -1)
        h = jnp.tanh(h @ self.w1 + self.b1)
        return jnp.tanh(h @ self.w2 + self.b2) @ self.w3


# The exact (1-rectified) flow of data at +-1.5: curved where the paths split.
EXACT = D.Model(lambda x, t: 1.5 * jnp.tanh(1.5 * (1 - t) * x / t**2), SCHED, prediction="x0")
FINE = D.timesteps(SCHED, 48, spacing="uniform")
REFERENCE = D.DPMSolverPP(order=3)


def test_flow_matching_loss_is_zero_for_the_exact_velocity_of_a_straight_coupling():
    # Pairs (x0, noise) with x0 = 2: the straight-line velocity noise - x0 is what x_t gives.
    noise = jax.random.normal(jax.random.key(0), (64, 2))
    x0 = jnp.full_like(noise, 2.0)
    t = jax.random.uniform(jax.random.key(1), (64,), minval=0.01, maxval=0.99)
    fn = lambda x, t: (x - 2.0) / t  # the velocity of x_t = (1 - t) 2 + t z
    assert float(D.flow_matching_loss(fn, SCHED, x0, noise, t)) < 1e-20
    assert float(D.flow_matching_loss(lambda x, t: 0 * x, SCHED, x0, noise, t)) > 1.0


def test_reflow_straightens_paths_and_cuts_few_step_error():
    noise = jax.random.normal(jax.random.key(0), (1024, 1))
    x0 = D.sample(REFERENCE, EXACT, noise, FINE)  # the exact flow's coupling
    net, losses = D.reflow(
        Net(jax.random.key(1), 1), SCHED, x0, noise, key=jax.random.key(2), num_iterations=800
    )
    assert np.all(np.isfinite(losses)) and float(losses[-100:].mean()) < float(losses[:10].mean())
    model = D.Model(net, SCHED, prediction="velocity")
    x_T = jax.random.normal(jax.random.key(3), (128, 1))
    s_before = float(D.straightness(EXACT, x_T, FINE))
    s_after = float(D.straightness(model, x_T, FINE))
    assert s_after < 0.1 * s_before, (s_before, s_after)
    # Euler (DDIM) with 1 and 2 NFE against each model's own ODE solution: far more accurate
    # after reflow (also against the original coupling's endpoints).
    target = D.sample(REFERENCE, EXACT, x_T, FINE)
    own = D.sample(REFERENCE, model, x_T, FINE)
    for n in (1, 2):
        ts = D.timesteps(SCHED, n, spacing="uniform")
        before = float(jnp.mean(jnp.abs(D.sample(D.DDIM(), EXACT, x_T, ts) - target)))
        after = float(jnp.mean(jnp.abs(D.sample(D.DDIM(), model, x_T, ts) - own)))
        coupling = float(jnp.mean(jnp.abs(D.sample(D.DDIM(), model, x_T, ts) - target)))
        assert after < 0.5 * before and coupling < 0.5 * before, (n, before, after, coupling)


def test_bad_inputs():
    z = jnp.zeros((8, 1))
    net = Net(jax.random.key(0), 1)
    with pytest.raises(ValueError, match="noise"):
        D.reflow(net, SCHED, z, jnp.zeros((8, 2)), key=jax.random.key(0))
    with pytest.raises(ValueError, match="num_iterations"):
        D.reflow(net, SCHED, z, z, key=jax.random.key(0), num_iterations=0)
    with pytest.raises(ValueError, match="t_min"):
        D.reflow(net, SCHED, z, z, key=jax.random.key(0), t_min=0.5, t_max=0.2)
    with pytest.raises(ValueError, match="deterministic"):
        D.straightness(EXACT, z, FINE, sampler=D.DDIM(eta=1.0))
