"""What `sample_solution` returns."""

from typing import Any

import equinox as eqx
from jaxtyping import Array

from .._core import RESULTS


class Solution(eqx.Module):
    """The outcome of `jaxsolve.diffusion.sample_solution` (the same fields as every family's
    solution: `value`, `result`, `stats`, `state`).

    - `value`: the sample at `ts[-1]`, shaped like `x_T` (what `sample` returns).
    - `result`: a `jaxsolve.RESULTS` item: `successful`, `nonfinite` for a sample with NaN or
      inf, or the code of an invalid traced grid (see `sample_solution`).
    - `stats`: a dict with `"num_steps"` (the steps taken, `len(ts) - 1`) and
      `"num_model_evaluations"` (the sampler's declared number of model evaluations; with
      guidance each calls the network twice).
    - `state`: the sampler's final state (e.g. a multistep history), for inspection or to
      continue sampling with `sampler.step`.
    """

    value: Array
    result: RESULTS
    stats: dict[str, Array]
    state: Any
