"""BDIA-DDIM: an exactly invertible two-step sampler (bi-directional integration approximation)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._core import hyperparameter
from ._sampler import AbstractSampler


class BDIAState(eqx.Module):
    """BDIA's state: the last two samples (what exact inversion starts from)."""

    x_prev: Array  # the sample at ts[i-1] (equal to x at the first step)
    x: Array  # the sample at ts[i]


def ddim_transfer(model, x, t, targets):
    """DDIM moves of `x` (at time `t`) to each time in `targets`, from one model call.

    `x(t') = α(t') x̂0 + σ(t') ε̂`: the exact solution of the probability-flow ODE when the
    prediction is frozen, in either direction of time.
    """
    schedule = model.schedule
    x0, eps = model.x0_and_eps(x, t)
    return [schedule.alpha(s) * x0 + schedule.sigma(s) * eps for s in targets]


class BDIA(AbstractSampler):
    """BDIA-DDIM: DDIM made exactly invertible by integrating both ways from each point.

    From the two latest samples `x_{i-1}` (at `t_{i-1}`) and `x_i` (at `t_i`), one model call
    at `x_i` gives DDIM moves to both neighbours, and

    `x_{i+1} = γ (x_{i-1} - DDIM(x_i → t_{i-1})) + DDIM(x_i → t_{i+1})`,

    i.e. the step over `[t_{i-1}, t_i]` is re-estimated backwards from `x_i` and its error
    (scaled by `γ`) is carried on. The first step is plain DDIM. The update is solvable for
    `x_{i-1}` given `(x_i, x_{i+1})`, so the map between consecutive *pairs* of samples is a
    bijection that `jaxsolve.diffusion.invert` undoes to round-off from the last two samples:
    the final state of `sample_solution` holds both (`state.x_prev` at `ts[-2]`, `state.x` at
    `ts[-1]`), so `invert(..., state=sol.state)` needs no second sampling pass. `γ = 0` is DDIM (not invertible); `γ = 1` is the symmetric, second-order
    scheme; `0 < γ < 1` is first order and more damped. Inversion divides by `γ`, so round-off
    grows like `γ^{-N}`.

    **Arguments:**

    - `gamma`: in [0, 1]; an array field (a new value does not recompile).

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    sampler = js.diffusion.BDIA(gamma=1.0)
    sol = js.diffusion.sample_solution(sampler, model, x_T, ts)
    assert jnp.allclose(sol.value, 2.0, atol=0.05)
    # the final state carries the last two samples: exact inversion with no second pass
    assert jnp.allclose(sol.state.x_prev, js.diffusion.sample(sampler, model, x_T, ts[:-1]))
    x_T_again = js.diffusion.invert(sampler, model, sol.value, ts, state=sol.state)
    assert jnp.allclose(x_T_again, x_T, atol=1e-4)
    ```

    **Reference:** Zhang, Lewis, Kleijn, "Exact Diffusion Inversion via Bi-directional
    Integration Approximation", ECCV 2024 (arXiv:2307.10829).
    """

    gamma: Array = hyperparameter(1.0)

    def __check_init__(self):
        if not isinstance(self.gamma, jax.core.Tracer) and not 0 <= float(self.gamma) <= 1:
            raise ValueError(f"`gamma` must be in [0, 1], got {float(self.gamma)}")

    draws_noise = False
    evaluations_per_step = 1

    def init(self, model, x_T: ArrayLike, ts: Array, key: PRNGKeyArray | None = None):
        x_T = jnp.asarray(x_T)
        return BDIAState(x_T, x_T)

    def step(self, model, ts: Array, i, state: BDIAState) -> BDIAState:
        # At the first step ts[i - 1] would wrap around; its value is masked out below.
        back, forward = ddim_transfer(model, state.x, ts[i], [ts[jnp.maximum(i - 1, 0)], ts[i + 1]])
        gamma = self.gamma.astype(state.x.dtype)
        x_next = jnp.where(i == 0, forward, gamma * (state.x_prev - back) + forward)
        return BDIAState(state.x, x_next)

    def output(self, state: BDIAState) -> Array:
        return state.x

    def unstep(self, model, ts: Array, i, state: BDIAState) -> BDIAState:
        """Undo step `i` (for `i >= 1`) exactly up to round-off:
        `unstep(model, ts, i, step(model, ts, i, state)) == state`.

        From the samples at `ts[i]` (`state.x_prev`) and `ts[i + 1]` (`state.x`), it recovers
        the one at `ts[i - 1]`.
        """
        x, x_next = state.x_prev, state.x
        back, forward = ddim_transfer(model, x, ts[i], [ts[i - 1], ts[i + 1]])
        return BDIAState((x_next - forward) / self.gamma.astype(x.dtype) + back, x)
