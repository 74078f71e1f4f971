"""The object every nonlinear entry point returns."""

from typing import Any

from jaxtyping import Array

from .._core import RESULTS, AbstractSolution


class Solution(AbstractSolution):
    """The outcome of `root_find`, `fixed_point`, `minimize` or `least_squares`.

    - `value`: the solution, with the pytree structure of `y0`.
    - `result`: a `RESULTS` item (`RESULTS.successful` when the solver's test was met).
    - `stats`: a dict with `"num_steps"` (iterations run) and `"max_steps"`.
    - `state`: the solver's final state (flat arrays), e.g. for warm starts.

    **Example:**

    ```python
    sol = js.nonlinear.root_find(lambda y, _: y**2 - 4.0, js.nonlinear.Newton(), 1.0)
    print(sol.value, sol.result == js.RESULTS.successful, sol.stats["num_steps"])
    ```
    """

    value: Any
    result: RESULTS
    stats: dict[str, Array]
    state: Any
