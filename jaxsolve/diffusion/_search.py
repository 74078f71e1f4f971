"""Differentiable sampler search: learn a sampler's time grid (and per-step coefficients)."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._core import check_positive
from ._edm import HeunEDM
from ._model import Model
from ._sample import integrate, sample, validate_sampling_inputs
from ._sampler import AbstractSampler
from ._timesteps import SPACINGS, timesteps


class _ScaledEpsFn(eqx.Module):
    """The model's noise prediction times `1 + c(t)`, `c` piecewise linear over the grid."""

    model: Model
    ts: Array
    coefficients: Array

    def __call__(self, x, t):
        # jnp.interp wants increasing abscissae; the grid decreases.
        c = jnp.interp(t, self.ts[::-1], self.coefficients[::-1])
        return self.model.eps(x, t) * (1 + c)


def corrected_model(model: Model, ts: Array, coefficients: Array | None) -> Model:
    """`model` with its noise prediction scaled by `1 + c(t)` (unchanged if `coefficients` is
    None); `c` takes `coefficients[i]` at `ts[i]` and is linear in between."""
    if coefficients is None:
        return model
    coefficients = jnp.asarray(coefficients)
    fn = _ScaledEpsFn(model, ts[: coefficients.shape[0]], coefficients)
    return Model(fn, model.schedule, prediction="eps")


class LearnedTimesteps(eqx.Module):
    """The result of `learn_timesteps`: a reusable grid (and optional model correction).

    **Fields:**

    - `ts`: the learned decreasing grid, `num_steps + 1` times; pass it to `sample`.
    - `coefficients`: per-step noise-prediction corrections (or None); apply with `.model(m)`.
    - `losses`: the training loss at each iteration (before its update).
    - `initial_ts`: the grid the search started from.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 4)
    # what `learn_timesteps` returns; zero coefficients leave the model unchanged
    found = js.diffusion.LearnedTimesteps(ts, jnp.zeros(4), jnp.zeros(0), ts)
    x = jnp.ones(3)
    assert jnp.allclose(found.model(model).eps(x, 0.5), model.eps(x, 0.5))
    x0 = js.diffusion.sample(js.diffusion.DDIM(), found.model(model), x, found.ts)
    ```
    """

    ts: Array
    coefficients: Array | None
    losses: Array
    initial_ts: Array

    def model(self, model: Model) -> Model:
        """`model` with the learned per-step coefficients applied (unchanged without them)."""
        return corrected_model(model, self.ts, self.coefficients)


def _grid(logits, t_start, t_end):
    # Softmax step lengths: the grid is decreasing with its endpoints exactly where asked.
    fractions = jnp.cumsum(jax.nn.softmax(logits))
    inner = t_start - (t_start - t_end) * fractions[:-1]
    return jnp.concatenate([t_start[None], inner, t_end[None]])


