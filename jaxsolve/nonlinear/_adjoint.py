"""How gradients flow through a nonlinear solve (the `adjoint=` argument).

- `ImplicitAdjoint(linear_solver=None)` (default): the implicit function theorem at the solution,
  through `jaxsolve.implicit.custom_root`. Reverse and forward mode; the forward iterations are
  never unrolled and the backward pass costs one linear solve, whatever the iteration count.
- `RecursiveCheckpointAdjoint()`: differentiate the iterations themselves, run in the
  checkpointed `bounded_while_loop` (memory O(sqrt(max_steps)) iterates). Use it when the
  solution is not accurate enough for the implicit function theorem, or to differentiate the
  truncated iteration itself.
"""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp


class AbstractAdjoint(eqx.Module):
    """Decides how a solve is differentiated.

    `apply(primal, optimality, y0, args)` returns what `primal(y0, args) -> (y, aux)` returns, with
    derivatives of `y` with respect to `args` as the adjoint decides; `optimality(y, args)` is zero
    at a solution. `loop_kind` is the kind of `bounded_while_loop` the primal should run.
    """

    loop_kind: eqx.AbstractClassVar[str]

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
        strict minimum); `throw` that failed derivative solves raise (the entry point's
        `throw`)."""


class ImplicitAdjoint(AbstractAdjoint):
    """Implicit differentiation (the implicit function theorem) at the computed solution.

    **Arguments:**

    - `linear_solver`: the solver for the backward (and tangent) linear system, passed to
      `jaxsolve.implicit.custom_root` as `solve`. `None` (default) picks: for `minimize` with
      an unconstrained minimiser and for `least_squares`, matrix-free conjugate gradients on the
      Hessian (symmetric positive definite at a strict minimum; Hessian-vector products only,
      no Jacobian is formed, and the condition number is not squared), with a relative
      tolerance of 1e-10 in float64 and 1e-6 in float32; otherwise `custom_root`'s default
      (`jaxsolve.linear.Auto`: LU up to 512 unknowns, else GMRES).

    The derivative is exact for an exact solution; its error is of the order of the solve's
    residual, so set `rtol`/`atol` of the solver accordingly. With the entry point's
    `throw=True` (default) a tangent or cotangent solve that fails (did not converge, singular
    Hessian or Jacobian) raises when the derivative is computed; with `throw=False` it is not
    checked.

    Reference: Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022.
    """

    linear_solver: Any = None
    loop_kind = "lax"

    def apply(self, primal, optimality, y0, args, *, positive_definite=False, throw=True):
        from .. import linear
        from ..implicit import custom_root

        solve, tags = self.linear_solver, ()
        if positive_definite:
            tags = ("symmetric", "positive_definite")
            if solve is None:
                dtype = jnp.result_type(*jax.tree.leaves(y0))
                tol = 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-6
                solve = linear.CG(rtol=tol, atol=0.0)
        wrapped = custom_root(optimality, solve=solve, has_aux=True, tags=tags, throw=throw)
        wrapped = wrapped(primal)
        return wrapped(y0, args)


class RecursiveCheckpointAdjoint(AbstractAdjoint):
    """Differentiate through the iterations, run in a checkpointed bounded while loop.

    Memory on the backward pass grows like sqrt(max_steps) iterates; the gradient is that of the
    computed (possibly truncated) iteration, not of the exact solution.
    """

    loop_kind = "checkpointed"

    def apply(self, primal, optimality, y0, args, *, positive_definite=False, throw=True):
        return primal(y0, args)
