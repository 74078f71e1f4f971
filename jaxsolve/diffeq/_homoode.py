"""HomoODE: a deep equilibrium layer whose fixed point is found by homotopy continuation, i.e.
by integrating an ODE in the homotopy parameter instead of iterating the cell."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import implicit, nonlinear
from .._core import RESULTS, AbstractAdjoint, RecursiveCheckpointAdjoint
from ._controller import AbstractStepSizeController, PIDController
from ._rk import Tsit5
from ._solve import solve
from ._solver import AbstractSolver
from ._term import ODETerm


def _residual(z, cell, x):
    """G(z) = cell(z, x) - z: its zeros are the equilibria."""
    return cell(z, x) - z


def _newton_homotopy_field(lam, z, args):
    """dz/dλ = -(∂G/∂z)^{-1} G(z0) = (I - ∂cell/∂z)^{-1} G(z0), the path of the Newton homotopy
    H(z, λ) = G(z) - (1 - λ) G(z0) (H(z0, 0) = 0, H(z, 1) = G(z))."""
    del lam
    cell, x, g0 = args
    shape = z.shape
    flat = lambda v: v.reshape(-1)
    residual_flat = lambda v: flat(_residual(v.reshape(shape), cell, x))
    jacobian = jax.jacfwd(residual_flat)(flat(z))  # n JVPs of the cell, n = z.size
    return -jnp.linalg.solve(jacobian, flat(g0)).reshape(shape)


class HomoODE(eqx.Module):
    """A deep equilibrium layer solved by homotopy continuation: `HomoODE(cell, latent_shape)(x)`
    returns z* with `z* = cell(z*, x)` (the same equilibrium as `jaxsolve.nonlinear.DEQ`),
    found by integrating the Newton-homotopy ODE from z0 at λ = 0 to λ = 1 with
    `jaxsolve.diffeq.solve`.

    With `G(z) = cell(z, x) - z`, the homotopy `H(z, λ) = G(z) - (1 - λ) G(z0)` is zero at
    (z0, 0) and equals G at λ = 1; following its zero path gives the ODE
    `dz/dλ = -(∂G/∂z)^{-1} ∂H/∂λ = -(∂G/∂z)^{-1} G(z0)`, whose value at λ = 1 is the
    equilibrium wherever `I - ∂cell/∂z` stays invertible along the path (always, for a
    contractive cell). The Jacobian is formed with `z.size` forward-mode products of the cell
    and solved densely (LU): meant for latent states of up to a few hundred numbers.

    **Backward pass** (`adjoint=`):

    - `jaxsolve.nonlinear.ImplicitAdjoint()` (default): the implicit function theorem at the
      endpoint, through `jaxsolve.implicit` (one linear solve with `I - ∂cell/∂z`, as for
      `DEQ`). The endpoint is an equilibrium whatever path led there, so this is the exact
      gradient of the layer's meaning, costs memory independent of the number of ODE steps and
      needs no second derivatives of the cell; its error is of the order of the ODE's error
      (set the controller's tolerances accordingly).
    - `jaxsolve.diffeq.RecursiveCheckpointAdjoint()`: differentiate through the ODE steps
      (discretise-then-optimise). Exact for the computed endpoint including its ODE error,
      but it differentiates through the Jacobian solves (second derivatives of the cell) and
      its cost grows with the steps taken.

    **Arguments:**

    - `cell`: a callable (usually an `equinox.Module` holding the parameters) with
      `cell(z, x) -> z`; gradients flow to its arrays and to `x`.
    - `latent_shape`: the shape of z (a tuple); the path starts from zeros unless `z0` is given
      to `__call__` (e.g. a shared learnable initial point, as in the paper's accelerated form).
    - `solver`: a `jaxsolve.diffeq` ODE solver (default `Tsit5()`).
    - `controller`: default `PIDController(rtol=1e-4, atol=1e-4)`; `ConstantStep()` with
      `dt0` for a fixed number of steps.
    - `dt0`: the initial step in λ (default `None`: chosen automatically for adaptive steps).
    - `max_steps`: the most ODE steps (a Python int, default 64).
    - `adjoint`: see above.

    Non-convergence does not raise (training should not stop for one hard example): read
    `HomoODE.solve(x).result` and `.stats["num_steps"]`.

    **Example:**

    ```python
    import equinox as eqx


    class Cell(eqx.Module):
        linear: eqx.nn.Linear

        def __call__(self, z, x):
            return jnp.tanh(0.5 * self.linear(z) + x)


    key, x = jax.random.PRNGKey(0), jnp.ones(8)
    cell = Cell(eqx.nn.Linear(8, 8, key=key))
    z = js.diffeq.HomoODE(cell, latent_shape=(8,))(x)
    assert jnp.allclose(z, cell(z, x), atol=1e-3)  # the DEQ equilibrium
    grads = eqx.filter_grad(lambda c: jnp.sum(js.diffeq.HomoODE(c, (8,))(x) ** 2))(cell)
    ```

    Reference: Ding, Cui, Wang & Shi, "Two Sides of The Same Coin: Bridging Deep Equilibrium
    Models and Neural ODEs via Homotopy Continuation", NeurIPS 2023.
    """

    cell: Callable
    latent_shape: tuple[int, ...] = eqx.field(static=True)
    solver: AbstractSolver = Tsit5()
    controller: AbstractStepSizeController = PIDController(rtol=1e-4, atol=1e-4)
    dt0: float | None = None
    max_steps: int = eqx.field(static=True, default=64)
    adjoint: AbstractAdjoint = nonlinear.ImplicitAdjoint()

    def __check_init__(self):
        if not isinstance(self.adjoint, (nonlinear.ImplicitAdjoint, RecursiveCheckpointAdjoint)):
            raise TypeError(
                "`adjoint` must be jaxsolve.nonlinear.ImplicitAdjoint() or "
                f"jaxsolve.diffeq.RecursiveCheckpointAdjoint(), got {type(self.adjoint).__name__}"
            )

    def _integrate(self, z0, cell, x):
        g0 = _residual(z0, cell, x)
        sol = solve(
            ODETerm(_newton_homotopy_field),
            self.solver,
            0.0,
            1.0,
            z0,
            dt0=self.dt0,
            args=(cell, x, g0),
            controller=self.controller,
            max_steps=self.max_steps,
            adjoint=RecursiveCheckpointAdjoint(),
            throw=False,
        )
        z1 = sol.ys[-1]
        return z1, (sol.result, sol.stats)

    def solve(self, x, z0=None) -> nonlinear.Solution:
        """Return the full `jaxsolve.nonlinear.Solution` (value z*, result, stats: the ODE's
        `num_steps`, `num_accepted_steps`, `num_rejected_steps`, and `residual`, the max-norm
        of `cell(z*, x) - z*`)."""
        if z0 is None:
            z0 = jnp.zeros(self.latent_shape, jnp.result_type(x))
        if tuple(jnp.shape(z0)) != tuple(self.latent_shape):
            raise ValueError(
                f"`z0` must have shape latent_shape={self.latent_shape}, got {jnp.shape(z0)}"
            )
        try:
            out = eqx.filter_eval_shape(self.cell, z0, x)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"`cell(z, x)` failed on z of shape latent_shape={self.latent_shape}: {e}"
            ) from e
        if not hasattr(out, "shape") or tuple(out.shape) != tuple(self.latent_shape):
            raise ValueError(
                "`cell(z, x)` must return an array of shape latent_shape="
                f"{self.latent_shape}, got {getattr(out, 'shape', type(out).__name__)}"
            )
        if isinstance(self.adjoint, nonlinear.ImplicitAdjoint):
            z1, (result, stats) = implicit.implicit_root(
                lambda z, cell, x: self._integrate(z, cell, x),
                _residual,
                z0,
                (self.cell, x),
                solve=self.adjoint.linear_solver,
                has_aux=True,
                throw=False,
            )
        else:
            z1, (result, stats) = self._integrate(z0, self.cell, x)
        residual = jnp.max(jnp.abs(_residual(jax.lax.stop_gradient(z1), self.cell, x)))
        result = RESULTS.where(jnp.isfinite(residual), result, RESULTS.nonfinite)
        stats = dict(stats, residual=residual)
        return nonlinear.Solution(value=z1, result=result, stats=stats, state=None)

    def __call__(self, x, z0=None):
        """The equilibrium z*(x)."""
        return self.solve(x, z0).value
