"""Diffusion sampling written the way research code writes it (issue 8, diffusion part).

- An equinox MLP noise predictor as the model's network, `sample` under `eqx.filter_jit`, and
  `eqx.filter_grad` with respect to the MLP's parameters: equal to central finite differences
  (float64) along random parameter directions, with no retrace when the parameters change.
- A learned time grid (softmax step lengths) trained by gradient descent on the distance to the
  exact probability-flow map, one jitted step per iteration: the loss goes down, the grid stays
  valid, and the step is traced once.
- `vmap` over a batch of keys for stochastic samplers equals a Python loop over the keys.

(`SDEDPMSolverPP` passes the same vmap-over-keys check; it is left out because compiling its
Brownian tree costs seconds, and tests/diffusion covers its batching and keys.)
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxsolve as js
from tests.helpers import standard_gaussian_case

D = js.diffusion
F64 = jnp.float64


class NoisePredictor(eqx.Module):
    """eps(x, t) from an MLP on the features (x, t), applied to each sample of a batch."""

    mlp: eqx.nn.MLP

    def __call__(self, x, t):
        times = jnp.broadcast_to(t, (*x.shape[:-1], 1))
        return jax.vmap(self.mlp)(jnp.concatenate([x, times], axis=-1))


@eqx.filter_jit  # one compile instead of one per initialiser op
def _noise_predictor(key):
    mlp = eqx.nn.MLP(3, 2, 16, 2, activation=jax.nn.relu, dtype=F64, key=key)
    return NoisePredictor(mlp)


# Helpers are jitted or in NumPy: op by op, each new leaf shape would compile its own kernels.
def _direction(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype), params)


@eqx.filter_jit
def _tree_dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@eqx.filter_jit
def _moved(net, direction, step):
    return eqx.apply_updates(net, jax.tree.map(lambda v: step * v, direction))


def test_mlp_noise_predictor_gradient_matches_finite_differences():
    net = _noise_predictor(jax.random.key(0))
    schedule = D.VPLinear()
    x_T = jax.random.normal(jax.random.key(1), (8, 2), F64)
    target = jnp.asarray([0.5, -1.0], F64)
    # From t = 0.5: an untrained eps-network at t = 1 (alpha ~ 0.007) would make x0 = (x -
    # sigma eps) / alpha, and the loss, explode.
    ts = D.timesteps(schedule, 6, t_start=0.5)
    sampler = D.DPMSolverPP(order=2)

    def plain_loss(net):
        x0 = D.sample(sampler, D.Model(net, schedule, prediction="eps"), x_T, ts)
        return jnp.mean((x0 - target) ** 2)

    # Traced once for all the parameter values below (the network is an argument).
    loss = eqx.filter_jit(eqx.debug.assert_max_traces(plain_loss, max_traces=1))
    grads = eqx.filter_jit(eqx.filter_grad(plain_loss))(net)
    params = eqx.filter(net, eqx.is_inexact_array)
    grads = eqx.filter(grads, eqx.is_inexact_array)
    # Every weight and bias gets a finite, nonzero gradient (no dead relu layer, no NaN).
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.all(np.isfinite(g)) and np.max(np.abs(g)) > 0 for g in leaves)

    # Central differences along two random directions in parameter space.
    eps = jnp.asarray(1e-6, F64)
    for seed in (2, 3):
        direction = _direction(params, seed)
        fd = (loss(_moved(net, direction, eps)) - loss(_moved(net, direction, -eps))) / (2 * eps)
        np.testing.assert_allclose(_tree_dot(grads, direction), fd, rtol=1e-6)

    # A small gradient-descent step lowers the loss by about step * |grad|^2.
    step = 1e-3
    decrease = loss(net) - loss(_moved(net, grads, jnp.asarray(-step, F64)))
    np.testing.assert_allclose(decrease, step * _tree_dot(grads, grads), rtol=0.05)


class ConditionalNoisePredictor(eqx.Module):
    """eps(x, t, cond) from an MLP on (x, t, label); `cond` is a dict with a non-array leaf."""

    mlp: eqx.nn.MLP

    def __call__(self, x, t, cond):
        extra = jnp.broadcast_to(jnp.stack([t, cond["label"]]), (*x.shape[:-1], 2))
        return jax.vmap(self.mlp)(jnp.concatenate([x, extra], axis=-1))


def test_guided_mlp_gradient_in_network_and_guidance_scale():
    mlp = eqx.filter_jit(eqx.nn.MLP)(
        4, 2, 8, 1, activation=jax.nn.relu, dtype=F64, key=jax.random.key(4)
    )
    net = ConditionalNoisePredictor(mlp)
    schedule = D.VPLinear()
    x_T = jax.random.normal(jax.random.key(5), (6, 2), F64)
    ts = D.timesteps(schedule, 4, t_start=0.5)
    cond = {"label": jnp.asarray(1.0, F64), "name": "cat"}
    uncond = {"label": jnp.asarray(0.0, F64), "name": "null"}

    def plain_loss(net_and_guidance):
        net, guidance = net_and_guidance
        x0 = D.sample(D.DDIM(), D.Model(net, schedule), x_T, ts, guidance=guidance)
        return jnp.mean(x0**2)

    loss = eqx.filter_jit(eqx.debug.assert_max_traces(plain_loss, max_traces=1))
    _, grad_guidance = eqx.filter_jit(eqx.filter_grad(plain_loss))(
        (net, D.Guidance(cond, uncond, 3.0))
    )
    # The scale is a differentiable leaf: d loss / d scale against central differences, each
    # new scale reusing the compiled loss (assert_max_traces).
    eps = 1e-6
    fd = (
        loss((net, D.Guidance(cond, uncond, 3.0 + eps)))
        - loss((net, D.Guidance(cond, uncond, 3.0 - eps)))
    ) / (2 * eps)
    assert abs(float(fd)) > 1e-6
    np.testing.assert_allclose(grad_guidance.scale, fd, rtol=1e-6)


def _grid(logits, t_start, t_end):
    fractions = jnp.cumsum(jax.nn.softmax(logits))
    inner = t_start - (t_start - t_end) * fractions[:-1]
    return jnp.concatenate([t_start[None], inner, t_end[None]])


def test_learned_time_grid_trains_under_jit_without_retracing():
    data, x_T = standard_gaussian_case()
    model = data.model("eps")
    sampler = D.DDIM()
    ts0 = D.timesteps(data.schedule, 4, spacing="uniform")
    t_start, t_end = ts0[0], ts0[-1]
    target = data.flow(x_T, t_start, t_end)

    def loss(logits):
        ts = _grid(logits, t_start, t_end)
        return jnp.mean((D.sample(sampler, model, x_T, ts) - target) ** 2)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def train_step(logits, learning_rate):
        value, grad = jax.value_and_grad(loss)(logits)
        return logits - learning_rate * grad / jnp.linalg.norm(grad), value, grad

    logits = jnp.log(-jnp.diff(ts0))
    # The gradient with respect to the grid, through the softmax, against central differences.
    _, _, grad = train_step(logits, jnp.asarray(0.0, F64))
    direction = jnp.asarray([1.0, -0.5, 0.25, -0.75], F64)
    jitted_loss = jax.jit(loss)
    fd = (jitted_loss(logits + 1e-6 * direction) - jitted_loss(logits - 1e-6 * direction)) / 2e-6
    np.testing.assert_allclose(jnp.dot(grad, direction), fd, rtol=1e-6)

    losses = []
    for _ in range(6):
        logits, value, _ = train_step(logits, jnp.asarray(0.3, F64))
        losses.append(float(value))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.5 * losses[0], losses
    learned = np.asarray(_grid(logits, t_start, t_end))
    assert np.all(np.diff(learned) < 0) and learned[0] == t_start and learned[-1] == t_end


def test_vmap_over_keys_equals_a_loop_over_keys():
    data, x_T = standard_gaussian_case()
    model = data.model("x0")
    ts = jnp.append(D.timesteps(data.schedule, 5), 0.0)
    keys = jax.random.split(jax.random.key(11), 3)
    # Ancestral DDIM draws one normal per step from the key; EDM's churn draws per sample, from
    # the key folded with the sample's index (an inner vmap over the batch).
    for sampler in (D.DDIM(eta=1.0), D.EulerEDM(s_churn=5.0)):
        single = eqx.filter_jit(lambda key: D.sample(sampler, model, x_T, ts, key=key))
        batched = jax.jit(jax.vmap(single))(keys)
        looped = jnp.stack([single(key) for key in keys])
        np.testing.assert_allclose(batched, looped, rtol=1e-12, atol=1e-12)
        # Different keys give different samples (the noise is really drawn per key).
        assert not np.allclose(looped[0], looped[1])
        assert not np.allclose(looped[1], looped[2])
