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

    **Example** (any iterative routine can let its caller choose how it is differentiated:
    here Heron's iteration for a square root, differentiated through its iterations or by the
    implicit function theorem at `y² = a`):

    ```python
    def square_root(a, adjoint: js.diffeq.AbstractAdjoint):
        def primal(y0, a):
            return jax.lax.fori_loop(0, 30, lambda i, y: 0.5 * (y + a / y), y0), None

        y, _ = adjoint.apply(primal, lambda y, a: y**2 - a, jnp.ones(()), a)
        return y

    for adjoint in (js.diffeq.RecursiveCheckpointAdjoint(), js.nonlinear.ImplicitAdjoint()):
        assert jnp.allclose(jax.grad(square_root)(4.0, adjoint), 0.25)
    ```
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

    **Example** (the gradient of `y(1) = exp(-k)` through an adaptive solve):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, k: -k * y)

    def y1(k):
        sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.ones(()), args=k,
                              controller=js.diffeq.PIDController(rtol=1e-6, atol=1e-8),
                              adjoint=js.diffeq.RecursiveCheckpointAdjoint())
        return sol.ys[-1]

    assert jnp.allclose(jax.grad(y1)(2.0), -jnp.exp(-2.0), rtol=1e-4)
    ```
    """

    loop_kind = "recursive"
    checkpoint_steps = True


class DirectAdjoint(AbstractUnrolledAdjoint):
    """Reverse- and forward-mode differentiation through the iterations.

    The iterations run in nested, checkpointed scans (`bounded_while_loop(kind="checkpointed")`)
    that support `jax.jvp` and `jax.grad` alike, and higher derivatives; the backward pass visits
    all `max_steps` slots (skipping finished blocks with one `lax.cond` each), so it is slower
    than `RecursiveCheckpointAdjoint()` when `max_steps` is much larger than the steps taken.

    **Example** (the forward-mode derivative of `y(1) = exp(-k)`; `jax.jacrev` works too):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, k: -k * y)

    def y1(k):
        sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.ones(()), args=k,
                              controller=js.diffeq.PIDController(rtol=1e-6, atol=1e-8),
                              adjoint=js.diffeq.DirectAdjoint(), max_steps=64)
        return sol.ys[-1]

    assert jnp.allclose(jax.jacfwd(y1)(2.0), -jnp.exp(-2.0), rtol=1e-4)
    ```
    """

    loop_kind = "checkpointed"
    checkpoint_steps = True


class ForwardMode(AbstractUnrolledAdjoint):
    """Forward-mode only (`jax.jvp`, `jax.jacfwd`), with no reverse-mode overhead.

    The iterations run in a plain `lax.while_loop`: the fastest forward solve, also under `vmap`
    (each batch runs only as many steps as its slowest member). Reverse mode (`jax.grad`)
    through it raises JAX's error about while loops.

    **Example** (a Jacobian-vector product through an adaptive solve):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, k: -k * y)

    def y1(k):
        sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.ones(2), args=k,
                              controller=js.diffeq.PIDController(rtol=1e-6, atol=1e-8),
                              adjoint=js.diffeq.ForwardMode())
        return sol.ys[-1]

    k, dk = jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])
    value, tangent = jax.jvp(y1, (k,), (dk,))
    assert jnp.allclose(tangent, -jnp.exp(-k) * dk, rtol=1e-4, atol=1e-7)
    ```
    """

    loop_kind = "lax"
    checkpoint_steps = False
