"""The public abstract linear solvers and the solution object."""

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core import (
    RESULTS,
    AbstractIterativeSolver,
    AbstractSolution,
    bounded_while_loop,
    check_positive,
)
from ._operator import AbstractLinearOperator


class Solution(AbstractSolution):
    """What `jaxsolve.linear.solve` returns.

    - `value`: the solution `x`, with the input structure of the operator.
    - `result`: a `jaxsolve.RESULTS` item.
    - `stats`: a dict, with at least `"num_steps"` (0 for direct solvers).
    - `state`: `None` (linear solves keep no state worth returning).

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    sol = js.linear.solve(A, b)
    print(sol.value, sol.result == js.RESULTS.successful, sol.stats["num_steps"], sol.state)
    ```
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

    **Example:**

    ```python
    class Diagonal(js.linear.AbstractLinearSolver):
        # exact for diagonal systems: x = b / diag(A)
        def compute(self, operator, vector):
            x = vector / jnp.diag(operator.as_matrix())
            return x, js.RESULTS.successful, {"num_steps": jnp.array(0)}

        def needs_square(self):
            return True


    A, b = jnp.diag(jnp.array([2.0, 4.0])), jnp.array([1.0, 1.0])
    print(js.linear.solve(A, b, Diagonal()).value)  # [0.5, 0.25]
    print(jax.grad(lambda b: js.linear.solve(A, b, Diagonal()).value.sum())(b))  # a solve too
    ```
    """

    @abc.abstractmethod
    def compute(
        self, operator: AbstractLinearOperator, vector: jax.Array
    ) -> tuple[jax.Array, RESULTS, dict]:
        """Solve `operator x = vector`; return `(x, result, stats)`."""

    @abc.abstractmethod
    def needs_square(self) -> bool:
        """Whether the solver only handles square systems."""


class DirectState(NamedTuple):
    """The state of a direct solver run as a one-step solver: the solution once computed, its
    `RESULTS` item, and whether the (single) step has run.

    **Example:**

    ```python
    A, b = jnp.array([[2.0, 1.0], [1.0, 3.0]]), jnp.array([1.0, 2.0])
    op, solver = js.linear.MatrixOperator(A), js.linear.Cholesky()
    state = solver.init(op, b)  # DirectState(x=zeros, result=successful, done=False)
    state = solver.step(op, b, state)
    print(state.x, state.result == js.RESULTS.successful, state.done)
    ```
    """

    x: jax.Array
    result: RESULTS
    done: jax.Array


class AbstractDirectLinearSolver(AbstractLinearSolver, AbstractIterativeSolver):
    """A solver whose work is one call of `compute`: the factorisations `LU`, `Cholesky`, `QR`,
    and `Auto` (which delegates to the solver it picks). Subclasses implement `compute` and
    `needs_square` only.

    It follows the solver contract as a solver that finishes in one step, so code written
    against `init`/`step`/`terminate` drives direct and iterative solvers alike:
    `init(operator, vector)` holds zeros, `step(operator, vector, state)` runs `compute`, and
    `terminate` is done after that step with `compute`'s result.

    **Example:**

    ```python
    A, b = jnp.array([[2.0, 1.0], [1.0, 3.0]]), jnp.array([1.0, 2.0])
    op, solver = js.linear.MatrixOperator(A), js.linear.LU()
    state = solver.step(op, b, solver.init(op, b))
    print(solver.terminate(op, b, state), state.x)  # (True, successful), A^{-1} b
    ```
    """

    def init(self, operator: AbstractLinearOperator, vector: jax.Array) -> DirectState:
        # The shape of x follows the operator's input (QR: fewer unknowns than equations).
        x = jax.eval_shape(lambda: self.compute(operator, vector)[0])
        return DirectState(jnp.zeros(x.shape, x.dtype), RESULTS.successful, jnp.array(False))

    def step(self, operator: AbstractLinearOperator, vector: jax.Array, state: DirectState):
        x, result, _ = self.compute(operator, vector)
        return DirectState(x, result, jnp.array(True))

    def terminate(self, operator: Any, vector: jax.Array, state: DirectState):
        return state.done, state.result


class AbstractIterativeLinearSolver(AbstractLinearSolver, AbstractIterativeSolver):
    """A linear solver advanced one pure step at a time, stopping on a residual test.

    Subclasses implement `init(operator, vector) -> state`, `step(operator, vector, state)
    -> state`, `terminate(operator, vector, state) -> (done, result)` and
    `extract(state) -> (x, num_steps)`; the fields `rtol`, `atol` and `max_steps` (None means
    `10 * size`) are shared. `compute` runs the steps in `bounded_while_loop(kind="lax")`: iterative linear
    solves are never differentiated through (gradients are solves too), so the fastest loop
    is the right one.

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])
    op, solver = js.linear.MatrixOperator(A), js.linear.CG(rtol=1e-6, atol=0.0)
    assert isinstance(solver, js.linear.AbstractIterativeLinearSolver)
    # init / step / terminate in your own jitted loop (solve() does this for you)
    state = jax.jit(lambda b: jax.lax.while_loop(
        lambda s: ~solver.terminate(op, b, s)[0], lambda s: solver.step(op, b, s), solver.init(op, b)
    ))(b)
    x, num_steps = solver.extract(state)
    print(x, num_steps, A @ x - b)
    ```
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

        def keep_going(state):
            done, _ = self.terminate(operator, vector, state)
            # The bound is on the solver's own count (GMRES counts Arnoldi steps, several per
            # `step`), so it is tested here; the loop's own bound is then never the one hit.
            _, num_steps = self.extract(state)
            return jnp.logical_not(done) & (num_steps < limit)

        state = bounded_while_loop(
            keep_going,
            lambda state: self.step(operator, vector, state),
            self.init(operator, vector),
            max_steps=limit,
            kind="lax",
        ).value
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
