"""`solve`: integrate an ODE or SDE with any solver, controller, adjoint and save times."""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import (
    RESULTS,
    bounded_while_loop,
    check_floating,
    check_increasing,
    check_positive,
    check_result,
    check_scalar,
    make_progress_meter,
    scan_steps,
    tree_all_finite,
)
from ._adjoint import AbstractAdjoint, RecursiveCheckpointAdjoint
from ._controller import AbstractStepSizeController, ConstantStep, PIDController, _rms
from ._saveat import SaveAt
from ._solution import Solution
from ._solver import AbstractSolver, check_compatible, error_order, interpolate
from ._term import AbstractTerm

_WHERE = "jaxsolve.diffeq.solve"
_SAVE_T1 = SaveAt(t1=True)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _stack_leaves(trees):
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


class _Carry(NamedTuple):
    t: Any
    y: Any
    dt: Any
    solver_state: Any
    controller_state: Any
    ys_ts: Any
    steps_ts: Any
    steps_ys: Any
    num_accepted: Any
    num_rejected: Any
    result: Any
    progress: Any


def solve(
    terms: AbstractTerm,
    solver: AbstractSolver,
    t0,
    t1,
    y0,
    *,
    dt0=None,
    args=None,
    saveat: SaveAt = _SAVE_T1,
    controller: AbstractStepSizeController | None = None,
    max_steps: int = 4096,
    adjoint: AbstractAdjoint | None = None,
    throw: bool = True,
    progress=False,
) -> Solution:
    r"""Solve an ODE or SDE from `t0` to `t1`.

    **Arguments:**

    - `terms`: an `ODETerm`, an `SDETerm` (which carries its Brownian motion), or another
      `AbstractTerm` (e.g. `UnderdampedLangevinTerm`).
    - `solver`: a `jaxsolve.diffeq.AbstractSolver`, e.g. `Tsit5()` or `ShARK()`.
    - `t0`, `t1`: scalars with `t0 < t1`.
    - `y0`: the initial value, a pytree of floating arrays; its dtype sets the dtype of time.
    - `dt0`: the (initial) step size. Required for constant steps and for SDEs; for adaptive
      ODE solves `None` picks one (Hairer & Wanner's heuristic).
    - `args`: passed to the vector fields.
    - `saveat`: a `SaveAt`; default: only `t1`.
    - `controller`: `None` or `ConstantStep()` for constant steps, or a `PIDController`.
    - `max_steps`: the most steps (accepted and rejected) to attempt.
    - `adjoint`: `RecursiveCheckpointAdjoint()` (default; reverse and forward mode) or
      `ForwardMode()` (forward mode only, fastest adaptive loop).
    - `throw`: if `True`, a failure (`sol.result` not successful) raises at run time, also
      under `jit`; if `False` the solution carries the code.
    - `progress`: `True` (or a progress meter) shows how far `t` got.

    **Returns:** a `Solution` with `ts`, `ys`, `result` and `stats`.

    With constant steps and concrete `t0`, `t1`, `dt0`, the step grid is known before tracing:
    all Brownian increments are drawn at once (`brownian.increments(grid)`, which shares the
    upper levels of the tree) and the steps run in one `lax.scan`. Otherwise the steps run in a
    bounded while loop, querying `brownian.increment(t, t + dt)` per attempted step.

    **Example:**

    ```python
    import jax, jax.numpy as jnp, jaxsolve as js

    term = js.diffeq.ODETerm(lambda t, y, args: -args * y)
    sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.array([1.0]), args=2.0,
                          controller=js.diffeq.PIDController(rtol=1e-8, atol=1e-8))
    # sol.ys[-1] ≈ exp(-2)
    ```
    """
    check_compatible(solver, terms)
    check_floating("y0", y0)
    y0 = jax.tree.map(jnp.asarray, y0)
    leaves = jax.tree.leaves(y0)
    if not leaves:
        raise ValueError("`y0` must contain at least one array")
    dtype = leaves[0].dtype
    check_scalar("t0", t0)
    check_scalar("t1", t1)
    check_increasing("t0", t0, "t1", t1)
    if not isinstance(saveat, SaveAt):
        raise TypeError(f"`saveat` must be a jaxsolve.diffeq.SaveAt, got {type(saveat).__name__}")
    if controller is None:
        controller = ConstantStep()
    if not isinstance(controller, AbstractStepSizeController):
        raise TypeError(
            "`controller` must be None, ConstantStep() or PIDController(...), got "
            f"{type(controller).__name__}"
        )
    if adjoint is None:
        adjoint = RecursiveCheckpointAdjoint()
    if not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(
            "`adjoint` must be RecursiveCheckpointAdjoint() or ForwardMode(), got "
            f"{type(adjoint).__name__}"
        )
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}")
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be a bool, got {type(throw).__name__}")
    stochastic = terms.brownian is not None
    constant = isinstance(controller, ConstantStep)
    if dt0 is None and (constant or stochastic):
        raise ValueError(
            "`dt0` is required "
            + ("with constant steps (controller=None or ConstantStep())" if constant else "")
            + ("" if constant else "for SDEs (the Brownian tree's `tol` should be below it)")
        )
    if dt0 is not None:
        check_scalar("dt0", dt0)
        check_positive("dt0", dt0)
    if not constant and not solver.adaptive:
        raise ValueError(
            f"{type(solver).__name__} has no embedded error estimate, so it cannot be used "
            "with a PIDController; use constant steps, or an adaptive solver (Heun, Midpoint, "
            "Bosh3, Dopri5, Tsit5 for ODEs; Heun, SRA1, ShARK, SPaRK for SDEs)"
        )
    # Whether the step grid is known before tracing is decided on the inputs as given: inside
    # the caller's `jit`, even `jnp.asarray(0.0)` is a tracer.
    times_given = (t0, t1, dt0)
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    terms.validate(t0, y0, args)
    if saveat.ts is not None:
        save_ts = jnp.asarray(saveat.ts, dtype)
        if _is_concrete(save_ts) and _is_concrete(t0) and _is_concrete(t1):
            lo, hi = float(np.min(save_ts)), float(np.max(save_ts))
            if lo < float(t0) or hi > float(t1):
                raise ValueError(
                    f"`SaveAt.ts` must lie in [t0, t1] = [{float(t0)}, {float(t1)}], got "
                    f"values in [{lo}, {hi}]"
                )
    else:
        save_ts = None
    meter = make_progress_meter(progress, _WHERE)
    eorder = error_order(solver, terms) if not constant else None

    # Python numbers in `args` become weakly typed arrays: traced, so that a new value does not
    # recompile, and still adopting the dtype of whatever they multiply.
    args = jax.tree.map(
        lambda x: jnp.asarray(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x,
        args,
    )
    fixed_grid = constant and all(_is_concrete(x) for x in times_given)
    if fixed_grid:
        t0_value, t1_value = float(times_given[0]), float(times_given[1])
        span = t1_value - t0_value
        ratio = span / float(dt0)
        num_steps = max(1, int(np.ceil(ratio * (1 - 1e-10))))
        if num_steps > max_steps:
            raise ValueError(
                f"`max_steps`={max_steps} is less than the {num_steps} constant steps of size "
                f"dt0={float(dt0)} from t0={t0_value} to t1={t1_value}; increase `max_steps`"
            )
        dt_init, fixed_dt0 = None, (t0_value, t1_value, float(dt0))
        grid = _fixed_grid(fixed_dt0, num_steps, dtype)
        # Drawn here, outside the compiled core, so that inside the caller's `jit` the tree's
        # own constants (t0, t1, depth) stay constants and its descent is folded by XLA.
        increments = terms.brownian.increments(grid) if stochastic else None
    else:
        num_steps, fixed_dt0, increments = None, None, None
        dt_init = None if dt0 is None else jnp.asarray(dt0, dtype)
    return _run(
        terms, solver, controller, adjoint, saveat, meter, t0, t1, y0, dt_init, args, save_ts,
        increments, num_steps=num_steps, fixed_dt0=fixed_dt0, max_steps=max_steps, eorder=eorder, throw=throw,
    )  # fmt: skip


@eqx.filter_jit
def _run(
    terms, solver, controller, adjoint, saveat, meter, t0, t1, y0, dt_init, args, save_ts,
    increments, *, num_steps, fixed_dt0, max_steps, eorder, throw,
):  # fmt: skip
    """The traced part of `solve`, compiled once per static configuration (and inlined when
    `solve` is called inside the user's `jit`)."""
    dtype = t0.dtype
    if num_steps is not None:
        sol = _solve_fixed(
            terms, solver, t0, t1, y0, fixed_dt0, num_steps, args, saveat, save_ts, adjoint,
            meter, dtype, increments,
        )  # fmt: skip
    else:
        if dt_init is None:
            dt_init = _initial_dt(terms, t0, t1, y0, args, controller, eorder)
        sol = _solve_loop(
            terms, solver, controller, t0, t1, y0, dt_init, args, saveat, save_ts, max_steps,
            adjoint, meter, eorder, dtype,
        )  # fmt: skip
    return check_result(sol, sol.result, throw, _WHERE)


def _initial_dt(terms, t0, t1, y0, args, controller: PIDController, eorder):
    """Hairer, Nørsett & Wanner's starting step (Solving ODEs I, §II.4)."""
    f = terms.vector_field
    scale = jax.tree.map(
        lambda y: (
            jnp.asarray(controller.atol).astype(y.dtype)
            + jnp.asarray(controller.rtol).astype(y.dtype) * jnp.abs(y)
        ),
        y0,
    )
    f0 = f(t0, y0, args)
    d0 = _rms(jax.tree.map(lambda y, s: y / s, y0, scale))
    d1 = _rms(jax.tree.map(lambda v, s: v / s, f0, scale))
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-30))
    h0 = h0.astype(t0.dtype)
    y1 = jax.tree.map(lambda y, v: y + h0.astype(y.dtype) * v, y0, f0)
    f1 = f(t0 + h0, y1, args)
    d2 = _rms(jax.tree.map(lambda a, b, s: (a - b) / s, f1, f0, scale)) / h0
    dmax = jnp.maximum(d1, d2)
    h1 = jnp.where(
        dmax <= 1e-15,
        jnp.maximum(1e-6, h0 * 1e-3),
        (0.01 / jnp.maximum(dmax, 1e-30)) ** (1.0 / eorder),
    ).astype(t0.dtype)
    return jnp.minimum(jnp.minimum(100 * h0, h1), t1 - t0)


