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
    """Reverse-mode (and forward-mode) differentiation by unrolling the solver, with
    checkpointing (the default).

    Adaptive solves run in nested, checkpointed scans (`bounded_while_loop(kind="checkpointed")`),
    so the backward pass stores about `sqrt(max_steps)` states; fixed-step solves run in one
    `lax.scan` whose steps are recomputed on the backward pass. The gradient is that of the
    discretised solve (discretise-then-optimise): exact for the numbers computed.

    Under `vmap` an adaptive solve stops when its slowest member stops (finished members are
    frozen), as with `ForwardMode()`.
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
