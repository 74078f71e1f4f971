"""Public abstract base classes of the solver contract (DESIGN.md section 2).

Every algorithm in jaxsolve is a final `equinox.Module` whose float hyperparameters are
`hyperparameter()` fields (arrays: a new value does not recompile) and whose work is done by
pure methods. The entry points (`linear.solve`, `nonlinear.minimize`, `nonlinear.sinkhorn`, ...)
run those methods in `bounded_while_loop` or `scan_steps`; users may run them in their own
jitted loop instead. Each family exports a more specific abstract class derived from these, so
users can write their own solver without importing private modules.
"""

import abc
from typing import Any

import equinox as eqx


class AbstractSolver(eqx.Module):
    """An algorithm advanced one pure step at a time.

    The contract, with the same argument order in every family (the problem first, the state
    last):

    - `init(*problem) -> state` builds the state: a pytree of arrays whose structure, shapes
      and dtypes never change between steps, so the steps can run in `lax.scan`, in a bounded
      while loop, or in the user's own jitted loop.
    - `step(*problem, state) -> state` advances one step. It is pure and touches nothing else.

    `problem` is what the family's entry point hands every method, in the same order:
    `(operator, vector)` for linear solvers, `(cost, a, b)` for `nonlinear.Sinkhorn`,
    `(fn, y, args, options)` for the nonlinear solvers, `(model, ts, i)` for diffusion samplers
    (`init(model, x_T, ts, key)`), `(terms, t0, t1, y0, args, increment)` for diffeq solvers.
    The nonlinear family carries its iterate `y` beside the state rather than inside it, so its
    `step` returns the pair `(y, state)`, still with the state last; a diffeq step returns a
    `StepOutput` (the new value, its error estimate, dense-output data and the state), since
    the controller, not the solver, decides whether the step is kept; every other family
    returns the state alone.

    **Example** (a user's loop; `init`/`step`/`terminate` of a linear solver):

    ```python
    A, b = jnp.array([[4.0, 1.0], [1.0, 3.0]]), jnp.array([1.0, 2.0])
    op, solver = js.linear.MatrixOperator(A), js.linear.CG(rtol=1e-10, atol=0.0)
    state = jax.lax.while_loop(
        lambda s: ~solver.terminate(op, b, s)[0],
        lambda s: solver.step(op, b, s),
        solver.init(op, b),
    )
    x, num_steps = solver.extract(state)
    ```
    """

    @abc.abstractmethod
    def init(self, *args: Any, **kwargs: Any) -> Any:
        """Build the initial state from the problem."""

    @abc.abstractmethod
    def step(self, *args: Any, **kwargs: Any) -> Any:
        """Advance one step: `step(*problem, state)`, a pure function of its inputs."""


class AbstractIterativeSolver(AbstractSolver):
    """A solver that decides by itself when it has finished.

    Adds `terminate(*problem, state) -> (done, result)` to `AbstractSolver`'s contract: `done`
    is a scalar bool array (stop now), `result` a `jaxsolve.RESULTS` item saying how the solve
    stands: `RESULTS.successful` when it converged, otherwise the failure that stops it (for
    example `RESULTS.nonfinite` or `RESULTS.breakdown`). Running out of steps is not the
    solver's business: the loop that runs it reports `RESULTS.max_steps_reached` (or the
    family's equivalent).
    """

    @abc.abstractmethod
    def terminate(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """Return `(done, result)`: a scalar bool array and a `RESULTS` item."""
