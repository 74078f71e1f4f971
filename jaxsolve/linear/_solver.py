"""The public abstract linear solvers and the solution object."""

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .._core import RESULTS, AbstractIterativeSolver, AbstractSolution, check_positive
from ._operator import AbstractLinearOperator


class Solution(AbstractSolution):
    """What `jaxsolve.linear.solve` returns.

    - `value`: the solution `x`, with the input structure of the operator.
    - `result`: a `jaxsolve.RESULTS` item.
    - `stats`: a dict, with at least `"num_steps"` (0 for direct solvers).
    - `state`: `None` (linear solves keep no state worth returning).
    """

    value: Any
    result: RESULTS
    stats: dict
    state: Any = None


class AbstractLinearSolver(eqx.Module):
    """A method for solving `A x = b` with `A` an operator on single arrays.

    Subclasses implement `compute(operator, vector) -> (x, result, stats)` where `operator` is
    an `AbstractLinearOperator` whose input and output are single arrays and `vector` is an
    array of the output's shape. `jaxsolve.linear.solve` flattens pytree operators to 1-D
    first, but keeps an operator on one n-d array as it is (so a stencil on a grid is applied
    without reshapes); dense methods reshape to 1-D themselves. `compute` need not be differentiable: `solve`
    differentiates the *solution* (a tangent or cotangent is another solve with this solver).
    `transpose_compute` solves `A^T y = c` (used for reverse mode); by default it calls
    `compute` on `operator.transpose()`.
    """

    @abc.abstractmethod
    def compute(
        self, operator: AbstractLinearOperator, vector: jax.Array
    ) -> tuple[jax.Array, RESULTS, dict]:
        """Solve `operator x = vector`; return `(x, result, stats)`."""

    @abc.abstractmethod
    def needs_square(self) -> bool:
        """Whether the solver only handles square systems."""


class AbstractIterativeLinearSolver(AbstractLinearSolver, AbstractIterativeSolver):
    """A linear solver advanced one pure step at a time, stopping on a residual test.

    Subclasses implement `init(operator, vector) -> state`, `step(operator, vector, state)
    -> state`, `terminate(operator, vector, state) -> (done, result)` and
    `extract(state) -> (x, num_steps)`; the fields `rtol`, `atol` and `max_steps` (None means
    `10 * size`) are shared. `compute` runs the steps in a `lax.while_loop`: iterative linear
    solves are never differentiated through (gradients are solves too), so the fastest loop
    is the right one.
    """

    rtol: eqx.AbstractVar[jax.Array]
    atol: eqx.AbstractVar[jax.Array]
    max_steps: eqx.AbstractVar[int | None]

    def __check_init__(self):
        check_positive("rtol", self.rtol, allow_zero=True)
        check_positive("atol", self.atol, allow_zero=True)
        steps = self.max_steps
        if steps is not None and (
            not isinstance(steps, int) or isinstance(steps, bool) or steps < 1
        ):
            raise ValueError(f"`max_steps` must be None or a positive Python int, got {steps!r}")

    @abc.abstractmethod
    def extract(self, state: Any) -> tuple[jax.Array, jax.Array]:
        """Return `(x, num_steps)` from a state."""

    def needs_square(self) -> bool:
        return True

    def step_limit(self, operator: AbstractLinearOperator) -> int:
        """The step bound used: `max_steps`, or 10 times the system size when it is None."""
        return self.max_steps if self.max_steps is not None else 10 * operator.in_size()

    def compute(self, operator, vector):
        limit = self.step_limit(operator)
        state = self.init(operator, vector)

        def cond(carry):
            state, _ = carry
            done, _ = self.terminate(operator, vector, state)
            _, num_steps = self.extract(state)
            return jnp.logical_and(jnp.logical_not(done), num_steps < limit)

        def body(carry):
            state, _ = carry
            return self.step(operator, vector, state), None

        state, _ = lax.while_loop(cond, body, (state, None))
        done, result = self.terminate(operator, vector, state)
        x, num_steps = self.extract(state)
        # `terminate` reports failures (breakdown, non-finite) itself; running out of steps
        # without meeting the tolerance is the generic failure of an iterative solve.
        result = RESULTS.where(done, result, RESULTS.linear_solve_failed)
        # One pass over x at the end, not per step: the loop tests scalars only.
        result = RESULTS.where(jnp.all(jnp.isfinite(x)), result, RESULTS.nonfinite)
        return x, result, {"num_steps": num_steps}


def vector_norm(x: jax.Array) -> jax.Array:
    """The Euclidean norm of an array of any shape (as a flat vector)."""
    return jnp.sqrt(jnp.vdot(x, x).real)


def tolerance(solver: AbstractIterativeLinearSolver, vector: jax.Array) -> jax.Array:
    """The residual-norm threshold `atol + rtol * |b|`, in the dtype of `vector`."""
    b_norm = vector_norm(vector)
    return (solver.atol + solver.rtol * b_norm).astype(b_norm.dtype)


def converged_result(residual_norm, threshold) -> tuple[jax.Array, RESULTS]:
    """`(done, result)` for a residual test; a non-finite residual norm stops the loop."""
    finite = jnp.isfinite(residual_norm)
    done = (residual_norm <= threshold) | ~finite
    return done, RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)
