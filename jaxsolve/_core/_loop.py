"""Bounded loops that every iterative entry point runs on.

`bounded_while_loop` is a while loop with a hard cap `max_steps` that is reverse-mode
differentiable: it is built from two nested `lax.scan`s whose inner blocks are rematerialised
(`jax.checkpoint`) on the backward pass, so memory grows like sqrt(max_steps) states rather
than max_steps, and blocks after termination are skipped by a single `lax.cond` each.

Under `vmap` a batched `lax.cond` predicate would turn every cond into a select and run all
`max_steps` bodies. The predicates therefore go through `_any_lane`, whose batching rule reduces
the batch with `any`: a block or step is skipped once every lane has finished, and finished lanes
are frozen with a select, as `lax.while_loop` does under `vmap`.
`kind="lax"` uses `lax.while_loop` instead: fastest, supports forward-mode only.

`kind="recursive"` is reverse-mode only and costs what the loop actually ran, not `max_steps`:
the forward pass is a `lax.while_loop` that stores the carry every `block_size` steps; a
`custom_vjp` backward pass walks the stored blocks from the last one run, recomputes each
block's carries and pulls the cotangent back through them one `jax.vjp` of the body at a time.
The nested scans of `"checkpointed"` instead visit all `max_steps` slots on the backward pass (a
lax.cond each), which dominates short solves with a generous `max_steps`.
"""

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap
from jaxtyping import Array, Bool, Int

from ._validate import check_option


@custom_vmap
def _any_lane(pred):
    """`pred` itself; under `vmap`, an unbatched "is any lane still running"."""
    return pred


@_any_lane.def_vmap
def _any_lane_batched(axis_size, in_batched, pred):
    (batched,) = in_batched
    return (jnp.any(pred) if batched else pred), False


def _select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


class LoopResult(NamedTuple):
    """What `bounded_while_loop` returns.

    - `value`: the final carry.
    - `num_steps`: how many times `body_fun` was applied.
    - `max_steps_reached`: `True` when the loop stopped because of `max_steps` while
      `cond_fun` still asked to continue.
    """

    value: Any
    num_steps: Int[Array, ""]
    max_steps_reached: Bool[Array, ""]


