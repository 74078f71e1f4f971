"""Public abstract base classes of the solver contract (DESIGN.md section 2).

Every algorithm in jaxsolve is a final `equinox.Module` whose hyperparameters are fields, with
pure `init` and `step` methods (and `terminate` where it stops by itself). Each family exports a
more specific abstract class derived from these, so users can write their own solver without
importing private modules.
"""

import abc
from typing import Any

import equinox as eqx


class AbstractSolver(eqx.Module):
    """An algorithm advanced one pure step at a time.

    Subclasses implement `init(...) -> state` and `step(..., state) -> state`; the state is a
    pytree of arrays whose structure does not change between steps, so steps can run in
    `lax.scan` or a bounded while loop, or in the user's own jitted loop.
    """

    @abc.abstractmethod
    def init(self, *args: Any, **kwargs: Any) -> Any:
        """Build the initial state."""

    @abc.abstractmethod
    def step(self, *args: Any, **kwargs: Any) -> Any:
        """Advance one step: a pure function of its inputs."""


class AbstractIterativeSolver(AbstractSolver):
    """A solver that decides by itself when it has finished."""

    @abc.abstractmethod
    def terminate(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """Return `(done, result)`: a scalar bool and a `RESULTS` item."""
