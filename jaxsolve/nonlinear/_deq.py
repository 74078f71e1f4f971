"""Deep equilibrium layer: the output is the fixed point z* = cell(z*, x)."""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jax import lax

from ._adjoint import AbstractAdjoint, ImplicitAdjoint
from ._base import AbstractNonlinearSolver
from ._fixed import Anderson
from ._solution import Solution
from ._solve import fixed_point


def _apply_cell(z, args):
    cell, x = args
    return cell(z, x)


class DEQ(eqx.Module):
    """A deep equilibrium (DEQ) layer: `DEQ(cell, latent_shape)(x)` returns z* with
    `z* = cell(z*, x)`, found by Anderson acceleration (by default) and differentiated by the
    implicit function theorem: the backward pass is one linear solve with `I - d cell/dz` at z*
    (through `jaxsolve.implicit.custom_root`, which `fixed_point` uses), so memory does not grow
    with the number of forward iterations.

    **Arguments:**

    - `cell`: a callable (usually an `equinox.Module` holding the parameters theta) with
      `cell(z, x) -> z`; gradients flow to its arrays and to `x`.
    - `latent_shape`: the shape of z (a tuple); iteration starts from zeros unless `z0` is
      given to `__call__`.
    - `solver`: a fixed-point solver (default `Anderson(rtol=1e-4, atol=1e-4)`).
    - `max_steps`: the forward iteration cap (a Python int, default 50).
    - `adjoint`: `ImplicitAdjoint()` (default) or `RecursiveCheckpointAdjoint()`.

    The solver's hyperparameters are array leaves of the module (a new value does not
    recompile) but get zero gradient; exclude `deq.solver` from weight decay, e.g. by training
    `eqx.filter(model, eqx.is_inexact_array)` with `deq.solver` replaced by `None`.

    Non-convergence does not raise (training should not stop for one hard example): read
    `DEQ.solve(x).result` and `.stats["num_steps"]`.

    **Example:**

    ```python
    import equinox as eqx


    class Cell(eqx.Module):
        linear: eqx.nn.Linear

        def __call__(self, z, x):
            return jnp.tanh(0.5 * self.linear(z) + x)


    key, x = jax.random.PRNGKey(0), jnp.ones(8)
    deq = js.nonlinear.DEQ(Cell(eqx.nn.Linear(8, 8, key=key)), latent_shape=(8,))
    # z = deq(x) is the equilibrium z = cell(z, x); gradients are implicit, not unrolled
    loss, grads = eqx.filter_value_and_grad(lambda deq: jnp.sum(deq(x) ** 2))(deq)
    ```

    Reference: Bai, Kolter & Koltun, "Deep Equilibrium Models", NeurIPS 2019.
    """

    cell: Callable
    latent_shape: tuple[int, ...] = eqx.field(static=True)
    solver: AbstractNonlinearSolver = Anderson(rtol=1e-4, atol=1e-4)
    max_steps: int = eqx.field(static=True, default=50)
    adjoint: AbstractAdjoint = ImplicitAdjoint()

    def solve(self, x, z0=None) -> Solution:
        """Return the full `Solution` (value z*, result, stats)."""
        if z0 is None:
            z0 = jnp.zeros(self.latent_shape, jnp.result_type(x))
        # The solver's hyperparameters are arrays (so new values do not recompile), hence leaves
        # of this module that `eqx.is_inexact_array` selects; they are not trained.
        return fixed_point(
            _apply_cell,
            lax.stop_gradient(self.solver),
            z0,
            (self.cell, x),
            max_steps=self.max_steps,
            adjoint=self.adjoint,
            throw=False,
        )

    def __call__(self, x, z0=None):
        """The equilibrium z*(x)."""
        return self.solve(x, z0).value
