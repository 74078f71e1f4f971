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
    - `interpolation`: with `SaveAt(dense=True)`, the dense output behind `evaluate`; else
      `None`.
    - `event_mask`: with `solve(..., event=...)`, a boolean scalar: whether the event fired
      (the solve then stopped at the event time, and `result` is still successful); else
      `None`.

    **Example:**

    ```python
    y0 = {"a": jnp.ones(2), "b": jnp.zeros(())}  # any pytree of arrays
    sol = js.diffeq.solve(js.diffeq.ODETerm(lambda t, y, args: jax.tree.map(lambda x: -x, y)),
                          js.diffeq.Heun(), 0.0, 1.0, y0,
                          saveat=js.diffeq.SaveAt(t0=True, t1=True),
                          controller=js.diffeq.PIDController(rtol=1e-4, atol=1e-6))
    assert sol.ts.shape == (2,) and sol.ys["a"].shape == (2, 2) and sol.ys["b"].shape == (2,)
    assert sol.result == js.RESULTS.successful and sol.value is sol.ys
    stats = sol.stats
    assert stats["num_steps"] == stats["num_accepted_steps"] + stats["num_rejected_steps"]
    ```
    """

    ts: Any
    ys: Any
    result: RESULTS
    stats: dict[str, Any]
    state: Any = None
    interpolation: Any = None
    event_mask: Any = None

    @property
    def value(self):
        return self.ys

    def evaluate(self, t):
        """The solution at time(s) `t` (a scalar or an array of any shape) from the solver's
        dense output; leaves have shape `(*t.shape, *y.shape)`.

        Needs `SaveAt(dense=True)`. Differentiable in `t` and in the inputs of the solve; works
        under `jit` and `vmap`. `t` must lie between `t0` and `t1` (or the event time).
        """
        if self.interpolation is None:
            raise ValueError(
                "`Solution.evaluate` needs the dense output: solve with "
                "`saveat=js.diffeq.SaveAt(dense=True, ...)`"
            )
        return self.interpolation.evaluate(t)
