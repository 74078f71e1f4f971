"""What `solve` returns."""

from typing import Any

from .._core import RESULTS, AbstractSolution


class Solution(AbstractSolution):
    """The result of `jaxsolve.diffeq.solve`.

    - `ts`: the save times (see `SaveAt` for their order).
    - `ys`: the solution at `ts`, with a leading axis of the same length on every leaf; also
      available as `value` (the common field of every family's solution).
    - `result`: a `RESULTS` item; `RESULTS.successful` unless the solve failed.
    - `stats`: a dict with `num_steps` (attempted), `num_accepted_steps`,
      `num_rejected_steps`.
    - `state`: the solver state after the last accepted step (e.g. the FSAL derivative), or
      `None`.
    """

    ts: Any
    ys: Any
    result: RESULTS
    stats: dict[str, Any]
    state: Any = None

    @property
    def value(self):
        return self.ys
