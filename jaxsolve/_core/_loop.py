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
"""

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
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
    kind: Literal["checkpointed", "lax"] = "checkpointed",
    block_size: int | None = None,
) -> LoopResult:
    """Run `body_fun` while `cond_fun` holds, at most `max_steps` times.

    **Arguments:**

    - `cond_fun`: carry -> scalar bool.
    - `body_fun`: carry -> carry (same structure, shapes and dtypes).
    - `init_val`: the initial carry, any pytree of arrays.
    - `max_steps`: a positive Python int, the hard bound.
    - `kind`: `"checkpointed"` (default) is reverse- and forward-mode differentiable, with
      memory O(sqrt(max_steps)) carries on the backward pass; `"lax"` is `lax.while_loop`:
      forward-mode only, no overhead.
    - `block_size`: the inner block length of the checkpointed loop; default
      ceil(sqrt(max_steps)).

    **Returns:** a `LoopResult(value, num_steps, max_steps_reached)`.

    Under `vmap` the loop runs until the slowest lane finishes (finished lanes are frozen), like
    `lax.while_loop`, not to `max_steps`.

    **Example:**

    ```python
    out = bounded_while_loop(lambda x: x < 10.0, lambda x: x * 2, 1.0, max_steps=100)
    # out.value == 16.0, out.num_steps == 4
    ```
    """
    check_option("kind", kind, ("checkpointed", "lax"))
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive Python int, got {max_steps!r}")

    def keep_going(carry):
        step, value = carry
        return jnp.logical_and(step < max_steps, cond_fun(value))

    if kind == "lax":

        def lax_body(carry):
            step, value = carry
            return step + 1, body_fun(value)

        num_steps, value = lax.while_loop(keep_going, lax_body, (jnp.array(0), init_val))
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
