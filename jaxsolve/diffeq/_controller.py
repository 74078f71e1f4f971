"""Step-size controllers: constant steps, or a PID controller on an embedded error estimate."""

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core import check_positive, hyperparameter


class AbstractStepSizeController(eqx.Module):
    """The base class of step-size controllers.

    `init(dtype) -> state`; `adapt(t0, t1, y0, y1, y_error, error_order, state)` returns
    `(accept, dt_next, state, underflow)` after an attempted step from `t0` to `t1`. A
    controller other than `ConstantStep` runs in `solve`'s adaptive loop, which needs `dt0` (or
    a controller with `rtol`/`atol`) and a solver with an error estimate.

    **Example** (a graded mesh: accept every step, each `ratio` times the previous one):

    ```python
    class GeometricStep(js.diffeq.AbstractStepSizeController):
        ratio: float = 1.5

        def init(self, dtype):
            return None

        def adapt(self, t0, t1, y0, y1, y_error, error_order, state):
            return jnp.array(True), self.ratio * (t1 - t0), state, jnp.array(False)

    term = js.diffeq.ODETerm(lambda t, y, args: -y)
    sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.ones(()), dt0=0.1,
                          controller=GeometricStep(), saveat=js.diffeq.SaveAt(steps=True))
    # steps 0.1, 0.15, 0.225, 0.3375 (rounded to a few bits), then the last one cut to end at t1
    assert jnp.allclose(sol.ts[:5], jnp.array([0.1, 0.25, 0.475, 0.8125, 1.0]), atol=1e-3)
    assert sol.stats["num_accepted_steps"] == 5
    ```
    """

    @abc.abstractmethod
    def init(self, dtype) -> Any:
        """The controller state."""

    @abc.abstractmethod
    def adapt(self, t0, t1, y0, y1, y_error, error_order, state):
        """Decide whether to accept the step and the size of the next one."""


class ConstantStep(AbstractStepSizeController):
    """Take steps of the constant size `dt0` given to `solve` (the last one is shortened to end
    exactly at `t1`). With a fixed grid `solve` pre-draws all Brownian increments at once and
    runs the steps in `lax.scan`: the fastest way to solve an SDE.

    **Example:**

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: jnp.cos(t))
    sol = js.diffeq.solve(term, js.diffeq.RK4(), 0.0, 1.0, jnp.zeros(()), dt0=0.3,
                          controller=js.diffeq.ConstantStep(),
                          saveat=js.diffeq.SaveAt(steps=True))
    assert jnp.allclose(sol.ts, jnp.array([0.3, 0.6, 0.9, 1.0]))  # the last step is cut short
    assert jnp.allclose(sol.ys, jnp.sin(sol.ts), atol=1e-5)
    ```
    """

    def init(self, dtype):
        return None

    def adapt(self, t0, t1, y0, y1, y_error, error_order, state):
        return jnp.array(True), None, state, jnp.array(False)


def _rms(x):
    leaves = jax.tree.leaves(x)
    total = sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in leaves)
    size = sum(jnp.size(leaf) for leaf in leaves)
    return jnp.sqrt(total / max(size, 1))


