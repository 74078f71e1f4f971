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
    """Finds `y` with `fn(y, args) == 0` (`fn` maps y to an array of the same shape)."""


class AbstractFixedPointSolver(AbstractNonlinearSolver):
    """Finds `y` with `fn(y, args) == y`."""


class AbstractMinimiser(AbstractNonlinearSolver):
    """Finds a (local) minimiser of the scalar `fn(y, args)`; unconstrained, so the optimality
    condition used for implicit differentiation is `grad fn(y, args) == 0`."""


class AbstractConstrainedMinimiser(AbstractMinimiser):
    """A minimiser over a convex set given by a projection (`constraint`).

    Its optimality condition, used for implicit differentiation, is the projected-gradient fixed
    point `y == constraint.project(y - grad fn(y, args))`.
    """

    constraint: eqx.AbstractVar[Any]


class AbstractLeastSquaresSolver(AbstractNonlinearSolver):
    """Minimises `0.5 * ||fn(y, args)||^2` where `fn` returns a residual vector."""
