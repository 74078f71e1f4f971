"""`solve`: integrate an ODE or SDE with any solver, controller, adjoint and save times.

How gradients flow through adaptive stepping (DESIGN section 2): the accepted step sizes are
treated as constants. The controller sees `stop_gradient` copies of the step's values, so its
decisions (accept or reject, the next step size, the initial step) carry no derivative; the
derivative is that of the numerical solution on the step sequence that was taken, as in diffrax.
Differentiating the step sizes would add the derivative of a discontinuous decision (an
accepted/rejected step), which is not a derivative of the ODE solution and changes sign from one
path to the next. For SDEs the Brownian path is fixed by its key: the query times of the tree are
not differentiated either. `t0` and `t1` remain differentiable (the first step starts at `t0`,
the last one is clipped to end on `t1`).

Under `vmap` an adaptive loop runs until its slowest lane finishes; the finished lanes still run
the loop body (its result is discarded by a select). Their step would have zero length, where
divided differences and square roots of step sizes have infinite derivatives, and `0 * inf` in
the backward pass is NaN: such lanes step instead over a real interval ending at their current
time, whose result is thrown away.

Events (`_event.py`) and the solver-heuristic regularisers (`_regularise.py`) live in the same
loop: after an accepted step the event condition is checked and, if it changed sign, the step is
cut at its root (the loop then stops); the regularisers accumulate per-step values that, unlike
the controller's inputs, keep their gradients. Both force the while loop (not the fixed-grid
scan), as does nothing else. `SaveAt(dense=True)` keeps every accepted step's `DenseInfo` in a
`max_steps` buffer for `Solution.evaluate`.
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._core import (
    RESULTS,
    bounded_while_loop,
    check_floating,
    check_result,
    check_scalar,
    is_concrete,
    make_progress_meter,
    scan_steps,
    tree_all_finite,
)
from ._adjoint import AbstractAdjoint, RecursiveCheckpointAdjoint
from ._controller import AbstractStepSizeController, ConstantStep, _rms
from ._direction import reverse_terms
from ._event import Event, condition, crossed, event_time
from ._interpolation import DenseInterpolation
from ._regularise import Regularise, check_regularise, step_values
from ._saveat import SaveAt
from ._solution import Solution
from ._solver import AbstractSolver, DenseInfo, check_compatible, error_order, interpolate
from ._term import AbstractTerm

_WHERE = "jaxsolve.diffeq.solve"
_SAVE_T1 = SaveAt(t1=True)
# Up to this many `SaveAt.ts`, every step interpolates all of them at once (one vectorised
# evaluation, cheapest for the usual few dozen); above it, a step interpolates only the save
# times it covers, in an inner loop, so the cost is O(steps + saves).
_VECTOR_SAVES = 64


def _stack_leaves(trees):
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


def _quantise(dt):
    """`dt` rounded to 12 significant bits.

    Step sizes are decisions, not values: rounding them changes nothing numerically, but makes
    the loop reproducible bit for bit. Without it, two compilations of the same solve (the
    forward pass, and its rematerialisation on the backward pass) that round a reduction
    differently by one ulp propose step sizes one ulp apart; an SDE path is Hölder-1/2 in time,
    so the Brownian increments over the two steps differ by about the square root of that, the
    next error estimates differ more, and within a few steps the two passes follow different
    step sequences (the gradient then belongs to neither). Rounded, the proposals agree unless
    one lies within an ulp of a rounding boundary.
    """
    mantissa, exponent = jnp.frexp(dt)
    mantissa = jnp.round(mantissa * 4096) / 4096
    return jnp.ldexp(mantissa, exponent).astype(dt.dtype)


def _stop_gradient(tree):
    """`lax.stop_gradient` on the array leaves; other leaves (functions, static data) as is."""
    return jax.tree.map(lambda x: lax.stop_gradient(x) if eqx.is_array(x) else x, tree)


def _saved(p, saveat, tau, y):
    """What is saved of `y` at integration time `tau`: `y`, or `SaveAt.fn(t, y, args)`."""
    if saveat.fn is None:
        return y
    return saveat.fn(p.sign * tau, y, p.args)


def _y0_at_saves(p, saveat):
    """`y0` (saved) at every `SaveAt.ts` (a save buffer's starting content)."""
    return jax.vmap(lambda s: _saved(p, saveat, s, p.y0))(p.save_ts)


def _inf_buffer(length, tree):
    """A buffer of `length` copies of `tree`'s shapes, filled with `inf`."""
    return jax.tree.map(lambda y: jnp.full((length, *y.shape), jnp.inf, y.dtype), tree)


def _leading(tree):
    return jax.tree.map(lambda y: y[None], tree)


class _Carry(NamedTuple):
    t: Any
    y: Any
    dt: Any
    solver_state: Any
    controller_state: Any
    save_index: Any
    ys_ts: Any
    steps_ts: Any
    steps_ys: Any
    num_accepted: Any
    num_rejected: Any
    # Whether the last rejected step was rejected for a non-finite value: a solve that then
    # stalls failed because of NaN/inf (reported as `nonfinite`), not because of stiffness.
    rejected_nonfinite: Any
    result: Any
    progress: Any
    # SaveAt(dense=True): (starts, ends, infos) of the accepted steps, else None.
    dense: Any = None
    # Events: cond_fn at the current point, and whether the event fired; else None.
    event_value: Any = None
    event_fired: Any = None
    # Regularisers: accumulated (and sampled) per-step quantities, else None.
    regularisers: Any = None


class _Problem(NamedTuple):
    """What the compiled core needs besides the static configuration (all in `tau = d t`)."""

    terms: Any
    solver: Any
    controller: Any
    t0: Any
    t1: Any
    y0: Any
    args: Any
    save_ts: Any
    sign: Any = 1
    event: Any = None
    regularise: Any = None


def _check_times(t0, t1, dt0):
    """Eager checks of the time arguments; returns the direction if it is known (else None)."""
    check_scalar("t0", t0)
    check_scalar("t1", t1)
    direction = None
    if is_concrete(t0) and is_concrete(t1):
        if not (np.isfinite(float(t0)) and np.isfinite(float(t1))):
            raise ValueError(f"`t0` and `t1` must be finite, got t0={float(t0)}, t1={float(t1)}")
        direction = 1 if float(t1) >= float(t0) else -1
    if dt0 is not None:
        check_scalar("dt0", dt0)
        if is_concrete(dt0):
            value = float(dt0)
            if value == 0 or not np.isfinite(value):
                raise ValueError(f"`dt0` must be finite and nonzero, got {value}")
            if direction is not None and value * direction < 0:
                raise ValueError(
                    f"`dt0` must have the sign of t1 - t0 (the direction of integration), got "
                    f"dt0={value} with t0={float(t0)}, t1={float(t1)}"
                )
    return direction


def _check_saveat(saveat, t0, t1, direction, dtype):
    """Eager checks of `SaveAt.ts`; returns (save_ts, whether they still need a traced check)."""
    if not isinstance(saveat, SaveAt):
        raise TypeError(f"`saveat` must be a jaxsolve.diffeq.SaveAt, got {type(saveat).__name__}")
    if saveat.ts is None:
        return None, False
    save_ts = jnp.asarray(saveat.ts, dtype)
    if not (is_concrete(save_ts) and direction is not None):
        return save_ts, True
    values = np.asarray(save_ts, np.float64)
    lo, hi = sorted((float(t0), float(t1)))
    if values.min() < lo or values.max() > hi:
        raise ValueError(
            f"`SaveAt.ts` must lie in [t0, t1] = [{float(t0)}, {float(t1)}], got values in "
            f"[{values.min()}, {values.max()}]"
        )
    if np.any(direction * np.diff(values) < 0):
        order = "non-decreasing" if direction > 0 else "non-increasing (t1 < t0)"
        raise ValueError(f"`SaveAt.ts` must be {order} in the direction of integration")
    return save_ts, False


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
    event: Event | None = None,
    regularise: Regularise | None = None,
) -> Solution:
    r"""Solve an ODE or SDE from `t0` to `t1`.

    **Arguments:**

    - `terms`: an `ODETerm`, an `SDETerm` (which carries its Brownian motion), or another
      `AbstractTerm` (e.g. `UnderdampedLangevinTerm`).
    - `solver`: a `jaxsolve.diffeq.AbstractSolver`, e.g. `Tsit5()` or `ShARK()`.
    - `t0`, `t1`: scalars. `t1 < t0` integrates backwards in time (ODEs and SDEs); `t0 == t1`
      returns `y0`. Either may be traced (under `jit`, also with a traced direction).
    - `y0`: the initial value, a pytree of floating arrays; its dtype sets the dtype of time.
    - `dt0`: the (initial) step size, with the sign of `t1 - t0`. Required for constant steps
      and for SDEs; for adaptive ODE solves `None` picks one (Hairer & Wanner's heuristic).
    - `args`: passed to the vector fields; any pytree: arrays, equinox modules (a neural
      network), functions, static data. Gradients flow to its floating-point array leaves.
    - `saveat`: a `SaveAt`; default: only `t1`. `SaveAt.ts` must lie between `t0` and `t1`,
      monotone in the direction of integration (checked at run time when traced).
    - `controller`: `None` or `ConstantStep()` for constant steps, or a `PIDController`.
    - `max_steps`: the most steps (accepted and rejected) to attempt.
    - `adjoint`: `RecursiveCheckpointAdjoint()` (default; reverse mode, cost that follows the
      steps taken), `DirectAdjoint()` (reverse and forward mode) or `ForwardMode()` (forward
      mode only, fastest adaptive loop).
    - `throw`: if `True`, a failure (`sol.result` not successful) raises at run time, also
      under `jit`; if `False` the solution carries the code (`max_steps_reached`, `nonfinite`,
      `dt_underflow`).
    - `progress`: `True` (or a progress meter) shows how far `t` got.
    - `event`: an `Event`: stop where `event.cond_fn(t, y, args)` changes sign (the event time
      is then the last time saved, differentiable; `sol.event_mask` says whether it fired).
    - `regularise`: a `Regularise`: `sol.stats` also carries the differentiable solver-heuristic
      regularisers `R_E`, `R_S` (and their one-step local variants) of Pal et al.

    **Returns:** a `Solution` with `ts`, `ys`, `result` and `stats` (and `evaluate(t)` with
    `SaveAt(dense=True)`).

    **Gradients** through adaptive solves are those of the computed solution with the accepted
    step sizes held constant (as in diffrax); for SDEs the Brownian path is fixed by its key.
    They are correct under `vmap`, where lanes take different numbers of steps.

    With constant steps and concrete `t0`, `t1`, `dt0`, the step grid is known before tracing:
    all Brownian increments are drawn at once (`brownian.increments(grid)`, which shares the
    upper levels of the tree) and the steps run in one `lax.scan`. Otherwise the steps run in a
    bounded while loop, querying `brownian.increment(t, t + dt)` per attempted step. A new
    float in `args`, a new controller tolerance, or new `t0`, `t1`, `dt0` of an adaptive solve
    do not recompile. A fixed grid is a compile-time constant: new Python values of `t0`, `t1`
    or `dt0` with constant steps compile a new grid (pass them as arrays inside your `jit` to
    run the traced loop instead, at the cost of drawing Brownian increments one step at a time).

    **Example:**

    ```python
    import jax.numpy as jnp
    import jaxsolve as js

    term = js.diffeq.ODETerm(lambda t, y, args: -args * y)
    sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.array([1.0]), args=2.0,
                          controller=js.diffeq.PIDController(rtol=1e-6, atol=1e-8))
    assert sol.result == js.RESULTS.successful
    assert jnp.allclose(sol.ys[-1], jnp.exp(-2.0), rtol=1e-5)
    ```
    """
    check_compatible(solver, terms)
    check_floating("y0", y0)
    y0 = jax.tree.map(jnp.asarray, y0)
    leaves = jax.tree.leaves(y0)
    if not leaves:
        raise ValueError("`y0` must contain at least one array")
    dtype = leaves[0].dtype
    direction = _check_times(t0, t1, dt0)
    save_ts, check_saves = _check_saveat(saveat, t0, t1, direction, dtype)
    controller = ConstantStep() if controller is None else controller
    if not isinstance(controller, AbstractStepSizeController):
        raise TypeError(
            "`controller` must be None or a step-size controller (ConstantStep(), PIDController(...) or a subclass of AbstractStepSizeController), got "
            f"{type(controller).__name__}"
        )
    adjoint = RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    if not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(
            "`adjoint` must be RecursiveCheckpointAdjoint(), DirectAdjoint() or ForwardMode(), got "
            f"{type(adjoint).__name__}"
        )
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}")
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be a bool, got {type(throw).__name__}")
    if event is not None and not isinstance(event, Event):
        raise TypeError(
            f"`event` must be None or a jaxsolve.diffeq.Event, got {type(event).__name__}"
        )
    stochastic = terms.brownian is not None
    constant = isinstance(controller, ConstantStep)
    if dt0 is None and (constant or stochastic):
        raise ValueError(
            "`dt0` is required "
            + ("with constant steps (controller=None or ConstantStep())" if constant else "")
            + ("" if constant else "for SDEs (the Brownian tree's `tol` should be below it)")
        )
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
    if event is not None:
        eqx.filter_eval_shape(condition, event, t0, y0, args)
    check_regularise(regularise, solver, controller, terms)
    meter = make_progress_meter(progress, _WHERE)
    eorder = error_order(solver, terms) if not constant else None
    # Python numbers in `args` become weakly typed arrays: traced, so that a new value does not
    # recompile, and still adopting the dtype of whatever they multiply.
    args = jax.tree.map(
        lambda x: jnp.asarray(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x,
        args,
    )
    sign = direction if direction is not None else jnp.where(t1 >= t0, 1, -1).astype(dtype)
    if direction != 1:
        terms = reverse_terms(terms, sign)
    num_steps, fixed_times, increments, dt_init = None, None, None, None
    # An event ends the solve at a time not known in advance: the while loop handles it.
    if (
        constant
        and event is None
        and regularise is None
        and all(is_concrete(x) for x in times_given)
    ):
        tau0, tau1 = direction * float(times_given[0]), direction * float(times_given[1])
        num_steps = int(np.ceil((tau1 - tau0) / abs(float(dt0)) * (1 - 1e-10)))
        if num_steps > max_steps:
            if throw:
                raise ValueError(
                    f"`max_steps`={max_steps} is less than the {num_steps} constant steps of "
                    f"size dt0={float(dt0)} from t0={float(times_given[0])} to "
                    f"t1={float(times_given[1])}; increase `max_steps`"
                )
            # The loop stops after `max_steps` and reports `max_steps_reached`.
            num_steps = None
        else:
            fixed_times = (tau0, tau1, abs(float(dt0)))
            grid = _fixed_grid(fixed_times, num_steps, dtype)
            # Drawn here, outside the compiled core, so that inside the caller's `jit` the
            # tree's own constants (t0, t1, depth) stay constants and its descent is folded.
            if stochastic and num_steps > 0:
                increments = terms.brownian.increments(grid)
    if num_steps is None and dt0 is not None:
        dt_init = jnp.abs(jnp.asarray(dt0, dtype))
    problem = _Problem(
        terms, solver, controller, t0, t1, y0, args, save_ts, event=event, regularise=regularise
    )
    return _run(
        problem, adjoint, saveat, meter, dt_init, increments, sign, num_steps=num_steps,
        fixed_times=fixed_times, max_steps=max_steps, eorder=eorder, throw=throw,
        check_saves=check_saves,
    )  # fmt: skip


@eqx.filter_jit
def _run(
    problem, adjoint, saveat, meter, dt_init, increments, sign, *, num_steps, fixed_times,
    max_steps, eorder, throw, check_saves,
):  # fmt: skip
    """The traced part of `solve`, compiled once per static configuration (and inlined when
    `solve` is called inside the user's `jit`). Works in `tau = sign * t`."""
    sign = jnp.asarray(sign, problem.t0.dtype)
    tau0, tau1 = sign * problem.t0, sign * problem.t1
    save_tau = None if problem.save_ts is None else sign * problem.save_ts
    if check_saves:
        span = jnp.abs(tau1 - tau0)
        slack = 8 * jnp.finfo(tau0.dtype).eps * jnp.maximum(span, jnp.abs(tau1))
        inside = jnp.all((save_tau >= tau0 - slack) & (save_tau <= tau1 + slack))
        monotone = jnp.all(jnp.diff(save_tau) >= 0)
        save_tau = eqx.error_if(
            save_tau,
            ~(inside & monotone),
            "`SaveAt.ts` must lie between t0 and t1 and be monotone in the direction of "
            "integration (checked at run time because the times are traced)",
        )
    problem = problem._replace(t0=tau0, t1=tau1, save_ts=save_tau, sign=sign)
    if num_steps is not None:
        sol = _solve_fixed(problem, saveat, adjoint, meter, fixed_times, num_steps, increments)
    else:
        if dt_init is None:
            dt_init = _initial_dt(problem, eorder)
        sol = _solve_loop(
            problem, saveat, adjoint, meter, lax.stop_gradient(dt_init), max_steps, eorder
        )
    sol = eqx.tree_at(lambda s: s.ts, sol, sol.ts * sign)
    return check_result(sol, sol.result, throw, _WHERE)


def _initial_dt(problem: _Problem, eorder):
    """Hairer, Nørsett & Wanner's starting step (Solving ODEs I, §II.4), not differentiated."""
    terms, controller = problem.terms, problem.controller
    t0, t1, y0, args = _stop_gradient((problem.t0, problem.t1, problem.y0, problem.args))
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
    dt = jnp.minimum(jnp.minimum(100 * h0, h1), t1 - t0)
    # A non-finite vector field gives a NaN step: start with something finite and let the
    # first step report it.
    return jnp.where(jnp.isfinite(dt) & (dt > 0), dt, 1e-6 * jnp.ones_like(dt))


def _fixed_grid(times, num_steps, dtype):
    """The constant-step grid t0, t0 + dt0, ..., t1 (the last step shortened to end at t1), as
    a compile-time constant."""
    start, end, step = times
    points = np.minimum(start + np.arange(num_steps + 1, dtype=np.float64) * step, end)
    points[-1] = end
    return jnp.asarray(points.astype(np.dtype(dtype)))


def _assemble(p, saveat, dense, steps, final):
    """Concatenate the saved (ts, ys) in `SaveAt`'s order: t0, ts, steps, t1.

    `dense` and `steps` hold values already passed through `SaveAt.fn`; `final` is `(t, y)`.
    """
    parts = []
    if saveat.t0:
        parts.append((p.t0[None], _leading(_saved(p, saveat, p.t0, p.y0))))
    if dense is not None:
        parts.append(dense)
    if saveat.steps:
        parts.append(steps)
    if saveat.t1:
        parts.append((final[0][None], _leading(_saved(p, saveat, final[0], final[1]))))
    if not parts:  # SaveAt(dense=True) alone: nothing but `sol.evaluate`
        shapes = jax.eval_shape(lambda: _saved(p, saveat, p.t0, p.y0))
        empty = jax.tree.map(lambda y: jnp.zeros((0, *y.shape), y.dtype), shapes)
        return p.t0[None][:0], empty
    ts, ys = zip(*parts, strict=True)
    return jnp.concatenate(ts), _stack_leaves(ys)


def _solve_fixed(p: _Problem, saveat, adjoint, meter, times, num_steps, increments):
    """Constant steps on a grid known before tracing: pre-drawn increments, one `lax.scan`."""
    dtype = p.t0.dtype
    grid = _fixed_grid(times, num_steps, dtype)
    want_ts = p.save_ts is not None
    every = saveat.every
    if num_steps == 0:  # t0 == t1
        dense = (p.save_ts, _y0_at_saves(p, saveat)) if want_ts else None
        shapes = jax.eval_shape(lambda: _saved(p, saveat, p.t0, p.y0))
        empty = (grid[:0], jax.tree.map(lambda y: jnp.zeros((0, *y.shape), y.dtype), shapes))
        ts, ys = _assemble(p, saveat, dense, empty, (p.t1, p.y0))
        zero = jnp.asarray(0)
        stats = {"num_steps": zero, "num_accepted_steps": zero, "num_rejected_steps": zero}
        interpolation = None
        if saveat.dense:
            info = _leading(DenseInfo(p.y0, p.y0))
            interpolation = DenseInterpolation(grid[:1], grid[:1], info, zero, p.sign, p.t1)
        return Solution(ts, ys, RESULTS.successful, stats, None, interpolation)
    state = p.solver.init(p.terms, grid[0], grid[1], p.y0, p.args)
    span = p.t1 - p.t0
    want_info = want_ts or saveat.dense

    def body(carry, x):
        y, solver_state, progress = carry
        ta, tb, increment = x
        out = p.solver.step(p.terms, ta, tb, y, p.args, increment, solver_state)
        progress = meter.step(progress, (tb - p.t0) / span)
        saved = (
            _saved(p, saveat, tb, out.y1) if every else None,
            out.dense_info if want_info else None,
        )
        return (out.y1, out.state, progress), saved

    (y_final, solver_state, progress), (ys_steps, infos) = scan_steps(
        body,
        (p.y0, state, meter.init()),
        (grid[:-1], grid[1:], increments),
        checkpoint=adjoint.checkpoint_steps,
    )
    meter.close(progress)
    dense = None
    if want_ts:
        index = jnp.clip(jnp.searchsorted(grid[1:], p.save_ts, side="left"), 0, num_steps - 1)
        step_info = jax.tree.map(lambda x: x[index], infos)

        def evaluate(a, b, info, s):
            return _saved(p, saveat, s, interpolate(a, b, info, s, p.solver.dense_weights))

        dense = (p.save_ts, jax.vmap(evaluate)(grid[index], grid[index + 1], step_info, p.save_ts))
    steps = None
    if every:
        steps = (
            grid[1:][every - 1 :: every],
            jax.tree.map(lambda v: v[every - 1 :: every], ys_steps),
        )
    ts, ys = _assemble(p, saveat, dense, steps, (p.t1, y_final))
    result = RESULTS.where(tree_all_finite(y_final), RESULTS.successful, RESULTS.nonfinite)
    count = jnp.asarray(num_steps)
    stats = {"num_steps": count, "num_accepted_steps": count, "num_rejected_steps": jnp.asarray(0)}
    interpolation = None
    if saveat.dense:
        interpolation = DenseInterpolation(
            grid[:-1], grid[1:], infos, count, p.sign, p.t1, p.solver.dense_weights
        )
    return Solution(ts, ys, result, stats, solver_state, interpolation)


def _save_dense(p: _Problem, saveat, c: _Carry, t_end, cutoff, info, accept, loop_kind):
    """Write the dense output of the step `[c.t, t_end]` at the save times it covers (up to
    `cutoff`: `t_end`, or the event time).

    Returns the new `(save_index, ys_ts)`. Few save times: all are interpolated and the covered
    ones selected. Many: an inner loop walks from `save_index` over the covered ones only.
    """
    save_ts = p.save_ts
    num_saves = save_ts.shape[0]

    def value_at(s):
        return _saved(p, saveat, s, interpolate(c.t, t_end, info, s, p.solver.dense_weights))

    if num_saves <= _VECTOR_SAVES:
        mask = accept & (save_ts > c.t) & (save_ts <= cutoff)
        values = jax.vmap(value_at)(save_ts)
        ys_ts = jax.tree.map(
            lambda v, old: jnp.where(mask.reshape((-1,) + (1,) * (v.ndim - 1)), v, old),
            values,
            c.ys_ts,
        )
        return c.save_index + jnp.sum(mask).astype(c.save_index.dtype), ys_ts

    def pending(carry):
        index, _ = carry
        upcoming = save_ts[jnp.minimum(index, num_saves - 1)]
        return accept & (index < num_saves) & (upcoming <= cutoff)

    def write(carry):
        index, ys_ts = carry
        value = value_at(save_ts[index])
        ys_ts = jax.tree.map(lambda buf, v: buf.at[index].set(v), ys_ts, value)
        return index + 1, ys_ts

    loop = bounded_while_loop(
        pending, write, (c.save_index, c.ys_ts), max_steps=num_saves, kind=loop_kind
    )
    return loop.value


def _step_shapes(p: _Problem, dt_init):
    """The shapes of one step's `DenseInfo` (to allocate the dense-output buffer)."""

    def one_step():
        t_next = p.t0 + dt_init
        increment = None
        if p.terms.brownian is not None:
            increment = p.terms.brownian.increment(p.t0, t_next)
        state = p.solver.init(p.terms, p.t0, t_next, p.y0, p.args)
        out = p.solver.step(p.terms, p.t0, t_next, p.y0, p.args, increment, state)
        return out.dense_info

    return jax.eval_shape(one_step)


def _solve_loop(p: _Problem, saveat, adjoint, meter, dt_init, max_steps, eorder):
    """Adaptive steps (or constant steps with traced times) in a bounded while loop."""
    dtype = p.t0.dtype
    t0, t1 = p.t0, p.t1
    span = t1 - t0
    # Steps that would end within a few ulps of t1 are stretched to end exactly on it, so that
    # no sliver step (and no spurious dt underflow) is left at the end.
    snap = 100 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(t0), jnp.abs(t1))
    snap = jnp.maximum(snap, 100 * jnp.finfo(dtype).eps * span)
    constant = isinstance(p.controller, ConstantStep)
    brownian = p.terms.brownian
    event = p.event
    every = saveat.every
    # An SDE's path between two steps is not resolved (its dense output is linear, with an
    # O(sqrt(dt)) error that would swamp a strong order 1.5 solver): steps end on the save
    # times instead, so the saved values are the solver's own.
    clip_to_saves = brownian is not None and p.save_ts is not None

    state0 = p.solver.init(p.terms, t0, jnp.minimum(t0 + dt_init, t1), p.y0, p.args)
    ys_ts, save_index = None, jnp.asarray(0)
    if p.save_ts is not None:
        # Save times equal to t0 hold y0 from the start.
        ys_ts = _y0_at_saves(p, saveat)
        save_index = jnp.sum(p.save_ts <= t0).astype(save_index.dtype)
    steps_ts = steps_ys = None
    if every:
        num_slots = max_steps // every
        steps_ts = jnp.full((num_slots,), jnp.inf, dtype)
        steps_ys = _inf_buffer(num_slots, jax.eval_shape(lambda: _saved(p, saveat, t0, p.y0)))
    dense = None
    if saveat.dense:
        shapes = _step_shapes(p, dt_init)
        dense = (
            jnp.full((max_steps,), jnp.inf, dtype),
            jnp.full((max_steps,), jnp.inf, dtype),
            jax.tree.map(lambda x: jnp.zeros((max_steps, *x.shape), x.dtype), shapes),
        )
    regularise = p.regularise
    regularisers = local_time = None
    if regularise is not None:
        regularisers = jnp.zeros((4,), dtype)  # R_E, R_S, R_E_local, R_S_local
        if regularise.key is not None:
            uniform = jax.random.uniform(regularise.key, (), dtype)
            local_time = lax.stop_gradient(t0 + uniform * span)
    event_value = event_fired = None
    if event is not None:
        event_value = lax.stop_gradient(condition(event, p.sign * t0, p.y0, p.args))
        event_fired = jnp.asarray(False)
    zero = jnp.asarray(0)
    init = _Carry(
        t0, p.y0, dt_init, state0, p.controller.init(dtype), save_index, ys_ts, steps_ts,
        steps_ys, zero, zero, jnp.asarray(False), RESULTS.successful, meter.init(), dense,
        event_value, event_fired, regularisers,
    )  # fmt: skip

    def cond(c: _Carry):
        going = (c.t < t1) & (c.result == RESULTS.successful)
        return going if event is None else going & ~c.event_fired

    def body(c: _Carry):
        t_next = c.t + c.dt
        t_next = jnp.where(t_next >= t1 - snap, t1, t_next)
        if clip_to_saves:
            upcoming = p.save_ts[jnp.minimum(c.save_index, p.save_ts.shape[0] - 1)]
            clip = (c.save_index < p.save_ts.shape[0]) & (upcoming > c.t) & (upcoming < t_next)
            t_next = jnp.where(clip, upcoming, t_next)
        degenerate = t_next <= c.t
        # Finished lanes (under vmap) and stalled steps: step over a real interval ending at
        # t_next instead (see the module docstring); the result is discarded.
        back = jnp.where(c.dt > 0, c.dt, jnp.where(span > 0, span, 1))
        t_start = jnp.where(degenerate, jnp.maximum(t_next - back, t0), c.t)
        increment = None
        if brownian is not None:
            increment = brownian.increment(lax.stop_gradient(t_start), lax.stop_gradient(t_next))
        out = p.solver.step(p.terms, t_start, t_next, c.y, p.args, increment, c.solver_state)
        finite = tree_all_finite(out.y1)
        if constant:
            accept, dt_next, cstate, underflow = finite, c.dt, c.controller_state, ~finite
        else:
            finite = finite & tree_all_finite(out.y_error)
            accept, dt_next, cstate, underflow = p.controller.adapt(
                *lax.stop_gradient((t_start, t_next, c.y, out.y1, out.y_error)),
                eorder,
                c.controller_state,
            )
            dt_next = _quantise(lax.stop_gradient(dt_next))
        rejected_nonfinite = jnp.where(accept, c.rejected_nonfinite, ~finite)
        failed = degenerate | underflow
        code = RESULTS.where(finite & ~rejected_nonfinite, RESULTS.dt_underflow, RESULTS.nonfinite)
        result = RESULTS.where(failed, code, c.result)
        accept = accept & ~degenerate
        keep = lambda new, old: jnp.where(accept, new, old)
        # Where the step ends: its end, or the event time inside it.
        t_end, y_end = t_next, out.y1
        event_value, event_fired = c.event_value, c.event_fired
        if event is not None:
            g_new = lax.stop_gradient(condition(event, p.sign * t_next, out.y1, p.args))
            event_fired = accept & crossed(event.direction, c.event_value, g_new)
            tau_star, y_star = event_time(
                event, p.sign, t_start, t_next, out.dense_info, p.solver.dense_weights, p.args,
                event_fired,
            )  # fmt: skip
            t_end = jnp.where(event_fired, tau_star, t_next)
            y_end = jax.tree.map(lambda a, b: jnp.where(event_fired, a, b), y_star, out.y1)
            event_value = jnp.where(accept, g_new, c.event_value)
        y = jax.tree.map(keep, y_end, c.y)
        solver_state = jax.tree.map(keep, out.state, c.solver_state)
        save_index, ys_ts = c.save_index, c.ys_ts
        if p.save_ts is not None:
            save_index, ys_ts = _save_dense(
                p, saveat, c, t_next, t_end, out.dense_info, accept, adjoint.loop_kind
            )
        steps_ts, steps_ys = c.steps_ts, c.steps_ys
        if every:
            count = c.num_accepted + 1
            write = accept & (count % every == 0)
            index = jnp.minimum(count // every - 1, steps_ts.shape[0] - 1)
            index = jnp.maximum(index, 0)
            put = lambda buf, new: buf.at[index].set(jnp.where(write, new, buf[index]))
            if steps_ts.shape[0] > 0:
                steps_ts = put(steps_ts, t_end)
                steps_ys = jax.tree.map(put, steps_ys, _saved(p, saveat, t_end, y_end))
        dense = c.dense
        if saveat.dense:
            slot = jnp.minimum(c.num_accepted, max_steps - 1)
            put = lambda buf, new: buf.at[slot].set(jnp.where(accept, new, buf[slot]))
            starts, ends, infos = c.dense
            infos = jax.tree.map(put, infos, out.dense_info)
            dense = (put(starts, t_start), put(ends, t_next), infos)
        regularisers = c.regularisers
        if regularise is not None:
            error, stiffness = step_values(p.solver, p.controller, t_start, t_next, c.y, out)
            local = jnp.asarray(False)
            if local_time is not None:
                local = (local_time > t_start) & (local_time <= t_next)
            values = jnp.stack([error, stiffness, error, stiffness])
            mask = jnp.stack([accept, accept, accept & local, accept & local])
            # Rejected steps and discarded lanes may hold inf/NaN: select, never multiply.
            regularisers = regularisers + jnp.where(mask, jnp.where(mask, values, 0), 0)
        t = keep(t_end, c.t)
        progress = meter.step(c.progress, (t - t0) / jnp.where(span > 0, span, 1))
        return _Carry(
            t, y, dt_next, solver_state, cstate, save_index, ys_ts, steps_ts, steps_ys,
            c.num_accepted + accept.astype(c.num_accepted.dtype),
            c.num_rejected + (~accept).astype(c.num_rejected.dtype), rejected_nonfinite, result,
            progress, dense, event_value, event_fired, regularisers,
        )  # fmt: skip

    loop = bounded_while_loop(cond, body, init, max_steps=max_steps, kind=adjoint.loop_kind)
    final: _Carry = loop.value
    meter.close(final.progress)
    result = RESULTS.where(loop.max_steps_reached, RESULTS.max_steps_reached, final.result)
    result = RESULTS.where(
        (result == RESULTS.successful) & ~tree_all_finite(final.y), RESULTS.nonfinite, result
    )
    dense_ts = None
    if p.save_ts is not None:
        ys_ts = final.ys_ts
        if event is not None:
            # Save times after the event were never reached.
            missed = jnp.arange(p.save_ts.shape[0]) >= final.save_index
            ys_ts = jax.tree.map(
                lambda v: jnp.where(missed.reshape((-1,) + (1,) * (v.ndim - 1)), jnp.inf, v),
                ys_ts,
            )
        dense_ts = (p.save_ts, ys_ts)
    steps = (final.steps_ts, final.steps_ys)
    ts, ys = _assemble(p, saveat, dense_ts, steps, (final.t, final.y))
    stats = {
        "num_steps": loop.num_steps,
        "num_accepted_steps": final.num_accepted,
        "num_rejected_steps": final.num_rejected,
    }
    if regularise is not None:
        stats["R_E"], stats["R_S"] = final.regularisers[0], final.regularisers[1]
        if local_time is not None:
            stats["R_E_local"], stats["R_S_local"] = final.regularisers[2], final.regularisers[3]
    interpolation = None
    if saveat.dense:
        starts, ends, infos = final.dense
        interpolation = DenseInterpolation(
            starts, ends, infos, final.num_accepted, p.sign, final.t, p.solver.dense_weights
        )
    return Solution(ts, ys, result, stats, final.solver_state, interpolation, final.event_fired)
