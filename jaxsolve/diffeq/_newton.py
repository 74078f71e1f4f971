"""The modified Newton iteration of the stiff (implicit) solvers, as a `jaxsolve.nonlinear` root
finder.

An implicit Runge–Kutta stage solves `F(z) = z - psi - h gamma f(t, z) = 0`. Serious stiff codes
(Hairer & Wanner, Solving ODEs II, §IV.8) do not run a full Newton method on it: the Jacobian
`J = df/dy` is evaluated once per step, `M = I - h gamma J` is factorised once per step (one
`gamma` for every stage of an ESDIRK method, so one factorisation serves them all), and each
stage iterates `z <- z - M^{-1} F(z)` (the chord / simplified Newton method). The iteration
stops on Hairer's test: with `theta` the observed contraction rate of the updates, it has
converged when `theta / (1 - theta) * |dz| <= kappa`, where `|.|` is the RMS norm scaled by
`atol + rtol |z|`; it has failed when `theta >= 1` (divergence), a value is not finite, or the
factorisation is singular. A failure is reported in the root-finding result, and the stiff
solver rejects the step (the step-size controller shrinks it).
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array

from .. import linear, nonlinear
from .._core import RESULTS, check_positive, hyperparameter


class Factor(eqx.Module):
    """A factorised Newton matrix `M`: `solve(r)` returns `(M^{-1} r, ok)`.

    With a direct linear solver (`LU`, `Cholesky`, `QR`, `Auto`) the solver's factorisation is
    computed once, here, and turned into `M^{-1}` by solving for the columns of the identity
    (one factorisation, `n` back substitutions, batched); every Newton iteration is then one
    matrix-vector product. With an iterative solver (`GMRES`, `BiCGStab`, ...) each iteration
    runs the solver on `M` (nothing is factorised).
    """

    matrix: Array
    inverse: Array | None
    ok: Array
    linear_solver: Any

    @classmethod
    def build(cls, matrix, linear_solver) -> "Factor":
        operator = linear.MatrixOperator(matrix)
        if isinstance(linear_solver, linear.AbstractDirectLinearSolver):
            eye = jnp.eye(matrix.shape[0], dtype=matrix.dtype)
            columns, results, _ = jax.vmap(
                lambda e: linear_solver.compute(operator, e), out_axes=(1, 0, 0)
            )(eye)
            ok = jnp.all(results == RESULTS.successful) & jnp.all(jnp.isfinite(columns))
            return cls(matrix, columns, ok, linear_solver)
        return cls(matrix, None, jnp.array(True), linear_solver)

    def solve(self, vector):
        if self.inverse is not None:
            return self.inverse @ vector, self.ok
        x, result, _ = self.linear_solver.compute(linear.MatrixOperator(self.matrix), vector)
        return x, self.ok & (result == RESULTS.successful)


class NewtonState(NamedTuple):
    """The state of `ModifiedNewton`: the factorised matrix, the scaled norm of the last update,
    the observed contraction rate, the number of updates, and whether the iteration failed."""

    factor: Factor
    norm: Array
    rate: Array
    count: Array
    failed: Array


def _rms(x):
    return jnp.sqrt(jnp.mean(jnp.abs(x) ** 2))


class ModifiedNewton(nonlinear.AbstractRootFinder):
    """The modified (simplified) Newton method of stiff ODE solvers: the Newton matrix is
    factorised once and reused, and the iteration stops on the contraction-rate test of Hairer
    & Wanner (Solving ODEs II, §IV.8).

    This is the default `root_finder` of `ImplicitEuler`, `Kvaerno3`, `Kvaerno4` and `Kvaerno5`,
    which hand it the matrix `I - h gamma J` factorised once per step (with their
    `linear_solver`). On its own (`jaxsolve.nonlinear.root_find`) it factorises the Jacobian of
    `fn` at `y0` once, with `linear_solver`, like the chord method.

    **Arguments:**

    - `rtol`, `atol`: the scale of the convergence test, `atol + rtol |y|` elementwise; set
      them to the step-size controller's tolerances (as diffrax does). `rtol` is raised to at
      least `1000 eps` of the dtype, so that float32 stages can converge.
    - `kappa`: the test is `theta / (1 - theta) * RMS(dy / scale) <= kappa` (default 0.01).
    - `linear_solver`: factorises the Jacobian when the solver is used on its own (default
      `jaxsolve.linear.LU()`).
    - `factor`: a prepared `Factor` (set by the stiff solvers; leave it `None`).

    **Example:**

    ```python
    fn = lambda y, a: y + 0.1 * y**3 - a
    sol = js.nonlinear.root_find(fn, js.diffeq.ModifiedNewton(rtol=1e-8, atol=1e-8),
                                 jnp.zeros(3), jnp.array([0.5, 1.0, 2.0]))
    assert jnp.allclose(fn(sol.value, jnp.array([0.5, 1.0, 2.0])), 0.0, atol=1e-6)
    ```
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-9)
    kappa: Array = hyperparameter(1e-2)
    linear_solver: Any = linear.LU()
    factor: Factor | None = None

    def __check_init__(self):
        check_positive("ModifiedNewton.rtol", self.rtol, allow_zero=True)
        check_positive("ModifiedNewton.atol", self.atol, allow_zero=True)
        check_positive("ModifiedNewton.kappa", self.kappa)
        if not isinstance(self.linear_solver, linear.AbstractLinearSolver):
            raise TypeError(
                "`linear_solver` must be a jaxsolve.linear solver (LU(), GMRES(...), ...), got "
                f"{type(self.linear_solver).__name__}"
            )

    def with_factor(self, factor: Factor) -> "ModifiedNewton":
        """This root finder with a prepared factorisation of the Newton matrix."""
        return ModifiedNewton(self.rtol, self.atol, self.kappa, self.linear_solver, factor)

    def init(self, fn, y, args, options):
        factor = self.factor
        if factor is None:
            jac = jax.jacfwd(lambda z: fn(z, args))(lax.stop_gradient(y))
            factor = Factor.build(jac, self.linear_solver)
        inf = jnp.asarray(jnp.inf, y.dtype)
        return NewtonState(factor, inf, jnp.zeros((), y.dtype), jnp.array(0), ~factor.ok)

    def step(self, fn, y, args, options, state):
        dtype = y.dtype
        residual = fn(y, args)
        diff, ok = state.factor.solve(-residual)
        y_new = y + diff
        rtol = jnp.maximum(self.rtol.astype(dtype), 1000 * jnp.finfo(dtype).eps)
        scale = self.atol.astype(dtype) + rtol * jnp.abs(y_new)
        norm = _rms(diff / scale)
        rate = jnp.where(state.count >= 1, norm / jnp.where(state.norm > 0, state.norm, 1), 0)
        rate = rate.astype(dtype)
        finite = jnp.isfinite(norm)
        failed = state.failed | ~ok | ~finite | ((state.count >= 1) & (rate >= 1) & (norm > 0))
        y_new = jnp.where(finite, y_new, y)
        return y_new, NewtonState(state.factor, norm, rate, state.count + 1, failed)

    def terminate(self, fn, y, args, options, state):
        kappa = self.kappa.astype(state.norm.dtype)
        rate = jnp.minimum(state.rate, 0.99)
        eta = rate / (1 - rate)
        first = (state.count == 1) & (state.norm <= 0.1 * kappa)
        later = (state.count >= 2) & (eta * state.norm <= kappa)
        converged = (state.norm == 0) | first | later
        done = converged | state.failed
        result = RESULTS.where(state.failed, RESULTS.nonconvergence, RESULTS.successful)
        return done, result