def _fixed_grid(times, num_steps, dtype):
    """The constant-step grid t0, t0 + dt0, ..., t1 (the last step shortened to end at t1), as
    a compile-time constant."""
    start, end, step = times
    points = np.minimum(start + np.arange(num_steps + 1, dtype=np.float64) * step, end)
    points[-1] = end
    return jnp.asarray(points.astype(np.dtype(dtype)))


def _solve_fixed(
    terms, solver, t0, t1, y0, times, num_steps, args, saveat, save_ts, adjoint, meter, dtype,
    increments,
):  # fmt: skip
    """Constant steps on a grid known before tracing: pre-drawn increments, one `lax.scan`."""
    grid = _fixed_grid(times, num_steps, dtype)
    state = solver.init(terms, grid[0], grid[1], y0, args)
    want_dense = save_ts is not None
    span = t1 - t0

    def body(carry, x):
        y, solver_state, progress = carry
        ta, tb, increment = x
        out = solver.step(terms, ta, tb, y, args, increment, solver_state)
        progress = meter.step(progress, (tb - t0) / span)
        saved = (out.y1 if saveat.steps else None, out.dense_info if want_dense else None)
        return (out.y1, out.state, progress), saved

    (y_final, _, progress), (ys_steps, infos) = scan_steps(
        body,
        (y0, state, meter.init()),
        (grid[:-1], grid[1:], increments),
        checkpoint=adjoint.checkpoint_steps,
    )
    meter.close(progress)
    ts_out, ys_out = [], []
    if saveat.t0:
        ts_out.append(t0[None])
        ys_out.append(jax.tree.map(lambda y: y[None], y0))
    if want_dense:
        index = jnp.clip(jnp.searchsorted(grid[1:], save_ts, side="left"), 0, num_steps - 1)
        step_info = jax.tree.map(lambda x: x[index], infos)
        ys_ts = jax.vmap(interpolate)(grid[index], grid[index + 1], step_info, save_ts)
        ts_out.append(save_ts)
        ys_out.append(ys_ts)
    if saveat.steps:
        ts_out.append(grid[1:])
        ys_out.append(ys_steps)
    if saveat.t1:
        ts_out.append(t1[None])
        ys_out.append(jax.tree.map(lambda y: y[None], y_final))
    result = RESULTS.where(tree_all_finite(y_final), RESULTS.successful, RESULTS.nonfinite)
    count = jnp.asarray(num_steps)
    stats = {
        "num_steps": count,
        "num_accepted_steps": count,
        "num_rejected_steps": jnp.asarray(0),
    }
    return Solution(jnp.concatenate(ts_out), _stack_leaves(ys_out), result, stats)


