"""Root finders: Newton, Chord, Broyden and Bisection.

Newton, Chord and Broyden stop when the last step is small, `|dy| <= atol + rtol |y|`
elementwise, and the residual is small, `max|F(y)| <= atol + rtol max|F(y0)|`. A Jacobian that
cannot be solved with (a non-finite step) ends the solve with `RESULTS.singular`; a non-finite
residual with `RESULTS.nonfinite`; a residual 1e8 times its initial size that grew on three steps
in a row with `RESULTS.divergence` (see `_termination`).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._core import RESULTS, is_concrete
from ._base import AbstractRootFinder, hyperparameter
from ._termination import GrowthMonitor, failure_result


class RootState(NamedTuple):
    """Residual at the current point, the last step, the initial residual scale, a solver
    specific matrix (Chord's LU factors, Broyden's inverse Jacobian; None for Newton), and
    whether a linear solve failed."""

    residual: Array
    diff: Array
    residual_scale: Array
    matrix: object
    singular: Array
    monitor: GrowthMonitor


def _jacobian(fn, y, args):
    return jax.jacfwd(lambda y: fn(y, args))(y)


def _init_state(fn, y, args, matrix):
    residual = fn(y, args)
    scale = jnp.max(jnp.abs(residual))
    return RootState(
        residual=residual,
        diff=jnp.full_like(y, jnp.inf),
        residual_scale=scale,
        matrix=matrix,
        singular=jnp.array(False),
        monitor=GrowthMonitor.start(scale),
    )


def _root_terminate(solver, y, state):
    dtype = y.dtype
    atol, rtol = solver.atol.astype(dtype), solver.rtol.astype(dtype)
    step_small = jnp.all(jnp.abs(state.diff) <= atol + rtol * jnp.abs(y))
    residual_small = jnp.max(jnp.abs(state.residual)) <= atol + rtol * state.residual_scale
    nonfinite = ~jnp.all(jnp.isfinite(state.residual))
    diverged = state.monitor.diverged(atol)
    done = (step_small & residual_small) | state.singular | nonfinite | diverged
    result = RESULTS.where(state.singular, RESULTS.singular, RESULTS.successful)
    return done, failure_result(result, nonfinite, diverged)


def _advance(fn, y, args, diff, state, matrix):
    singular = ~jnp.all(jnp.isfinite(diff))
    diff = jnp.where(singular, jnp.zeros_like(diff), diff)
    y = y + diff
    residual = fn(y, args)
    state = state._replace(
        residual=residual,
        diff=diff,
        matrix=matrix,
        singular=singular,
        monitor=state.monitor.update(jnp.max(jnp.abs(residual))),
    )
    return y, state


class Newton(AbstractRootFinder):
    """Newton's method: solve J(y) dy = -F(y) with a dense LU factorisation each step.

    **Arguments:** `rtol`, `atol` (see the module docstring).

    **Example:**

    ```python
    fn = lambda y, a: jnp.array([y[0] ** 2 + y[1] ** 2 - a, y[0] - y[1]])
    sol = js.nonlinear.root_find(fn, js.nonlinear.Newton(), jnp.array([1.0, 0.5]), 2.0)
    print(sol.value, sol.stats["num_steps"])  # [1, 1]
    ```

    Reference: Kelley, *Solving Nonlinear Equations with Newton's Method*, SIAM 2003.
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)

    def init(self, fn, y, args, options):
        return _init_state(fn, y, args, None)

    def step(self, fn, y, args, options, state):
        jac = _jacobian(fn, y, args)
        diff = jnp.linalg.solve(jac, -state.residual)
        return _advance(fn, y, args, diff, state, None)

    def terminate(self, fn, y, args, options, state):
        return _root_terminate(self, y, state)


