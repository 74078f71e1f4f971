"""What `sample_solution` returns."""

from typing import Any

from jaxtyping import Array

from .._core import RESULTS, AbstractSolution


class Solution(AbstractSolution):
    """The outcome of `jaxsolve.diffusion.sample_solution`, with the fields every family's
    solution has (`jaxsolve._core.AbstractSolution`).

    - `value`: the sample at `ts[-1]`, shaped like `x_T` (what `sample` returns).
    - `result`: a `jaxsolve.RESULTS` item: `successful`, `nonfinite` for a sample with NaN or
      inf, or `invalid_input` for an invalid traced grid (see `sample_solution`).
    - `stats`: a dict with `"num_steps"` (the steps taken, `len(ts) - 1`) and
      `"num_model_evaluations"` (the sampler's declared number of model evaluations; with
      guidance each calls the network twice).
    - `state`: the sampler's final state (e.g. a multistep history), for inspection or to
      continue sampling with `sampler.step`.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 5)
    sol = js.diffusion.sample_solution(js.diffusion.DPMSolverPP(), model, jnp.ones(3), ts)
    assert sol.result == js.RESULTS.successful and int(sol.stats["num_steps"]) == 5
    assert jnp.allclose(sol.value, sol.state.x) and jnp.allclose(sol.value, 2.0, atol=0.05)
    ```
    """

    value: Array
    result: RESULTS
    stats: dict[str, Array]
    state: Any
