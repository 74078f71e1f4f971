"""What `solve` returns."""

from typing import Any

import equinox as eqx

from .._core import RESULTS


class Solution(eqx.Module):
    """The result of `jaxsolve.diffeq.solve`.

    - `ts`: the save times (see `SaveAt` for their order).
    - `ys`: the solution at `ts`, with a leading axis of the same length on every leaf.
    - `result`: a `RESULTS` item; `RESULTS.successful` unless the solve failed.
    - `stats`: a dict with `num_steps` (attempted), `num_accepted_steps`,
      `num_rejected_steps`.
    """

    ts: Any
    ys: Any
    result: RESULTS
    stats: dict[str, Any]
