"""The sampler contract, and the per-step geometry every exponential integrator shares."""

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._core import AbstractSolver
from ._model import Model


def _concrete_positive(value) -> bool:
    """Whether a hyperparameter is concretely > 0 (a traced one is not known to be)."""
    return not isinstance(value, jax.core.Tracer) and float(value) > 0.0


class AbstractSampler(AbstractSolver):
    """A diffusion sampler: integrates the probability-flow ODE (or reverse SDE) along `ts`.

    A sampler is a final `equinox.Module` whose hyperparameters are fields. The family's form of
    the solver contract (the problem `(model, ts)` first, the state last):

    - `init(model, x_T, ts, key) -> state`: the initial state, a pytree of fixed-shape arrays
      (including any multistep history, as fixed-size buffers).
    - `step(model, ts, i, state) -> state`: advance from `ts[i]` to `ts[i + 1]`. `i` is a
      traced int32 scalar and `ts` a (possibly traced) 1-D array, so steps run inside
      `lax.scan`, and gradients flow to `ts` and to the model's parameters. A step to a time
      where `sigma = 0` must be handled explicitly (see `step_geometry`).
    - `output(state) -> x`: the sample held by the state.

    and declares two class-level facts, read by the concrete `is_stochastic` and
    `num_evaluations`:

    - `draws_noise`: `False`, `True`, or the name of the hyperparameter whose positive value
      turns the noise on (`"eta"` for `DDIM`). A traced value is not known to be positive: such
      a sampler draws noise when it is given a `key`.
    - `evaluations_per_step`: the network evaluations (NFE) of one step, an int; or, where it
      depends on a static option, a pair `(option name, {option value: cost})`. A cost is an
      int, or a tuple `(first step, second step, ..., every later step)` for a warm-up.

    `sample(sampler, model, x_T, ts, key=...)` validates the inputs and runs the steps in
    `lax.scan`; `init`/`step` may also be called directly in the user's own jitted loop.

    **Example** (a user's own sampler, and the user's own loop):

    ```python
    class Euler(js.diffusion.AbstractSampler):
        draws_noise = False
        evaluations_per_step = 1

        def init(self, model, x_T, ts, key):
            return x_T

        def step(self, model, ts, i, state):
            return state + (ts[i + 1] - ts[i]) * model.velocity(state, ts[i])

        def output(self, state):
            return state

    sched = js.diffusion.FlowMatching()
    model = js.diffusion.Model(lambda x, t: -x, sched, prediction="velocity")
    ts = js.diffusion.timesteps(sched, 4, spacing="uniform")
    sampler, x_T = Euler(), jnp.ones(3)
    state = jax.lax.fori_loop(0, 4, lambda i, s: sampler.step(model, ts, i, s),
                              sampler.init(model, x_T, ts, None))
    assert jnp.allclose(sampler.output(state), js.diffusion.sample(sampler, model, x_T, ts))
    assert sampler.num_evaluations(4) == 4 and not sampler.is_stochastic()
    ```
    """

    draws_noise: eqx.AbstractClassVar[bool | str]
    evaluations_per_step: eqx.AbstractClassVar[int | tuple[str, dict]]

    @abc.abstractmethod
    def init(
        self, model: Model, x_T: Array, ts: Float[Array, " n"], key: PRNGKeyArray | None
    ) -> Any:
        """Build the initial state at `ts[0]` from `x_T`."""

    @abc.abstractmethod
    def step(self, model: Model, ts: Float[Array, " n"], i: Int[Array, ""], state: Any) -> Any:
        """Advance the state from `ts[i]` to `ts[i + 1]`."""

    @abc.abstractmethod
    def output(self, state: Any) -> Array:
        """The current sample."""

    def is_stochastic(self) -> bool:
        """True when the sampler draws noise (and so needs a `key`); see `draws_noise`."""
        if isinstance(self.draws_noise, str):
            return _concrete_positive(getattr(self, self.draws_noise))
        return self.draws_noise

    def num_evaluations(self, num_steps: int) -> int:
        """The number of model evaluations that `num_steps` steps use (the declared cost; with
        guidance each evaluation calls the network twice); see `evaluations_per_step`."""
        cost = self.evaluations_per_step
        if isinstance(cost, tuple):
            option, costs = cost
            cost = costs[getattr(self, option)]
        if isinstance(cost, int):
            return cost * num_steps
        *warmup, steady = cost
        return sum(warmup[:num_steps]) + steady * max(num_steps - len(warmup), 0)


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