def learn_timesteps(
    sampler: AbstractSampler,
    model: Model,
    x_T: ArrayLike,
    num_steps: int,
    *,
    init: str | ArrayLike = "logsnr",
    t_start: float | None = None,
    t_end: float | None = None,
    teacher: ArrayLike | None = None,
    teacher_sampler: AbstractSampler | None = None,
    teacher_steps: int = 256,
    learn_coefficients: bool = False,
    optimizer: optax.GradientTransformation | None = None,
    num_iterations: int = 300,
    loss_fn: Callable[[Array, Array], Array] | None = None,
    key: PRNGKeyArray | None = None,
) -> LearnedTimesteps:
    """Learn the time grid of `sampler` by gradient descent through `sample`.

    The grid's step lengths are a softmax of free logits (so every grid is decreasing, with
    fixed ends). The loss is the mean squared distance between `sample(sampler, model, x_T,
    ts)` and a high-accuracy teacher on the same noise `x_T`, minimised with an optax optimiser
    in one jitted `lax.scan`. Optionally it also learns per-step coefficients `c_i`, which scale
    the noise prediction by `1 + c_i` at step `i` (a learned correction of the truncation error,
    in the spirit of the per-step coefficients of S³/DS-Solver). The result is a reusable grid:
    a few dozen training samples usually suffice, and it transfers to new noise.

    **Arguments:**

    - `sampler`, `model`: as for `sample` (a deterministic sampler; stochastic ones need `key`,
      whose noise is then held fixed during the search).
    - `x_T`: the training noise, e.g. `(32, *shape)`.
    - `num_steps`: the grid's number of steps.
    - `init`: the starting grid: a spacing name (see `timesteps`) or a decreasing array of
      `num_steps + 1` times.
    - `t_start`, `t_end`: the fixed ends (default: the schedule's, or those of `init`).
    - `teacher`: the target samples; if None they are computed with `teacher_sampler`
      (default `HeunEDM()`) on a log-SNR grid of `teacher_steps` steps.
    - `learn_coefficients`: also learn the per-step coefficients.
    - `optimizer`: an optax transformation (default `optax.adam(1e-2)`).
    - `num_iterations`: the number of optimiser steps.
    - `loss_fn`: `loss_fn(x, target) -> scalar` (default: mean squared error).

    **Returns:** a `LearnedTimesteps` (`.ts`, `.coefficients`, `.losses`, `.model(m)`).

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when the data are N(0, 0.5^2): a problem samplers do not solve exactly
    model = js.diffusion.Model(
        lambda x, t: sched.sigma(t) * x / (0.25 * sched.alpha(t) ** 2 + sched.sigma(t) ** 2), sched
    )
    x_train = jax.random.normal(jax.random.key(0), (8, 2))
    # the exact flow scales the noise by std(t_end) / std(t_start): the teacher in closed form
    std = lambda t: jnp.sqrt(0.25 * sched.alpha(t) ** 2 + sched.sigma(t) ** 2)
    teacher = x_train * std(1e-3) / std(1.0)
    sampler = js.diffusion.DDIM()
    found = js.diffusion.learn_timesteps(sampler, model, x_train, 4, teacher=teacher,
                                         num_iterations=10)
    assert found.ts.shape == (5,) and float(found.losses[-1]) < float(found.losses[0])
    x0 = js.diffusion.sample(sampler, found.model(model), x_train, found.ts)
    ```

    **References:** Liu et al., "A Unified Sampling Framework for Solver Searching of Diffusion
    Probabilistic Models" (S³), ICLR 2024; Wang et al., "Differentiable Solver Search for Fast
    Diffusion Sampling" (DS-Solver), 2025; Watson et al., "Learning Fast Samplers for Diffusion
    Models by Differentiating Through Sample Quality", ICLR 2022.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"`num_steps` must be a positive int, got {num_steps!r}")
    if (
        isinstance(num_iterations, bool)
        or not isinstance(num_iterations, int)
        or num_iterations < 1
    ):
        raise ValueError(f"`num_iterations` must be a positive int, got {num_iterations!r}")
    check_positive("teacher_steps", teacher_steps)
    x_T = jnp.asarray(x_T)
    dtype = x_T.dtype
    schedule = model.schedule
    if isinstance(init, str):
        if init not in SPACINGS:
            raise ValueError(f"`init` must be one of {', '.join(map(repr, SPACINGS))} or an array")
        ts0 = timesteps(schedule, num_steps, init, t_start, t_end, dtype=dtype)
    else:
        ts0 = jnp.asarray(init, dtype)
        if ts0.shape != (num_steps + 1,):
            raise ValueError(
                f"`init` must be a grid of num_steps + 1 = {num_steps + 1} times, got shape "
                f"{ts0.shape}"
            )
        if t_start is not None:
            ts0 = ts0.at[0].set(t_start)
        if t_end is not None:
            ts0 = ts0.at[-1].set(t_end)
    # Validates sampler/model/x_T/grid (decreasing, finite) eagerly.
    model, x_T, ts0 = validate_sampling_inputs(sampler, model, x_T, ts0, key, None)
    t0, t1 = ts0[0], ts0[-1]

    if teacher is None:
        teacher_sampler = HeunEDM() if teacher_sampler is None else teacher_sampler
        spacing = "logsnr" if np.isfinite(float(schedule.logsnr(t1))) else "uniform"
        teacher_ts = timesteps(schedule, teacher_steps, spacing, t0, t1, dtype=dtype)
        teacher = sample(teacher_sampler, model, x_T, teacher_ts, key=key)
    teacher = jnp.asarray(teacher, dtype)
    if teacher.shape != x_T.shape:
        raise ValueError(f"`teacher` must have the shape of `x_T` {x_T.shape}, got {teacher.shape}")
    if loss_fn is None:
        loss_fn = lambda x, target: jnp.mean((x - target) ** 2)
    if optimizer is None:
        optimizer = optax.adam(1e-2)

    params = {"logits": jnp.log(-jnp.diff(ts0))}
    if learn_coefficients:
        params["coefficients"] = jnp.zeros((num_steps,), dtype)

    def grid_and_model(params):
        ts = _grid(params["logits"], t0, t1)
        return ts, corrected_model(model, ts, params.get("coefficients"))

    def loss(params):
        ts, m = grid_and_model(params)
        # The softmax grid is valid by construction (checked eagerly above for ts0); skip the
        # traced grid check, which would turn a round-off duplicate time into a NaN loss.
        x = sampler.output(integrate(sampler, m, x_T, ts, key))
        return loss_fn(x, teacher)

    @jax.jit
    def train(params):
        def body(carry, _):
            params, opt_state = carry
            value, grads = jax.value_and_grad(loss)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, _), losses = lax.scan(body, (params, optimizer.init(params)), None, num_iterations)
        return params, losses

    # optax mixes its int32 step count with floats; allow that under strict promotion too.
    with jax.numpy_dtype_promotion("standard"):
        params, losses = train(params)
    ts = _grid(params["logits"], t0, t1)
    return LearnedTimesteps(ts, params.get("coefficients"), losses, ts0)
