"""The skeleton shared by the one-evaluation-per-step multistep samplers (DPM-Solver++, DEIS).

Each step evaluates the model once at the current point, combines that output with the
history of earlier ones into candidate updates of orders 1..`order`, takes the order the
history allows (`lower_order`), finishes a final step to sigma = 0 exactly, and pushes the new
output onto the history. A sampler supplies only its candidates.
"""

import abc

import equinox as eqx
from jaxtyping import Array

from ._history import init_history, push, select_order
from ._sampler import AbstractSampler, StepGeometry, finish_step, lower_order, step_geometry


class MultistepState(eqx.Module):
    """The state of a one-evaluation-per-step multistep sampler: the sample and the model
    outputs (and log-SNRs) at the previous grid points, newest first."""

    x: Array
    history: Array
    lams: Array


class AbstractMultistep(AbstractSampler):
    """A multistep exponential integrator of order `order`, one model evaluation per step."""

    order: eqx.AbstractVar[int]
    lower_order_final: eqx.AbstractVar[bool]

    draws_noise = False
    evaluations_per_step = 1

    @abc.abstractmethod
    def candidates(
        self, model, geom: StepGeometry, state: MultistepState
    ) -> tuple[list[Array], Array, Array]:
        """`(updates, output, x0)`: the updates of orders 1..`order` over the step `geom` from
        `state.x`, the model output to remember, and the denoised sample at `geom.s`."""

    def init(self, model, x_T, ts, key):
        history, lams = init_history(x_T, model.schedule.logsnr(ts[0]), self.order - 1)
        return MultistepState(x_T, history, lams)

    def step(self, model, ts, i, state):
        num_steps = ts.shape[0] - 1
        geom = step_geometry(model.schedule, ts[i], ts[i + 1])
        updates, output, x0 = self.candidates(model, geom, state)
        k = lower_order(self.order, i, num_steps, self.lower_order_final)
        x_next = finish_step(geom, select_order(k, updates), x0)
        history, lams = push(state.history, state.lams, output, geom.lam_s)
        return MultistepState(x_next, history, lams)

    def output(self, state):
        return state.x
