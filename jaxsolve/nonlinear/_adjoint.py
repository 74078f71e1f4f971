"""How gradients flow through a nonlinear solve (the `adjoint=` argument).

- `ImplicitAdjoint(linear_solver=None)` (default): the implicit function theorem at the solution,
  through `jaxsolve.implicit.custom_root`. Reverse and forward mode; the forward iterations are
  never unrolled and the backward pass costs one linear solve, whatever the iteration count.
- `RecursiveCheckpointAdjoint()`, `DirectAdjoint()`, `ForwardMode()`: differentiate the
  iterations themselves (the adjoints shared with `jaxsolve.diffeq`; reverse mode, both modes,
  forward mode). Use them when the solution is not accurate enough for the implicit function
  theorem, or to differentiate the truncated iteration itself.
"""

from typing import Any

import jax
import jax.numpy as jnp

from .._core import (
    AbstractAdjoint as AbstractAdjoint,
    DirectAdjoint as DirectAdjoint,
    ForwardMode as ForwardMode,
    RecursiveCheckpointAdjoint as RecursiveCheckpointAdjoint,
)


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

    **Example:**

    ```python
    loss = lambda w, lam: jnp.sum((w - 1.0) ** 2) + lam * jnp.sum(w**2)
    adjoint = js.nonlinear.ImplicitAdjoint(linear_solver=js.linear.CG(rtol=1e-6, atol=0.0))
    w = lambda lam: js.nonlinear.minimize(loss, js.nonlinear.BFGS(), jnp.zeros(2), lam,
                                          adjoint=adjoint).value
    print(jax.grad(lambda lam: w(lam).sum())(0.5))  # d/dlam 2 / (1 + lam) = -8/9
    ```

    Reference: Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022.
    """

    linear_solver: Any = None
    loop_kind = "lax"
    checkpoint_steps = False

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
