"""Rectified flow: the flow-matching loss, reflow training on coupled pairs, and straightness."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._core import check_floating, check_shape
from ._boss import sample_path
from ._dpm_solver_pp import DPMSolverPP
from ._model import Model
from ._sample import validate_sampling_inputs
from ._sampler import AbstractSampler
from ._schedules import AbstractSchedule


def flow_matching_loss(fn, schedule: AbstractSchedule, x0: Array, noise: Array, t: Array) -> Array:
    """The (rectified) flow-matching loss of a velocity network on pairs `(x0, noise)`:

    `mean ||fn(x_t, t) - (α'(t) x0 + σ'(t) noise)||^2`, `x_t = α(t) x0 + σ(t) noise`,

    i.e. on `FlowMatching()` `x_t = (1 - t) x0 + t noise` with target `noise - x0`. `fn` is
    called on one example at a time (vmapped over axis 0 of `x0`, `noise` and `t`), so it is
    the `fn` of `Model(fn, schedule, prediction="velocity")` if it also accepts a batch.
    Differentiable in `fn`'s parameters (an `equinox.Module`); `reflow` trains with it.

    **Example:**

    ```python
    sched = js.diffusion.FlowMatching()
    noise = jax.random.normal(jax.random.key(0), (64, 2))
    x0 = jnp.full_like(noise, 2.0)  # all data at 2.0: x_t = (1 - t) 2 + t z, straight paths
    t = jax.random.uniform(jax.random.key(1), (64,), minval=0.01, maxval=0.99)
    exact = lambda x, t: (x - 2.0) / t  # their velocity z - 2, from x_t alone
    assert js.diffusion.flow_matching_loss(exact, sched, x0, noise, t) < 1e-10
    assert js.diffusion.flow_matching_loss(lambda x, t: 0 * x, sched, x0, noise, t) > 1.0
    ```
    """
    alpha, sigma, dalpha, dsigma = jax.vmap(schedule.alpha_sigma_derivatives)(t)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    alpha, sigma, dalpha, dsigma = (c.reshape(shape) for c in (alpha, sigma, dalpha, dsigma))
    x_t = alpha * x0 + sigma * noise
    target = dalpha * x0 + dsigma * noise
    return jnp.mean((jax.vmap(fn)(x_t, t) - target) ** 2)


def reflow(
    fn,
    schedule: AbstractSchedule,
    x0: ArrayLike,
    noise: ArrayLike,
    *,
    key: PRNGKeyArray,
    num_iterations: int = 1000,
    batch_size: int = 256,
    optimizer: optax.GradientTransformation | None = None,
    t_min: float = 1e-3,
    t_max: float = 1.0 - 1e-3,
):
    """Train a velocity network on pairs `(x0[i], noise[i])` by the flow-matching loss.

    With independent pairs (data, fresh noise) this trains a (1-)rectified flow; with the
    pairs a model's own ODE couples (`x0 = sample(sampler, model, noise, ts)`) it is one
    *reflow*: the new flow's paths are straighter (Liu et al., Theorem 3.6: the straightness
    of the k-rectified flow decays like O(1/k)), so few-step Euler sampling is more accurate.
    The time is drawn uniformly in `[t_min, t_max]`, minibatches with replacement.

    A pure function of its inputs, run in one jitted `lax.scan`.

    **Arguments:**

    - `fn`: an `equinox.Module` velocity network `fn(x, t)` on one example (see
      `flow_matching_loss`); its array leaves are trained.
    - `schedule`: the path (e.g. `FlowMatching()`).
    - `x0`, `noise`: the pairs, same shape, axis 0 the pair index.
    - `key`, `num_iterations`, `batch_size`: the minibatch draws and their number.
    - `optimizer`: an optax optimiser (default `optax.adam(3e-3)`).

    **Returns:** `(fn, losses)`: the trained network and the loss at each iteration.

    **Example:**

    ```python
    sched = js.diffusion.FlowMatching()

    class Net(eqx.Module):  # a small MLP on (x, t), any leading axes
        w1: jax.Array
        w2: jax.Array

        def __call__(self, x, t):
            h = jnp.concatenate([x, jnp.broadcast_to(t, x.shape[:-1] + (1,))], -1)
            return jnp.tanh(h @ self.w1) @ self.w2

    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    net = Net(0.5 * jax.random.normal(k1, (2, 32)), 0.1 * jax.random.normal(k2, (32, 1)))
    # data at -1 and +1 with independent noise: the 1-rectified flow
    x0 = jnp.sign(jax.random.normal(k3, (512, 1)))
    noise = jax.random.normal(k4, (512, 1))
    net, losses = js.diffusion.reflow(net, sched, x0, noise, key=k1, num_iterations=300)
    assert losses[-50:].mean() < losses[:10].mean()
    model = js.diffusion.Model(net, sched, prediction="velocity")
    ts = js.diffusion.timesteps(sched, 16, spacing="uniform")
    assert js.diffusion.straightness(model, noise[:64], ts) >= 0
    ```

    **Reference:** Liu, Gong, Liu, "Flow Straight and Fast: Learning to Generate and Transfer
    Data with Rectified Flow", ICLR 2023 (arXiv:2209.03003), Algorithm 1.
    """
    x0, noise = jnp.asarray(x0), jnp.asarray(noise)
    check_floating("x0", x0)
    check_shape("noise", noise.shape, x0.shape, "`x0`")
    if x0.ndim < 1 or x0.shape[0] < 1:
        raise ValueError("`x0` must hold at least one pair along axis 0")
    for name, value in (("num_iterations", num_iterations), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
    optimizer = optax.adam(3e-3) if optimizer is None else optimizer
    params, static = eqx.partition(fn, eqx.is_inexact_array)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)

    def loss(params, x, z, t):
        return flow_matching_loss(eqx.combine(params, static), schedule, x, z, t)

    @jax.jit
    def train(params, opt_state, key):
        def body(carry, key):
            params, opt_state = carry
            k1, k2 = jax.random.split(key)
            idx = jax.random.randint(k1, (batch_size,), 0, x0.shape[0])
            t = jax.random.uniform(k2, (batch_size,), x0.dtype, t_min, t_max)
            value, grads = jax.value_and_grad(loss)(params, x0[idx], noise[idx], t)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        keys = jax.random.split(key, num_iterations)
        (params, _), losses = jax.lax.scan(body, (params, opt_state), keys)
        return params, losses

    # optax mixes its int32 step count with floats; allow that under strict promotion too.
    with jax.numpy_dtype_promotion("standard"):
        params, losses = train(params, opt_state, key)
    return eqx.combine(params, static), losses


def straightness(
    model: Model,
    x_T: ArrayLike,
    ts: ArrayLike,
    *,
    sampler: AbstractSampler | None = None,
) -> Array:
    """How far a model's ODE paths are from straight lines (0 for straight paths):

    `S = 1/|T| ∫ E ||(x(t_end) - x(t_start)) / (t_end - t_start) - v(x(t), t)||^2 dt`

    (Liu et al.'s straightness, in the flow's own time), along paths from the noise `x_T`
    (axis 0 the batch) sampled on `ts` with `sampler` (default `DPMSolverPP(order=3)`), the
    integral by the trapezoidal rule on `ts`.

    **Example:**

    ```python
    sched = js.diffusion.FlowMatching()
    # all data at 2.0: the exact velocity has straight paths
    straight = js.diffusion.Model(lambda x, t: (x - 2.0) / t, sched, prediction="velocity")
    # two points at -1 and 1: the paths bend where they split
    bent = js.diffusion.Model(
        lambda x, t: jnp.tanh((1 - t) * x / t**2), sched, prediction="x0")
    x_T = jax.random.normal(jax.random.key(0), (64, 1))
    ts = js.diffusion.timesteps(sched, 32, spacing="uniform")
    assert js.diffusion.straightness(straight, x_T, ts) < 1e-6
    assert js.diffusion.straightness(bent, x_T, ts) > 0.01
    ```

    **Reference:** Liu, Gong, Liu, "Flow Straight and Fast", ICLR 2023, Definition 3.5.
    """
    sampler = DPMSolverPP(order=3) if sampler is None else sampler
    if sampler.is_stochastic():
        raise ValueError(f"`sampler` must be deterministic, got {type(sampler).__name__}")
    model, x_T, ts = validate_sampling_inputs(sampler, model, x_T, ts, None, None)
    if x_T.ndim == 0:
        raise ValueError("`x_T` must be a batch of noise samples (at least 1-D)")
    path = sample_path(sampler, model, x_T, ts)
    chord = (path[-1] - path[0]) / (ts[-1] - ts[0])
    v = jax.vmap(model.velocity)(path, ts)
    dev = (v - chord).reshape(ts.shape[0], x_T.shape[0], -1)
    sq = jnp.mean(jnp.sum(dev * dev, axis=-1), axis=-1)  # (len(ts),)
    dt = jnp.abs(jnp.diff(ts))
    return jnp.sum(0.5 * (sq[1:] + sq[:-1]) * dt) / jnp.abs(ts[-1] - ts[0])