class PIDController(AbstractStepSizeController):
    r"""Adaptive step sizes from a local error estimate (Söderlind's PID digital filter).

    The scaled error of a step is `err = RMS(y_error / (atol + rtol * max(|y0|, |y1|)))`; the
    step is accepted when `err <= 1`, and the next step is

    `dt * safety * err_n^(-β1/k) * err_{n-1}^(-β2/k) * err_{n-2}^(-β3/k)`,

    with `β1 = pcoeff + icoeff + dcoeff`, `β2 = -(pcoeff + 2 dcoeff)`, `β3 = dcoeff`, clipped
    to `[factormin, factormax]` (and to at most 1 after a rejection), and `k` the error order:
    the method's order for ODEs, its strong order + 1/2 for SDEs. The default `icoeff=1` (others
    0) is the classical integral controller. For SDEs a rejected step is retried on the same
    Brownian path (the virtual tree answers the same query the same way).

    **Arguments:**

    - `rtol`, `atol`: relative and absolute tolerances (> 0; one may be 0).
    - `pcoeff`, `icoeff`, `dcoeff`: the PID coefficients (Söderlind, 2003; try 0.3, 0.3, 0 for
      SDEs, or 0.4, 0.3, 0 for ODEs).
    - `dtmin`: the smallest step allowed (default: none; a step that no longer moves `t`
      stops the solve with `RESULTS.dt_underflow`).
    - `force_dtmin`: with `dtmin`, accept a step of size `dtmin` even when its error is too
      large (default `True`: useful for SDEs with rough patches); if `False` such a step stops
      the solve with `RESULTS.dt_underflow`.
    - `dtmax`: the largest step (default: none).
    - `factormin`, `factormax`, `safety`: the step may shrink to `factormin * dt` and grow to
      `factormax * dt`; `safety` scales the proposal.

    Every field is a float in the pytree: new values do not recompile.

    **Example:**

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -y)

    def solve(rtol):
        controller = js.diffeq.PIDController(rtol=rtol, atol=1e-2 * rtol)
        return js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 10.0, jnp.ones(()),
                               controller=controller)

    loose, tight = solve(1e-3), solve(1e-6)  # one compilation: tolerances are array fields
    assert loose.stats["num_steps"] < tight.stats["num_steps"]
    assert jnp.allclose(tight.ys[-1], jnp.exp(-10.0), rtol=1e-4)
    ```

    Reference: G. Söderlind, "Digital filters in adaptive time-stepping", ACM TOMS 2003;
    Hairer, Nørsett & Wanner, "Solving ODEs I", §II.4.
    """

    rtol: Any = hyperparameter()
    atol: Any = hyperparameter()
    pcoeff: Any = hyperparameter(0.0)
    icoeff: Any = hyperparameter(1.0)
    dcoeff: Any = hyperparameter(0.0)
    dtmin: Any = hyperparameter(None)
    dtmax: Any = hyperparameter(None)
    factormin: Any = hyperparameter(0.2)
    factormax: Any = hyperparameter(10.0)
    safety: Any = hyperparameter(0.9)
    force_dtmin: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        check_positive("rtol", self.rtol, allow_zero=True)
        check_positive("atol", self.atol, allow_zero=True)
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not isinstance(value, jax.core.Tracer) and float(value) > 1:
                raise ValueError(f"`{name}` must be at most 1, got {float(value)}")
        if (
            not isinstance(self.rtol, jax.core.Tracer)
            and not isinstance(self.atol, jax.core.Tracer)
            and float(self.rtol) == 0
            and float(self.atol) == 0
        ):
            raise ValueError("`rtol` and `atol` cannot both be 0")
        for name in ("dtmin", "dtmax"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_positive("factormin", self.factormin)
        check_positive("factormax", self.factormax)
        check_positive("safety", self.safety)

    def init(self, dtype):
        one = jnp.ones((), dtype)
        return (one, one)  # the two previous scaled errors (1 = neutral)

    def adapt(self, t0, t1, y0, y1, y_error, error_order, state):
        dt = t1 - t0
        dtype = dt.dtype

        def cast(x):
            return jnp.asarray(x).astype(dtype)

        scale = jax.tree.map(
            lambda a, b: (
                cast(self.atol).astype(a.dtype)
                + cast(self.rtol).astype(a.dtype) * jnp.maximum(jnp.abs(a), jnp.abs(b))
            ),
            y0,
            y1,
        )
        ratio = jax.tree.map(lambda e, s: e / s, y_error, scale)
        err = _rms(ratio).astype(dtype)
        finite = jnp.isfinite(err) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(y1)])
        )
        err = jnp.where(finite, err, jnp.inf)
        accept = err <= 1
        k = jnp.asarray(error_order, dtype)
        tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)
        prev1, prev2 = state
        pcoeff, icoeff, dcoeff = cast(self.pcoeff), cast(self.icoeff), cast(self.dcoeff)
        beta1 = (pcoeff + icoeff + dcoeff) / k
        beta2 = -(pcoeff + 2 * dcoeff) / k
        beta3 = dcoeff / k
        safe_err = jnp.maximum(jnp.where(jnp.isfinite(err), err, 1e10), tiny)
        factor_pid = self.safety * safe_err ** (-beta1) * prev1 ** (-beta2) * prev2 ** (-beta3)
        factor_rej = self.safety * safe_err ** (-1.0 / k)
        factor = jnp.where(accept, factor_pid, jnp.minimum(factor_rej, 1.0))
        factor = jnp.clip(factor, self.factormin, self.factormax).astype(dtype)
        dt_next = dt * factor
        if self.dtmax is not None:
            dt_next = jnp.minimum(dt_next, cast(self.dtmax))
        underflow = jnp.array(False)
        if self.dtmin is not None:
            dtmin = cast(self.dtmin)
            # A step at dtmin that is still rejected cannot be improved: accept it anyway
            # (force_dtmin), or stop and say so.
            at_min = dt <= dtmin * (1 + 1e-6)
            if self.force_dtmin:
                accept = accept | (at_min & finite)
            else:
                underflow = (~accept) & at_min
            dt_next = jnp.maximum(dt_next, dtmin)
        new_state = (
            jnp.where(accept, jnp.maximum(safe_err, 1e-4).astype(dtype), prev1),
            jnp.where(accept, prev1, prev2),
        )
        return accept, dt_next, new_state, underflow
