"""How gradients flow through an iterative entry point: one adjoint family for every solver.

An adjoint answers two questions. Which loop runs the iterations (`loop_kind`, a
`bounded_while_loop` kind, and `checkpoint_steps` for fixed-length scans), and what derivative
rule wraps them (`apply`). The unrolling adjoints below differentiate the iterations themselves
and are shared by `jaxsolve.diffeq` and `jaxsolve.nonlinear`; `nonlinear.ImplicitAdjoint` is the
other kind, which differentiates the solution by the implicit function theorem.
"""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx


class AbstractAdjoint(eqx.Module):
    """The base class of the `adjoint=` arguments.

    - `loop_kind`: the `bounded_while_loop` kind the iterations run in (`"recursive"`,
      `"checkpointed"` or `"lax"`).
    - `checkpoint_steps`: whether fixed-length scans rematerialise each step on the backward
      pass.
    - `apply(primal, optimality, y0, args, *, positive_definite=False, throw=True)`: run
      `primal(y0, args) -> (y, aux)` under this adjoint's derivative rule; `optimality(y, args)`
      is zero at a solution (used by implicit adjoints).
    """

    loop_kind: eqx.AbstractClassVar[str]
    checkpoint_steps: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def apply(
        self,
        primal: Callable,
        optimality: Callable,
        y0: Any,
        args: Any,
        *,
        positive_definite: bool = False,
        throw: bool = True,
    ) -> tuple[Any, Any]:
        """Run `primal` with this adjoint's derivative rule. `positive_definite` says that the
        Jacobian of `optimality` is symmetric positive definite at the solution (a Hessian at a
        strict minimum); `throw` that failed derivative solves raise."""


class AbstractUnrolledAdjoint(AbstractAdjoint):
    """An adjoint that differentiates the iterations as they ran (discretise-then-optimise)."""

    def apply(self, primal, optimality, y0, args, *, positive_definite=False, throw=True):
        return primal(y0, args)


class RecursiveCheckpointAdjoint(AbstractUnrolledAdjoint):
    """Reverse-mode differentiation through the iterations, with checkpointing (the default of
    `diffeq.solve`).

    The iterations run in a while loop that stores its state every `sqrt(max_steps)` steps; the
    backward pass (a `custom_vjp`) recomputes one block at a time and pulls the cotangent back
    through it (`bounded_while_loop(kind="recursive")`): memory about `2 sqrt(max_steps)` states,
    backward cost about twice the forward, whatever `max_steps` is. Fixed-length scans
    rematerialise each step. Forward mode (`jax.jvp`) needs `DirectAdjoint()` or `ForwardMode()`.

    **Example:** `js.diffeq.solve(..., adjoint=js.diffeq.RecursiveCheckpointAdjoint())`
    """

    loop_kind = "recursive"
    checkpoint_steps = True


class DirectAdjoint(AbstractUnrolledAdjoint):
    """Reverse- and forward-mode differentiation through the iterations.

    The iterations run in nested, checkpointed scans (`bounded_while_loop(kind="checkpointed")`)
    that support `jax.jvp` and `jax.grad` alike, and higher derivatives; the backward pass visits
    all `max_steps` slots (skipping finished blocks with one `lax.cond` each), so it is slower
    than `RecursiveCheckpointAdjoint()` when `max_steps` is much larger than the steps taken.

    **Example:** `jax.jacfwd(lambda k: js.diffeq.solve(..., args=k, adjoint=js.diffeq.DirectAdjoint()).ys)`
    """

    loop_kind = "checkpointed"
    checkpoint_steps = True


class ForwardMode(AbstractUnrolledAdjoint):
    """Forward-mode only (`jax.jvp`, `jax.jacfwd`), with no reverse-mode overhead.

    The iterations run in a plain `lax.while_loop`: the fastest forward solve, also under `vmap`
    (each batch runs only as many steps as its slowest member). Reverse mode (`jax.grad`)
    through it raises JAX's error about while loops.

    **Example:** `jax.jvp(lambda k: js.diffeq.solve(..., args=k, adjoint=js.diffeq.ForwardMode()).ys, ...)`
    """

    loop_kind = "lax"
    checkpoint_steps = False
