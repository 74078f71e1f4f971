"""`invert`: from data back to noise. Exact for BDIA, the standard approximation otherwise."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core import check_shape
from ._bdia import BDIA, BDIAState, ddim_transfer
from ._model import Model
from ._sample import checked_run, integrate, run_steps
from ._sampler import AbstractSampler


def _reject_stochastic(sampler):
    if sampler.is_stochastic():
        raise ValueError(
            f"`invert` needs a deterministic sampler; {type(sampler).__name__} with these "
            "settings draws noise"
        )


def invert(
    sampler: AbstractSampler,
    model: Model,
    x0: ArrayLike,
    ts: Float[ArrayLike, " num_steps+1"],
    *,
    x_prev: ArrayLike | None = None,
    state: BDIAState | None = None,
    throw: bool = True,
) -> Array:
    """Map a sample back to the noise that `sample(sampler, model, ·, ts)` turns into it.

    - `BDIA` (with `gamma > 0`): exact up to round-off. BDIA's steps map *pairs* of consecutive
      samples one-to-one, so inversion needs the sample one step before the end: pass the
      sample at `ts[-2]`. `sample_solution(bdia, ...).state` holds the last two samples, so
      `invert(bdia, model, sol.value, ts, state=sol.state)` needs no second sampling pass; or
      pass the sample at `ts[-2]` as `x_prev` (e.g. `sample(sampler, model, x_T, ts[:-1])`).
      The result is the `x_T` from which `sample` reproduces `x0` (and the sample at `ts[-2]`)
      to round-off. With neither, that sample is estimated by one DDIM inversion step (then
      the result is approximate).
    - Any other deterministic sampler (DDIM, DPMSolverPP, DPMSolver, UniPC, DEIS, GHVB, ...):
      the standard approximate inversion — the sampler's own update run along the reversed
      grid, the model evaluated at the latest known point (as DDIM inversion). Its error
      shrinks as the number of steps grows. `sigma(ts[-1])` must be positive.

    **Arguments:**

    - `sampler`, `model`, `ts`: as for `sample` (`ts` decreasing, from noise to data).
    - `x0`: the sample at `ts[-1]`.
    - `x_prev`: for BDIA, the sample at `ts[-2]`.
    - `state`: for BDIA, the final state of the sampling run, `sample_solution(...).state`
      (its `x_prev` is the sample at `ts[-2]`); give `state` or `x_prev`, not both.
    - `throw`: raise if the result is not finite or a traced `ts` is invalid (as `sample`);
      with `throw=False` the result is returned as is (NaN for an invalid traced grid).

    **Returns:** the noise at `ts[0]`, shaped like `x0`.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    bdia = js.diffusion.BDIA(gamma=1.0)
    sol = js.diffusion.sample_solution(bdia, model, x_T, ts)  # keeps the last two samples
    x_T_again = js.diffusion.invert(bdia, model, sol.value, ts, state=sol.state)
    assert jnp.allclose(x_T_again, x_T, atol=1e-4)
    # equivalently, with the sample at ts[-2] from a second, shorter run
    x1 = js.diffusion.sample(bdia, model, x_T, ts[:-1])
    assert jnp.allclose(js.diffusion.invert(bdia, model, sol.value, ts, x_prev=x1), x_T_again)
    # approximate for other samplers (exact here: the flow of point-mass data is DDIM's update)
    x0 = js.diffusion.sample(js.diffusion.DDIM(), model, x_T, ts)
    assert jnp.allclose(js.diffusion.invert(js.diffusion.DDIM(), model, x0, ts), x_T, atol=1e-3)
    ```

    **References:** Zhang, Lewis, Kleijn, "Exact Diffusion Inversion via Bi-directional
    Integration Approximation", ECCV 2024; Song, Meng, Ermon, "Denoising Diffusion Implicit
    Models", ICLR 2021 (DDIM inversion).
    """
    if isinstance(sampler, AbstractSampler):
        _reject_stochastic(sampler)
    if state is not None:
        if x_prev is not None:
            raise ValueError("give `state` or `x_prev`, not both")
        if isinstance(sampler, BDIA) and not isinstance(state, BDIAState):
            raise TypeError(
                "`state` must be BDIA's final state, `sample_solution(bdia, ...).state`, got "
                f"{type(state).__name__}"
            )
        x_prev = state.x_prev if isinstance(state, BDIAState) else state
    if (
        x_prev is not None
        and isinstance(sampler, AbstractSampler)
        and not isinstance(sampler, BDIA)
    ):
        raise ValueError("`x_prev` and `state` are only used by exactly invertible samplers (BDIA)")

    def run(model, x0, ts):
        if isinstance(sampler, BDIA):
            return _invert_bdia(sampler, model, x0, x_prev, ts), None
        sigma_end = model.schedule.sigma(ts[-1])
        if not isinstance(sigma_end, jax.core.Tracer) and not float(sigma_end) > 0:
            raise ValueError(
                "approximate inversion starts from a noisy point: `ts[-1]` must have sigma > 0, "
                f"got sigma(ts[-1]) = {float(sigma_end)}"
            )
        # The sampler's own update along the reversed grid, in the family's one loop.
        return sampler.output(integrate(sampler, model, x0, ts[::-1], None)), None

    where = "jaxsolve.diffusion.invert"
    return checked_run(run, sampler, model, x0, ts, None, None, throw, where)[0]


def _invert_bdia(sampler, model, x0, x_prev, ts):
    if not isinstance(sampler.gamma, jax.core.Tracer) and float(sampler.gamma) == 0:
        raise ValueError("BDIA with `gamma` = 0 is DDIM and is not exactly invertible")
    if x_prev is not None:
        x_prev = jnp.asarray(x_prev, x0.dtype)
        check_shape("x_prev", x_prev.shape, x0.shape, "`x0`")
    num_steps = ts.shape[0] - 1
    if num_steps == 1:
        # A single step is plain DDIM; invert it the DDIM way.
        (x,) = ddim_transfer(model, x0, ts[1], [ts[0]])
        return x
    if x_prev is None:
        (x_prev,) = ddim_transfer(model, x0, ts[-1], [ts[-2]])
    # The state after the last step, undone step by step down to the one after step 0.
    state = BDIAState(x_prev, x0)
    unstep = lambda i, state: sampler.unstep(model, ts, i, state)
    return run_steps(unstep, state, jnp.arange(num_steps - 1, 0, -1)).x_prev