class Chord(AbstractRootFinder):
    """The chord method: Newton with the Jacobian at `y0` inverted once and reused.

    **Arguments:** `rtol`, `atol`. Converges linearly; cheap per step.

    **Example:**

    ```python
    fn = lambda y, a: y - a * jnp.cos(y)
    sol = js.nonlinear.root_find(fn, js.nonlinear.Chord(), jnp.zeros(3), jnp.array([0.1, 0.5, 1.0]))
    print(sol.value)  # the Jacobian is factorised once, at y0
    ```

    Reference: Kelley, *Solving Nonlinear Equations with Newton's Method*, SIAM 2003, §2.3.
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)

    def init(self, fn, y, args, options):
        # The inverse rather than LU factors: integer pivots in a loop carry trip up
        # closure conversion, and an n x n matvec per step is what the LU solve costs anyway.
        return _init_state(fn, y, args, jnp.linalg.inv(_jacobian(fn, y, args)))

    def step(self, fn, y, args, options, state):
        diff = -(state.matrix @ state.residual)
        return _advance(fn, y, args, diff, state, state.matrix)

    def terminate(self, fn, y, args, options, state):
        return _root_terminate(self, y, state)


class Broyden(AbstractRootFinder):
    """Broyden's ("good") method: a rank-one secant update of the inverse Jacobian, started from
    the exact inverse Jacobian at `y0`. One function evaluation per step, no Jacobians after init.

    **Arguments:** `rtol`, `atol`.

    **Example:**

    ```python
    fn = lambda y, a: jnp.tanh(y) + y - a
    sol = js.nonlinear.root_find(fn, js.nonlinear.Broyden(), jnp.zeros(2), jnp.array([0.5, 1.0]))
    print(sol.value)  # no Jacobian evaluations after the first
    ```

    Reference: Broyden, "A class of methods for solving nonlinear simultaneous equations",
    Math. Comp. 1965.
    """

    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)

    def init(self, fn, y, args, options):
        return _init_state(fn, y, args, jnp.linalg.inv(_jacobian(fn, y, args)))

    def step(self, fn, y, args, options, state):
        inv_jac = state.matrix
        diff = -(inv_jac @ state.residual)
        y_new, new_state = _advance(fn, y, args, diff, state, inv_jac)
        df = new_state.residual - state.residual
        b_df = inv_jac @ df
        denom = jnp.vdot(diff, b_df)
        ok = jnp.abs(denom) > jnp.finfo(y.dtype).tiny
        update = jnp.outer(diff - b_df, diff @ inv_jac) / jnp.where(ok, denom, 1.0)
        return y_new, new_state._replace(matrix=jnp.where(ok, inv_jac + update, inv_jac))

    def terminate(self, fn, y, args, options, state):
        return _root_terminate(self, y, state)


class BisectionState(NamedTuple):
    lower: Array
    upper: Array
    lower_negative: Array
    residual: Array
    bracketed: Array


class Bisection(AbstractRootFinder):
    """Bisection on the bracket `[lower, upper]` for a scalar root (`y0` only fixes the dtype).

    **Arguments:** `lower`, `upper` (the bracket; `fn` must change sign on it, otherwise the solve
    ends with `RESULTS.nonconvergence`), `rtol`, `atol` (stop when the bracket is narrower than
    `atol + rtol |y|`, or `fn(y) == 0`). All are array fields.

    **Example:**

    ```python
    solver = js.nonlinear.Bisection(lower=0.0, upper=2.0)
    print(js.nonlinear.root_find(lambda x, _: x**2 - 2.0, solver, 1.0).value)  # 1.41421
    ```
    """

    lower: Array = hyperparameter()
    upper: Array = hyperparameter()
    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)

    def __check_init__(self):
        for name in ("lower", "upper"):
            if getattr(self, name) is None:
                raise ValueError(f"Bisection needs the bracket: pass `{name}=`")
            if jnp.shape(getattr(self, name)) != ():
                raise ValueError(f"Bisection's `{name}` must be a scalar")
        if is_concrete(self.lower) and is_concrete(self.upper):
            if not float(self.lower) < float(self.upper):
                raise ValueError(
                    f"Bisection needs `lower` < `upper`, got {float(self.lower)}, {float(self.upper)}"
                )

    def init(self, fn, y, args, options):
        if y.size != 1:
            raise ValueError(f"Bisection solves scalar problems; `y0` has {y.size} elements")
        lower = jnp.reshape(self.lower.astype(y.dtype), y.shape)
        upper = jnp.reshape(self.upper.astype(y.dtype), y.shape)
        f_lower, f_upper = fn(lower, args), fn(upper, args)
        return BisectionState(
            lower=lower,
            upper=upper,
            lower_negative=f_lower < 0,
            residual=f_lower,
            bracketed=jnp.all(jnp.sign(f_lower) * jnp.sign(f_upper) <= 0),
        )

    def step(self, fn, y, args, options, state):
        mid = 0.5 * (state.lower + state.upper)
        f_mid = fn(mid, args)
        go_up = (f_mid < 0) == state.lower_negative
        return mid, state._replace(
            lower=jnp.where(go_up, mid, state.lower),
            upper=jnp.where(go_up, state.upper, mid),
            residual=f_mid,
        )

    def terminate(self, fn, y, args, options, state):
        dtype = y.dtype
        width = jnp.max(state.upper - state.lower)
        tol = self.atol.astype(dtype) + self.rtol.astype(dtype) * jnp.max(jnp.abs(y))
        converged = (width <= tol) | jnp.all(state.residual == 0)
        done = converged | ~state.bracketed
        result = RESULTS.where(state.bracketed, RESULTS.successful, RESULTS.nonconvergence)
        return done, result