def _solve_loop(
    terms,
    solver,
    controller,
    t0,
    t1,
    y0,
    dt_init,
    args,
    saveat,
    save_ts,
    max_steps,
    adjoint,
    meter,
    eorder,
    dtype,
):
    """Adaptive steps (or constant steps with traced times) in a bounded while loop."""
    span = t1 - t0
    # Steps that would end within a few ulps of t1 are stretched to end exactly on it, so that
    # no sliver step (and no spurious dt underflow) is left at the end.
    snap = 100 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(t0), jnp.abs(t1))
    snap = jnp.maximum(snap, 100 * jnp.finfo(dtype).eps * span)
    constant = isinstance(controller, ConstantStep)

    def first_t_next(dt):
        return jnp.minimum(t0 + dt, t1)

    state0 = solver.init(terms, t0, first_t_next(dt_init), y0, args)
    ys_ts = None
    if save_ts is not None:
        ys_ts = jax.tree.map(
            lambda y: jnp.broadcast_to(y, (save_ts.shape[0], *y.shape)).astype(y.dtype), y0
        )
    steps_ts = steps_ys = None
    if saveat.steps:
        steps_ts = jnp.full((max_steps,), jnp.inf, dtype)
        steps_ys = jax.tree.map(lambda y: jnp.full((max_steps, *y.shape), jnp.inf, y.dtype), y0)
    zero = jnp.asarray(0)
    init = _Carry(
        t0,
        y0,
        dt_init,
        state0,
        controller.init(dtype),
        ys_ts,
        steps_ts,
        steps_ys,
        zero,
        zero,
        RESULTS.successful,
        meter.init(),
    )

    def cond(c: _Carry):
        return (c.t < t1) & (c.result == RESULTS.successful)

    def body(c: _Carry):
        t_next = c.t + c.dt
        t_next = jnp.where(t_next >= t1 - snap, t1, t_next)
        increment = terms.brownian.increment(c.t, t_next) if terms.brownian is not None else None
        out = solver.step(terms, c.t, t_next, c.y, args, increment, c.solver_state)
        if constant:
            accept, dt_next, cstate, underflow = jnp.array(True), c.dt, c.controller_state, False
        else:
            accept, dt_next, cstate, underflow = controller.adapt(
                c.t, t_next, c.y, out.y1, out.y_error, eorder, c.controller_state
            )
        stalled = t_next <= c.t
        result = RESULTS.where(stalled | underflow, RESULTS.dt_underflow, c.result)
        accept = accept & ~stalled
        y = jax.tree.map(lambda new, old: jnp.where(accept, new, old), out.y1, c.y)
        solver_state = jax.tree.map(
            lambda new, old: jnp.where(accept, new, old), out.state, c.solver_state
        )
        ys_ts = c.ys_ts
        if save_ts is not None:
            mask = accept & (save_ts > c.t) & (save_ts <= t_next)
            values = jax.vmap(lambda s: interpolate(c.t, t_next, out.dense_info, s))(save_ts)
            ys_ts = jax.tree.map(
                lambda v, old: jnp.where(mask.reshape((-1,) + (1,) * (v.ndim - 1)), v, old),
                values,
                c.ys_ts,
            )
        steps_ts, steps_ys = c.steps_ts, c.steps_ys
        if saveat.steps:
            index = c.num_accepted
            steps_ts = steps_ts.at[index].set(jnp.where(accept, t_next, steps_ts[index]))
            steps_ys = jax.tree.map(
                lambda buf, new: buf.at[index].set(jnp.where(accept, new, buf[index])),
                steps_ys,
                out.y1,
            )
        t = jnp.where(accept, t_next, c.t)
        progress = meter.step(c.progress, (t - t0) / span)
        return _Carry(
            t,
            y,
            dt_next,
            solver_state,
            cstate,
            ys_ts,
            steps_ts,
            steps_ys,
            c.num_accepted + accept.astype(c.num_accepted.dtype),
            c.num_rejected + (~accept).astype(c.num_rejected.dtype),
            result,
            progress,
        )

    loop = bounded_while_loop(cond, body, init, max_steps=max_steps, kind=adjoint.loop_kind)
    final: _Carry = loop.value
    meter.close(final.progress)
    result = RESULTS.where(loop.max_steps_reached, RESULTS.max_steps_reached, final.result)
    result = RESULTS.where(
        (result == RESULTS.successful) & ~tree_all_finite(final.y), RESULTS.nonfinite, result
    )
    ts_out, ys_out = [], []
    if saveat.t0:
        ts_out.append(t0[None])
        ys_out.append(jax.tree.map(lambda y: y[None], y0))
    if save_ts is not None:
        ts_out.append(save_ts)
        ys_out.append(final.ys_ts)
    if saveat.steps:
        ts_out.append(final.steps_ts)
        ys_out.append(final.steps_ys)
    if saveat.t1:
        ts_out.append(final.t[None])
        ys_out.append(jax.tree.map(lambda y: y[None], final.y))
    stats = {
        "num_steps": loop.num_steps,
        "num_accepted_steps": final.num_accepted,
        "num_rejected_steps": final.num_rejected,
    }
    return Solution(jnp.concatenate(ts_out), _stack_leaves(ys_out), result, stats)
