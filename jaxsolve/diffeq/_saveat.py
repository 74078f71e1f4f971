"""Which times `solve` returns the solution at."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np


class SaveAt(eqx.Module):
    """Where to save the solution.

    **Arguments:**

    - `t0`: save the initial value.
    - `t1`: save the final value.
    - `ts`: a 1-D array of times between `t0` and `t1`, monotone in the direction of
      integration, saved by dense output: the solver's own continuous extension (Dopri5,
      Tsit5: fourth order), a cubic Hermite interpolant for other ODE solvers. Adaptive SDE
      solves step onto each save time (interpolating a Brownian path would add an O(sqrt(dt))
      error); constant-step SDE solves interpolate linearly between grid points. Costs
      O(steps + saves).
    - `steps`: `True` saves after every accepted step; a positive int `k` after every `k`-th
      accepted step (steps `k, 2k, ...`). The unused tail of the buffer (`max_steps // k`
      long for adaptive solves) is filled with `inf`.
    - `dense`: keep every step's dense output, so that `sol.evaluate(t)` gives the solution at
      any `t` between `t0` and `t1` (the same interpolant as `ts`; it costs a buffer of
      `max_steps` steps' stages for adaptive solves).
    - `fn`: a function `fn(t, y, args)` applied to every saved value (at `t0`, `ts`, `steps`,
      `t1`), so that a summary, not the whole state, is kept; `None` saves `y`. It does not
      apply to `sol.evaluate`, which returns `y`.

    The output `sol.ts`/`sol.ys` concatenates, in this order, `t0`, `ts`, `steps`, `t1`.

    **Example:**

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -y)
    saveat = js.diffeq.SaveAt(t0=True, ts=jnp.array([0.25, 0.5, 0.75]), t1=True)
    sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.ones(()), saveat=saveat,
                          controller=js.diffeq.PIDController(rtol=1e-6, atol=1e-8))
    assert jnp.allclose(sol.ts, jnp.array([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert jnp.allclose(sol.ys, jnp.exp(-sol.ts), rtol=1e-5)

    # dense output, and a saved summary
    saveat = js.diffeq.SaveAt(t1=True, dense=True, fn=lambda t, y, args: y**2)
    sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.ones(()), saveat=saveat,
                          controller=js.diffeq.PIDController(rtol=1e-6, atol=1e-8))
    assert jnp.allclose(sol.ys[-1], jnp.exp(-2.0), rtol=1e-5)
    ts = jnp.linspace(0.0, 1.0, 7)
    assert jnp.allclose(sol.evaluate(ts), jnp.exp(-ts), rtol=1e-5)
    ```
    """

    t0: bool = False
    t1: bool = False
    ts: Any = None
    steps: bool | int = False
    dense: bool = False
    fn: Any = None

    @property
    def every(self) -> int:
        """How many accepted steps lie between two `steps` saves (0: no `steps` saves)."""
        return int(self.steps)

    def __check_init__(self):
        if isinstance(self.steps, bool):
            pass
        elif isinstance(self.steps, (int, np.integer)):
            if self.steps < 1:
                raise ValueError(f"`SaveAt.steps` must be a bool or an int >= 1, got {self.steps}")
        else:
            raise TypeError(
                f"`SaveAt.steps` must be a bool or a positive int, got {type(self.steps).__name__}"
            )
        if self.fn is not None and not callable(self.fn):
            raise TypeError(
                f"`SaveAt.fn` must be a function fn(t, y, args), got {type(self.fn).__name__}"
            )
        for name in ("t0", "t1", "dense"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"`SaveAt.{name}` must be a bool, got {type(getattr(self, name)).__name__}"
                )
        if self.ts is not None:
            if jnp.ndim(self.ts) != 1:
                raise ValueError(
                    f"`SaveAt.ts` must be a 1-D array of times, got shape {jnp.shape(self.ts)}"
                )
            if jnp.shape(self.ts)[0] == 0:
                raise ValueError("`SaveAt.ts` must not be empty")
            try:
                values = np.asarray(self.ts)
            except Exception:  # traced: checked at run time by interpolation only
                values = None
            steps = None if values is None else np.diff(values)
            if steps is not None and np.any(steps < 0) and np.any(steps > 0):
                raise ValueError(
                    "`SaveAt.ts` must be monotone: non-decreasing (or non-increasing, to "
                    "integrate backwards with t1 < t0)"
                )
        if not (self.t0 or self.t1 or self.steps or self.dense or self.ts is not None):
            raise ValueError("`SaveAt` saves nothing: set t0, t1, steps, ts or dense")
