"""Public abstract base classes of the nonlinear family.

Every nonlinear solver is a final `equinox.Module` working on a 1-D array `y` (the entry points
flatten pytrees before they call it and unflatten after), with pure methods

- `init(fn, y, args, options) -> state`,
- `step(fn, y, args, options, state) -> (y, state)`,
- `terminate(fn, y, args, options, state) -> (done, result)`,

where `fn(y, args)` is the problem's function on flat arrays (the residual for a root finder, the
map for a fixed-point solver, the scalar objective for a minimiser, the residual vector for a
least-squares solver). `options` is a dict of static settings from the entry point (for example
`"loop_kind"`, the kind of `bounded_while_loop` that inner loops such as line searches use).

Users may drive `init`/`step`/`terminate` themselves in their own jitted loop.
"""

import abc
from typing import Any

import equinox as eqx
from jaxtyping import Array

from .._core import AbstractIterativeSolver, hyperparameter as hyperparameter


class AbstractNonlinearSolver(AbstractIterativeSolver):
    """A solver of one of the nonlinear problems (root, fixed point, minimum, least squares).

    Concrete solvers declare `rtol` and `atol` (array-valued float fields).

    **Example:**

    ```python
    # Drive a solver's init / step / terminate in your own jitted loop (on a flat 1-D array).
    fn, options = (lambda y, a: y**3 - a), {"loop_kind": "lax"}
    solver = js.nonlinear.Newton()


    @jax.jit
    def cube_root(a):
        def body(carry):
            y, state, _ = carry
            y, state = solver.step(fn, y, a, options, state)
            done, result = solver.terminate(fn, y, a, options, state)
            return y, state, done

        y0 = jnp.ones(1)
        carry = (y0, solver.init(fn, y0, a, options), jnp.array(False))
        return jax.lax.while_loop(lambda carry: ~carry[2], body, carry)[0]


    print(cube_root(2.0))  # [1.2599]
    ```
    """

    rtol: eqx.AbstractVar[Array]
    atol: eqx.AbstractVar[Array]

    @abc.abstractmethod
    def init(self, fn, y, args, options) -> Any:
        """Build the state at the initial point `y` (a 1-D array)."""

    @abc.abstractmethod
    def step(self, fn, y, args, options, state) -> tuple[Array, Any]:
        """One iteration: return the new iterate and state."""

    @abc.abstractmethod
    def terminate(self, fn, y, args, options, state) -> tuple[Array, Any]:
        """`(done, result)` after a step: a scalar bool and a `RESULTS` item."""


class AbstractRootFinder(AbstractNonlinearSolver):
    """Finds `y` with `fn(y, args) == 0` (`fn` maps y to an array of the same shape).

    **Example:**

    ```python
    solver = js.nonlinear.Broyden()
    assert isinstance(solver, js.nonlinear.AbstractRootFinder)
    fn = lambda y, _: {"x": y["x"] - jnp.cos(y["z"]), "z": y["z"] - 0.5 * y["x"]}
    print(js.nonlinear.root_find(fn, solver, {"x": 0.0, "z": 0.0}).value)  # pytrees work
    ```
    """


class AbstractFixedPointSolver(AbstractNonlinearSolver):
    """Finds `y` with `fn(y, args) == y`.

    **Example:**

    ```python
    solver = js.nonlinear.FixedPointIteration(damping=0.5)
    assert isinstance(solver, js.nonlinear.AbstractFixedPointSolver)
    print(js.nonlinear.fixed_point(lambda x, _: jnp.cos(x), solver, jnp.array(0.0)).value)  # 0.739
    ```
    """


class AbstractMinimiser(AbstractNonlinearSolver):
    """Finds a (local) minimiser of the scalar `fn(y, args)`; unconstrained, so the optimality
    condition used for implicit differentiation is `grad fn(y, args) == 0`.

    **Example:**

    ```python
    solver = js.nonlinear.BFGS()
    assert isinstance(solver, js.nonlinear.AbstractMinimiser)
    print(js.nonlinear.minimize(lambda y, c: jnp.sum((y - c) ** 2), solver, jnp.zeros(2), 3.0).value)
    ```
    """


class AbstractConstrainedMinimiser(AbstractMinimiser):
    """A minimiser over a convex set given by a projection (`constraint`).

    Its optimality condition, used for implicit differentiation, is the projected-gradient fixed
    point `y == constraint.project(y - grad fn(y, args))`.

    **Example:**

    ```python
    solver = js.nonlinear.ProjectedGradient(js.nonlinear.Box(0.0, 1.0))
    assert isinstance(solver, js.nonlinear.AbstractConstrainedMinimiser)
    fn = lambda y, _: jnp.sum((y - 2.0) ** 2)
    print(js.nonlinear.minimize(fn, solver, jnp.zeros(2)).value)  # [1, 1], on the box's face
    ```
    """

    constraint: eqx.AbstractVar[Any]


class AbstractLeastSquaresSolver(AbstractNonlinearSolver):
    """Minimises `0.5 * ||fn(y, args)||^2` where `fn` returns a residual vector.

    **Example:**

    ```python
    solver = js.nonlinear.GaussNewton()
    assert isinstance(solver, js.nonlinear.AbstractLeastSquaresSolver)
    t = jnp.linspace(0.0, 1.0, 10)
    residuals = lambda p, _: p[0] + p[1] * t - (1.0 + 2.0 * t)
    print(js.nonlinear.least_squares(residuals, solver, jnp.zeros(2)).value)  # [1, 2]
    ```
    """
