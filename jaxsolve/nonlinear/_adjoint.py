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


class AbstractAdjoint(eqx.Module):
    """Decides how a solve is differentiated.

    `apply(primal, optimality, y0, args)` returns what `primal(y0, args) -> (y, aux)` returns, with
    derivatives of `y` with respect to `args` as the adjoint decides; `optimality(y, args)` is zero
    at a solution. `loop_kind` is the kind of `bounded_while_loop` the primal should run.
    """

    loop_kind: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def apply(self, primal: Callable, optimality: Callable, y0: Any, args: Any) -> tuple[Any, Any]:
        """Run `primal` with this adjoint's derivative rule."""


class ImplicitAdjoint(AbstractAdjoint):
    """Implicit differentiation (the implicit function theorem) at the computed solution.

    **Arguments:**

    - `linear_solver`: the solver for the backward (and tangent) linear system, passed to
      `jaxsolve.implicit.custom_root` as `solve`; `None` uses its default.

    The derivative is exact for an exact solution; its error is of the order of the solve's
    residual, so set `rtol`/`atol` of the solver accordingly.

    Reference: Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022.
    """

    linear_solver: Any = None
    loop_kind = "lax"

    def apply(self, primal, optimality, y0, args):
        from ..implicit import custom_root

        solve = custom_root(optimality, solve=self.linear_solver, has_aux=True)(primal)
        return solve(y0, args)


class RecursiveCheckpointAdjoint(AbstractAdjoint):
    """Differentiate through the iterations, run in a checkpointed bounded while loop.

    Memory on the backward pass grows like sqrt(max_steps) iterates; the gradient is that of the
    computed (possibly truncated) iteration, not of the exact solution.
    """

    loop_kind = "checkpointed"

    def apply(self, primal, optimality, y0, args):
        return primal(y0, args)
