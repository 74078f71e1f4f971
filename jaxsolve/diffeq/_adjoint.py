"""How gradients flow through `solve`: the `adjoint=` argument."""

import equinox as eqx


class AbstractAdjoint(eqx.Module):
    """The base class of `solve`'s differentiation strategies.

    `loop_kind` is the `jaxsolve._core.bounded_while_loop` kind used for adaptive solves and
    `checkpoint_steps` whether fixed-step scans rematerialise each step on the backward pass.
    """

    loop_kind: eqx.AbstractClassVar[str]
    checkpoint_steps: eqx.AbstractClassVar[bool]


class RecursiveCheckpointAdjoint(AbstractAdjoint):
    """Reverse-mode differentiation by unrolling the solver, with checkpointing (the default).

    Adaptive solves run in a while loop that stores its state every `sqrt(max_steps)` steps; the
    backward pass (a `custom_vjp`) recomputes one block of steps at a time from those and pulls
    the cotangent back through them (`bounded_while_loop(kind="recursive")`). Memory is about
    `2 sqrt(max_steps)` states and the backward pass costs about twice the forward, whatever
    `max_steps` is. Fixed-step solves run in one `lax.scan` whose steps are recomputed on the
    backward pass. The gradient is that of the discretised solve (discretise-then-optimise),
    with the accepted step sizes held constant.

    Forward mode (`jax.jvp`, `jax.jacfwd`) through an adaptive solve needs `ForwardMode()` or
    `DirectAdjoint()`. Under `vmap` an adaptive solve stops when its slowest member stops
    (finished members are frozen).
    """

    loop_kind = "recursive"
    checkpoint_steps = True


class DirectAdjoint(AbstractAdjoint):
    """Reverse- and forward-mode differentiation through the same unrolled loop.

    Adaptive solves run in nested, checkpointed scans (`bounded_while_loop(kind="checkpointed")`)
    that support `jax.jvp` and `jax.grad` alike (and higher derivatives); the backward pass
    visits all `max_steps` slots (skipping finished blocks with one `lax.cond` each), so it is
    slower than `RecursiveCheckpointAdjoint()` when `max_steps` is much larger than the number
    of steps taken.
    """

    loop_kind = "checkpointed"
    checkpoint_steps = True


class ForwardMode(AbstractAdjoint):
    """Forward-mode only (`jax.jvp`, `jax.jacfwd`), with no reverse-mode overhead.

    Adaptive solves run in a plain `lax.while_loop`: the fastest forward solve, also under
    `vmap` (each batch runs only as many steps as its slowest member). Reverse mode
    (`jax.grad`) through it raises JAX's error about while loops.
    """

    loop_kind = "lax"
    checkpoint_steps = False
