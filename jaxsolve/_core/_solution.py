"""The common base of every family's solution (DESIGN.md section 2).

Every entry point returns a subclass of `AbstractSolution`, so code written against one family
reads another's the same way: `sol.value` (what was computed), `sol.result` (a `RESULTS` item),
`sol.stats` (a dict of counters, at least `"num_steps"`) and `sol.state` (the solver's final
state, for warm starts or to continue with `step`; `None` where a family keeps none).
"""

from typing import Any

import equinox as eqx

from ._results import RESULTS


class AbstractSolution(eqx.Module):
    """What every entry point returns: `value`, `result`, `stats`, `state`.

    Families add their own fields (`diffeq.Solution` also has `ts` and `ys`, with
    `value == ys`).

    **Example:**

    ```python
    from jaxsolve._core import AbstractSolution

    for sol in (js.linear.solve(jnp.eye(2), jnp.ones(2)),
                js.diffeq.solve(js.diffeq.ODETerm(lambda t, y, a: -y), js.diffeq.Euler(),
                                0.0, 1.0, jnp.ones(2), dt0=0.1)):
        assert isinstance(sol, AbstractSolution)
        assert sol.result == js.RESULTS.successful and sol.stats["num_steps"] >= 1
        assert jax.tree.leaves(sol.value)[0].shape[-1] == 2
    ```
    """

    value: eqx.AbstractVar[Any]
    result: eqx.AbstractVar[RESULTS]
    stats: eqx.AbstractVar[dict]
    state: eqx.AbstractVar[Any]
