"""The sampler contract, and the per-step geometry every exponential integrator shares."""

import abc
from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._core import AbstractSolver
from ._model import Model


class AbstractSampler(AbstractSolver):
    """A diffusion sampler: integrates the probability-flow ODE (or reverse SDE) along `ts`.

    A sampler is a final `equinox.Module` whose hyperparameters are fields. It implements:

    - `init(model, x_T, ts, key) -> state`: the initial state, a pytree of fixed-shape arrays
      (including any multistep history, as fixed-size buffers).
    - `step(model, state, i, ts) -> state`: advance from `ts[i]` to `ts[i + 1]`. `i` is a traced
      int32 scalar and `ts` a (possibly traced) 1-D array, so steps run inside `lax.scan`, and
      gradients flow to `ts` and to the model's parameters. A step to a time where
      `sigma = 0` must be handled explicitly (see `step_geometry`).
    - `output(state) -> x`: the sample held by the state.
    - `num_evaluations(num_steps) -> int`: the number of network evaluations (NFE) used by
      `num_steps` steps (the declared cost; with guidance each evaluation calls the network
      twice).
    - `is_stochastic() -> bool`: whether `init`/`step` need a random key.

    `sample(sampler, model, x_T, ts, key=...)` validates the inputs and runs the steps in
    `lax.scan`; `init`/`step` may also be called directly in the user's own jitted loop.
    """

    @abc.abstractmethod
    def init(
        self, model: Model, x_T: Array, ts: Float[Array, " n"], key: PRNGKeyArray | None
    ) -> Any:
        """Build the initial state at `ts[0]` from `x_T`."""

    @abc.abstractmethod
    def step(self, model: Model, state: Any, i: Int[Array, ""], ts: Float[Array, " n"]) -> Any:
        """Advance the state from `ts[i]` to `ts[i + 1]`."""

    @abc.abstractmethod
    def output(self, state: Any) -> Array:
        """The current sample."""

    @abc.abstractmethod
    def num_evaluations(self, num_steps: int) -> int:
        """The number of model evaluations that `num_steps` steps use."""

    @abc.abstractmethod
    def is_stochastic(self) -> bool:
        """True when the sampler draws noise (and so needs a `key`)."""


class StepGeometry(NamedTuple):
    """Schedule quantities at both ends of a step s -> t, safe for a final step to sigma = 0.

    When `to_zero` (sigma(t) == 0, the explicit last step to clean data), `t`, `alpha_t`,
    `sigma_t`, `lam_t` and `h` refer to a stand-in time halfway through the step, so that the
    regular update stays finite (values and gradients); the sampler then replaces its result by
    `alpha_t_exact * x0_hat(x_s)` with `jnp.where`.
    """

    s: Array
    t: Array
    alpha_s: Array
    sigma_s: Array
    lam_s: Array
    alpha_t: Array
    sigma_t: Array
    lam_t: Array
    h: Array  # lam_t - lam_s > 0
    to_zero: Array
    alpha_t_exact: Array


def step_geometry(schedule, s, t) -> StepGeometry:
    """The `StepGeometry` of the step from time `s` to time `t < s`."""
    to_zero = schedule.sigma(t) == 0
    t_safe = jnp.where(to_zero, 0.5 * (s + t), t)
    alpha_s, sigma_s, lam_s = schedule.alpha(s), schedule.sigma(s), schedule.logsnr(s)
    alpha_t, sigma_t, lam_t = (
        schedule.alpha(t_safe),
        schedule.sigma(t_safe),
        schedule.logsnr(t_safe),
    )
    return StepGeometry(
        s,
        t_safe,
        alpha_s,
        sigma_s,
        lam_s,
        alpha_t,
        sigma_t,
        lam_t,
        lam_t - lam_s,
        to_zero,
        schedule.alpha(t),
    )


def finish_step(geom: StepGeometry, x_next: Array, x0_s: Array) -> Array:
    """`x_next`, or `alpha(t) * x0_hat(x_s)` on a final step to sigma = 0."""
    return jnp.where(geom.to_zero, geom.alpha_t_exact * x0_s, x_next)


def lower_order(order: int, i, num_steps: int, lower_order_final: bool):
    """The order a multistep method can use at step i: limited by the history (i + 1) and,
    for short runs (< 15 steps, as in DPM-Solver++), by the steps left (num_steps - i)."""
    k = jnp.minimum(order, i + 1)
    if lower_order_final and num_steps < 15:
        k = jnp.minimum(k, num_steps - i)
    return k