def bounded_while_loop(
    cond_fun: Callable[[Any], Bool[Array, ""]],
    body_fun: Callable[[Any], Any],
    init_val: Any,
    *,
    max_steps: int,
    kind: Literal["checkpointed", "recursive", "lax"] = "checkpointed",
    block_size: int | None = None,
) -> LoopResult:
    """Run `body_fun` while `cond_fun` holds, at most `max_steps` times.

    **Arguments:**

    - `cond_fun`: carry -> scalar bool.
    - `body_fun`: carry -> carry (same structure, shapes and dtypes).
    - `init_val`: the initial carry, any pytree of arrays.
    - `max_steps`: a positive Python int, the hard bound.
    - `kind`: `"checkpointed"` (default) is reverse- and forward-mode differentiable, with
      memory O(sqrt(max_steps)) carries on the backward pass; `"recursive"` is reverse-mode
      only, with the same memory and a backward pass whose cost follows the number of steps
      taken (not `max_steps`); `"lax"` is `lax.while_loop`: forward-mode only, no overhead.
    - `block_size`: the inner block length of the checkpointed loop; default
      ceil(sqrt(max_steps)).

    **Returns:** a `LoopResult(value, num_steps, max_steps_reached)`.

    Under `vmap` the loop runs until the slowest lane finishes (finished lanes are frozen), like
    `lax.while_loop`, not to `max_steps`.

    **Example:**

    ```python
    from jaxsolve._core import bounded_while_loop

    out = bounded_while_loop(lambda x: x < 10.0, lambda x: x * 2, 1.0, max_steps=100)
    assert out.value == 16.0 and out.num_steps == 4
    # reverse-mode differentiable: d(16 x0)/dx0 = 16, with the step count held fixed
    grad = jax.grad(lambda x0: bounded_while_loop(lambda x: x < 10.0, lambda x: x * 2, x0,
                                                  max_steps=100).value)(1.0)
    assert grad == 16.0
    ```
    """
    check_option("kind", kind, ("checkpointed", "recursive", "lax"))
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive Python int, got {max_steps!r}")

    def keep_going(carry):
        step, value = carry
        return jnp.logical_and(step < max_steps, cond_fun(value))

    if kind == "recursive":
        block = block_size if block_size is not None else max(1, math.isqrt(max_steps - 1) + 1)
        value, num_steps = _recursive_loop(cond_fun, body_fun, init_val, max_steps, block)
        reached = jnp.logical_and(num_steps >= max_steps, cond_fun(value))
        return LoopResult(value, num_steps, reached)
    if kind == "lax":
        # The bound is hidden from XLA: with a known small trip count it unrolls the loop,
        # multiplying compile time for no run-time gain.
        bound = lax.optimization_barrier(jnp.asarray(max_steps))

        def lax_cond(carry):
            step, value = carry
            return jnp.logical_and(step < bound, cond_fun(value))

        def lax_body(carry):
            step, value = carry
            return step + 1, body_fun(value)

        num_steps, value = lax.while_loop(lax_cond, lax_body, (jnp.array(0), init_val))
    else:
        block = block_size if block_size is not None else max(1, math.isqrt(max_steps - 1) + 1)
        num_blocks = -(-max_steps // block)

        def guarded_body(carry):
            step, value = carry
            return step + 1, body_fun(value)

        def inner(carry, _):
            active = keep_going(carry)
            # the select is a no-op when unbatched; under vmap it freezes finished lanes
            carry = lax.cond(
                _any_lane(active), lambda c: _select(active, guarded_body(c), c), lambda c: c, carry
            )
            return carry, None

        @jax.checkpoint
        def run_block(carry):
            return lax.scan(inner, carry, None, length=block)[0]

        def outer(carry, _):
            carry = lax.cond(_any_lane(keep_going(carry)), run_block, lambda c: c, carry)
            return carry, None

        (num_steps, value), _ = lax.scan(outer, (jnp.array(0), init_val), None, length=num_blocks)
    reached = jnp.logical_and(num_steps >= max_steps, cond_fun(value))
    return LoopResult(value, num_steps, reached)


def _split(tree):
    """(differentiable leaves, the rest): floating-point arrays go first."""
    is_diff = lambda x: (
        isinstance(x, jax.Array | np.ndarray | np.generic | float)
        and (jnp.issubdtype(jnp.result_type(x), jnp.inexact))
    )
    diff = jax.tree.map(lambda x: x if is_diff(x) else None, tree)
    rest = jax.tree.map(lambda x: None if is_diff(x) else x, tree)
    return diff, rest


def _merge(diff, rest):
    return jax.tree.map(lambda a, b: b if a is None else a, diff, rest, is_leaf=lambda x: x is None)


def _zero_cotangent(x):
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(jnp.shape(x), jax.dtypes.float0)


def _hoist(fun, example):
    """`fun` as `(converted, consts)` with every closed-over value (traced or not, of any dtype)
    an explicit argument: `converted(x, *consts) == fun(x)`. `jax.closure_convert` hoists only
    floating-point tracers, which leaves e.g. a vmapped key closed over."""
    leaves, treedef = jax.tree.flatten(example)
    closed, out_shape = jax.make_jaxpr(
        lambda *xs: fun(jax.tree.unflatten(treedef, xs)), return_shape=True
    )(*leaves)
    out_tree = jax.tree.structure(out_shape)

    def converted(x, *consts):
        out = jax.core.eval_jaxpr(closed.jaxpr, consts, *jax.tree.leaves(x))
        return jax.tree.unflatten(out_tree, out)

    return converted, tuple(closed.consts)


def _recursive_loop(cond_fun, body_fun, init_val, max_steps, block):
    """The `kind="recursive"` loop: returns (final carry, number of steps)."""
    init_val = jax.tree.map(jnp.asarray, init_val)
    # The body and the predicate may close over traced values (the parameters being
    # differentiated, a batched PRNG key): hoist them into explicit arguments of the custom_vjp
    # function.
    body_conv, body_consts = _hoist(body_fun, init_val)
    cond_conv, cond_consts = _hoist(cond_fun, init_val)
    num_blocks = -(-max_steps // block)

    def forward(body_consts, cond_consts, init, save):
        def keep_going(carry):
            step, value, _ = carry
            return (step < max_steps) & cond_conv(value, *cond_consts)

        def step_fun(carry):
            step, value, stored = carry
            if save:
                slot = step // block
                stored = jax.tree.map(
                    lambda buf, v: jnp.where(
                        step % block == 0, lax.dynamic_update_index_in_dim(buf, v, slot, 0), buf
                    ),
                    stored,
                    value,
                )
            return step + 1, body_conv(value, *body_consts), stored

        stored = None
        if save:
            stored = jax.tree.map(lambda v: jnp.zeros((num_blocks, *v.shape), v.dtype), init)
        step, value, stored = lax.while_loop(keep_going, step_fun, (jnp.array(0), init, stored))
        return value, step, stored

    @jax.custom_vjp
    def run(body_consts, cond_consts, init):
        value, step, _ = forward(body_consts, cond_consts, init, save=False)
        return value, step

    def run_fwd(body_consts, cond_consts, init):
        value, step, stored = forward(body_consts, cond_consts, init, save=True)
        return (value, step), (body_consts, cond_consts, stored, step)

    def run_bwd(residuals, cotangents):
        body_consts, cond_consts, stored, num_steps = residuals
        # Cotangents arrive instantiated (zeros, float0 for integer leaves).
        ct_value, _ = cotangents
        ct_diff, _ = _split(ct_value)
        consts_diff, consts_rest = _split(body_consts)

        def pull_back(value, ct_diff, ct_consts):
            def call(consts_diff, value_diff):
                out = body_conv(_merge(value_diff, value_rest), *_merge(consts_diff, consts_rest))
                return _split(out)[0]

            value_diff, value_rest = _split(value)
            _, vjp = jax.vjp(call, consts_diff, value_diff)
            d_consts, d_value = vjp(ct_diff)
            ct_consts = jax.tree.map(jnp.add, ct_consts, d_consts)
            return d_value, ct_consts

        def block_body(carry):
            index, ct_diff, ct_consts = carry
            start = index * block
            count = jnp.minimum(block, num_steps - start)
            first = jax.tree.map(lambda buf: buf[index], stored)
            buffer = jax.tree.map(lambda v: jnp.zeros((block, *v.shape), v.dtype), first)

            def replay(carry):
                j, value, buffer = carry
                buffer = jax.tree.map(
                    lambda buf, v: lax.dynamic_update_index_in_dim(buf, v, j, 0), buffer, value
                )
                return j + 1, body_conv(value, *body_consts), buffer

            _, _, buffer = lax.while_loop(lambda c: c[0] < count, replay, (0, first, buffer))

            def reverse(carry):
                j, ct_diff, ct_consts = carry
                value = jax.tree.map(lambda buf: buf[j], buffer)
                ct_diff, ct_consts = pull_back(value, ct_diff, ct_consts)
                return j - 1, ct_diff, ct_consts

            _, ct_diff, ct_consts = lax.while_loop(
                lambda c: c[0] >= 0, reverse, (count - 1, ct_diff, ct_consts)
            )
            return index - 1, ct_diff, ct_consts

        zero_consts = jax.tree.map(jnp.zeros_like, consts_diff)
        last = (num_steps - 1) // block
        _, ct_diff, ct_consts = lax.while_loop(
            lambda c: c[0] >= 0, block_body, (last, ct_diff, zero_consts)
        )
        ct_body = _merge(ct_consts, jax.tree.map(_zero_cotangent, consts_rest))
        ct_cond = jax.tree.map(_zero_cotangent, cond_consts)
        init_rest = _split(jax.tree.map(lambda x: x[0], stored))[1]
        ct_init = _merge(ct_diff, jax.tree.map(_zero_cotangent, init_rest))
        return ct_body, ct_cond, ct_init

    run.defvjp(run_fwd, run_bwd)
    return run(body_consts, cond_consts, init_val)


def scan_steps(
    step_fun: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any = None,
    *,
    length: int | None = None,
    checkpoint: bool = False,
):
    """`lax.scan` with optional per-step rematerialisation for long differentiable loops.

    **Arguments:** as `lax.scan(step_fun, init, xs, length)`; with `checkpoint=True` the step is
    wrapped in `jax.checkpoint`, so the backward pass stores only the carries.

    **Returns:** `(final_carry, stacked_outputs)`.
    """
    fun = jax.checkpoint(step_fun) if checkpoint else step_fun
    return lax.scan(fun, init, xs, length=length)
