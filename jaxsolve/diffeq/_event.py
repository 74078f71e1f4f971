"""Events: stop a solve where a scalar function of the state changes sign.

After every accepted step `solve` evaluates `cond_fn` at the step's end. When its sign differs
from the one at the step's start, the root of `g(t) = cond_fn(t, y(t), args)` inside the step is
found on the step's dense output (Illinois regula falsi, bracketed, to a few ulps; no gradient
flows through the iterations) and the solve ends there: `t` and `y` at the root become the final
time and value (`SaveAt(t1=True)` saves them).

The event time is differentiable by the implicit function theorem: `g(t*(p), p) = 0` gives
`dt*/dp = -(dg/dp) / (dg/dt)`, where `dg/dp` holds `t` fixed (through `y(t; p)` and `args`) and
`dg/dt = d/dt cond_fn(t, y(t), args)` is the total derivative along the dense output. `solve`
returns `t* = t_root + (c - stop_gradient(c))` with `c = -g(t_root; p) / stop_gradient(dg/dt)`:
the value is the root found, the derivative that of the theorem.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from ._solver import interpolate

_DIRECTIONS = ("both", "rising", "falling")


class Event(eqx.Module):
    """Stop `solve` where `cond_fn(t, y, args)` changes sign.

    **Arguments:**

    - `cond_fn`: a function `(t, y, args) -> scalar` (real). The solve stops at the first
      accepted step across which its sign changes (or where it reaches exactly 0), at the root
      inside that step.
    - `direction`: `"both"` (default), `"rising"` (negative to non-negative only) or
      `"falling"` (positive to non-positive only).

    The event time is `sol.ts[-1]` with `SaveAt(t1=True)` (the default), and `sol.ys[-1]` the
    state there; `sol.event_mask` says whether the event fired (`sol.result` stays
    successful; if it never fires the solve ends at `t1`). The event time is differentiable
    (implicit function theorem; see the module docstring) and `solve` works under `vmap`,
    where lanes stop at different times. Only the sign at the end of each accepted step is
    checked: two roots inside one step are not seen.

    **Example** (a ball dropped from height 1 hits the ground at `sqrt(2 / 9.81)`):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, g: jnp.stack([y[1], -g]))
    event = js.diffeq.Event(lambda t, y, args: y[0])
    sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 10.0, jnp.array([1.0, 0.0]),
                          args=9.81, event=event,
                          controller=js.diffeq.PIDController(rtol=1e-8, atol=1e-8))
    assert sol.event_mask and sol.result == js.RESULTS.successful
    assert jnp.allclose(sol.ts[-1], jnp.sqrt(2 / 9.81), rtol=1e-5)
    assert jnp.abs(sol.ys[-1, 0]) < 1e-5
    ```
    """

    cond_fn: Callable
    direction: str = "both"

    def __check_init__(self):
        if not callable(self.cond_fn):
            raise TypeError(
                f"`Event.cond_fn` must be a function cond_fn(t, y, args), got "
                f"{type(self.cond_fn).__name__}"
            )
        if self.direction not in _DIRECTIONS:
            raise ValueError(
                f"`Event.direction` must be one of {_DIRECTIONS}, got {self.direction!r}"
            )


def condition(event: Event, t, y, args):
    """`cond_fn` at `(t, y)`, checked to be a real scalar."""
    g = jnp.asarray(event.cond_fn(t, y, args))
    if g.shape != ():
        raise ValueError(f"`Event.cond_fn` must return a scalar, got shape {g.shape}")
    if not jnp.issubdtype(g.dtype, jnp.floating):
        raise TypeError(f"`Event.cond_fn` must return a real float, got dtype {g.dtype}")
    return g


def crossed(direction: str, g_prev, g_new):
    """Whether the sign changed from `g_prev` to `g_new` in the requested direction."""
    rising = (g_prev < 0) & (g_new >= 0)
    falling = (g_prev > 0) & (g_new <= 0)
    if direction == "rising":
        return rising
    if direction == "falling":
        return falling
    return rising | falling


def find_root(fn, a, b, fa, fb, active):
    """A root of the scalar `fn` in `[a, b]` (with `fa`, `fb` of opposite signs or one zero).

    Illinois regula falsi (Dahlquist & Björck, Numerical Methods, 1974, §6.2.3): superlinear,
    and bracketing like bisection. Lanes with `active` false return `b` at once. Not
    differentiated (the caller applies the implicit function theorem).
    """
    dtype = a.dtype
    eps = jnp.finfo(dtype).eps

    def cond(state):
        a, b, fa, fb, _, count = state
        width = jnp.abs(b - a)
        tol = 4 * eps * jnp.maximum(jnp.abs(a), jnp.abs(b))
        return (width > tol) & (fa != 0) & (fb != 0) & (count < 200)

    def body(state):
        a, b, fa, fb, side, count = state
        # Regula falsi point, falling back to the midpoint if it is not strictly inside.
        c = b - fb * (b - a) / (fb - fa)
        mid = 0.5 * (a + b)
        inside = jnp.isfinite(c) & (c > jnp.minimum(a, b)) & (c < jnp.maximum(a, b))
        c = jnp.where(inside, c, mid)
        fc = fn(c)
        # Keep the bracket: the new point replaces the end whose value has its sign.
        replace_b = jnp.sign(fc) == jnp.sign(fb)
        # Illinois: when the same end is kept twice in a row, halve its value.
        new_side = jnp.where(replace_b, 1, -1)
        fa_kept = jnp.where(replace_b & (side == 1), fa / 2, fa)
        fb_kept = jnp.where(~replace_b & (side == -1), fb / 2, fb)
        a_new = jnp.where(replace_b, a, c)
        fa_new = jnp.where(replace_b, fa_kept, fc)
        b_new = jnp.where(replace_b, c, b)
        fb_new = jnp.where(replace_b, fc, fb_kept)
        return a_new, b_new, fa_new, fb_new, new_side, count + 1

    # Inactive lanes start with a zero-width bracket and do no iteration.
    a0 = jnp.where(active, a, b)
    init = (a0, b, fa, fb, jnp.asarray(0), jnp.asarray(0))
    a, b, fa, fb, _, _ = lax.while_loop(cond, body, init)
    return jnp.where(fa == 0, a, jnp.where(fb == 0, b, jnp.where(jnp.abs(fa) < jnp.abs(fb), a, b)))


def event_time(event: Event, sign, t_start, t_end, info, weights, args, active):
    """The differentiable event time in `[t_start, t_end]` (integration time) and `y` there.

    `info` is the step's `DenseInfo` (differentiable in the solve's inputs), `weights` the
    solver's `dense_weights`. Lanes with `active` false return `t_end` and a finite value (the
    caller discards it).
    """
    sg = lambda tree: jax.tree.map(lambda x: lax.stop_gradient(x) if eqx.is_array(x) else x, tree)

    def g_of(tau, start, end, step_info, arguments):
        y = interpolate(start, end, step_info, tau, weights)
        return condition(event, sign * tau, y, arguments)

    frozen = sg((t_start, t_end, info, args))

    def g_frozen(tau):  # differentiable in tau only
        return g_of(tau, *frozen)

    a, b = frozen[0], frozen[1]
    root = find_root(
        lambda tau: lax.stop_gradient(g_frozen(tau)), a, b, g_frozen(a), g_frozen(b), active
    )
    root = lax.stop_gradient(jnp.where(active, root, b))
    # The total derivative of g along the dense output at the root: the denominator of the
    # implicit function theorem (a constant for differentiation).
    _, slope = jax.jvp(g_frozen, (root,), (jnp.ones_like(root),))
    slope = lax.stop_gradient(slope)
    usable = active & (slope != 0) & jnp.isfinite(slope)
    correction = -g_of(root, t_start, t_end, info, args) / jnp.where(usable, slope, 1)
    correction = jnp.where(usable, correction, 0)
    tau_star = root + (correction - lax.stop_gradient(correction))
    return tau_star, interpolate(t_start, t_end, info, tau_star, weights)
