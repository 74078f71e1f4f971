"""The public base class of ODE/SDE solvers, and what one step returns.

A solver is stateless apart from its hyperparameter fields. `solve` (or the user's own loop)
calls `init` once and then `step(terms, t0, t1, y0, args, increment, state)` per step. The
Brownian `increment` over `[t0, t1]` is an input of the step (or `None` for an ODE): `solve`
draws all increments of a fixed grid up front with `brownian.increments(ts)` and scans the steps
over them, or queries `brownian.increment(t0, t1)` per attempted step when adapting (a rejected
step asks the same tree again, so the retried step sees the same Brownian path).
"""

import abc
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import _core
from ._term import AbstractTerm, ODETerm, SDETerm

_LEVY_RANK = {"none": 0, "space-time": 1, "space-time-time": 2}


class DenseInfo(NamedTuple):
    """What a step leaves for dense output (`SaveAt(ts=...)`) over `[t0, t1]`.

    `y0`, `y1`: the solution at both ends. `f0`, `f1`: the time derivatives at both ends (for
    a cubic Hermite interpolant), or `None` for linear interpolation (what SDE solvers use: the
    Brownian path between steps is not resolved anyway). `ks`: the stages of a Runge–Kutta step
    (a tuple of pytrees shaped like `y0`), for solvers with their own continuous extension
    (`dense_weights`), else `None`.
    """

    y0: Any
    y1: Any
    f0: Any = None
    f1: Any = None
    ks: Any = None


def interpolate(t0, t1, info: DenseInfo, t, weights=None):
    """Evaluate the dense output of one step `[t0, t1]` at `t`.

    With `weights` (a NumPy array of shape `(num_stages, degree + 1)`, row `i` the coefficients
    of `b_i(theta)` in increasing powers of `theta`) and the step's stages `info.ks`, this is
    the method's own continuous extension `y0 + h sum_i b_i(theta) k_i`; otherwise the cubic
    Hermite interpolant (with `f0`, `f1`) or linear interpolation.
    """
    h = t1 - t0
    s = jnp.where(h > 0, (t - t0) / jnp.where(h > 0, h, 1), 0)
    if weights is not None and info.ks is not None:
        powers = s ** jnp.arange(weights.shape[1], dtype=s.dtype)
        coeffs = jnp.asarray(weights, s.dtype) @ powers

        def extension(y, *ks):
            acc = sum(coeffs[i].astype(y.dtype) * k for i, k in enumerate(ks))
            return y + h.astype(y.dtype) * acc

        return jax.tree.map(extension, info.y0, *info.ks)
    if info.f0 is None or info.f1 is None:
        return jax.tree.map(lambda a, b: a + s.astype(a.dtype) * (b - a), info.y0, info.y1)

    def hermite(a, b, fa, fb):
        ss = s.astype(a.dtype)
        hh = h.astype(a.dtype)
        h00 = (1 + 2 * ss) * (1 - ss) ** 2
        h10 = ss * (1 - ss) ** 2
        h01 = ss**2 * (3 - 2 * ss)
        h11 = ss**2 * (ss - 1)
        return h00 * a + h10 * hh * fa + h01 * b + h11 * hh * fb

    return jax.tree.map(hermite, info.y0, info.y1, info.f0, info.f1)


class StepOutput(NamedTuple):
    """What `AbstractSolver.step` returns.

    - `y1`: the solution at `t1`.
    - `y_error`: a local error estimate shaped like `y1`, or `None` (no embedded method: the
      solver can only take constant steps).
    - `dense_info`: a `DenseInfo`.
    - `state`: the solver state to carry to the next step if this one is accepted.
    """

    y1: Any
    y_error: Any
    dense_info: DenseInfo
    state: Any


class AbstractSolver(_core.AbstractSolver):
    """The base class of every ODE/SDE solver in `jaxsolve.diffeq`; subclass it to add one.

    A subclass declares, as class variables:

    - `term_types`: the term classes it integrates, e.g. `(ODETerm,)` or `(SDETerm,)`.
    - `levy_area`: the Lévy area its step reads from the Brownian increment: `"none"` (only
      `W`), `"space-time"` (also `H`) or `"space-time-time"` (also `K`). `solve` refuses a
      Brownian motion that does not provide it.
    - `order`: the (weak/ODE) order of the method, or `None`;
    - `adaptive`: whether `step` returns an error estimate (so a `PIDController` can be used).
    - `error_estimate_order` (optional): the order in `h` of the error estimate on ODEs, where it
      is not the method's `order` (a first-order method whose estimate is the O(h^2)
      difference with a second-order one, as `ImplicitEuler`'s); default `order`.
    - `noise_types` (optional): the `SDETerm.noise` kinds it handles (default: all).
    - `dense_weights` (optional): the coefficients of the method's own continuous extension
      (see `interpolate`); its steps then put their stages in `DenseInfo.ks`.

    and implements:

    - `strong_order(terms) -> float | None`: the strong order of convergence on these terms
      (it may depend on `terms.noise`); `None` for ODE-only solvers.
    - `init(terms, t0, t1, y0, args) -> state`
    - `step(terms, t0, t1, y0, args, increment, state) -> StepOutput`, where `increment` is
      the Brownian increment over `[t0, t1]` (with `.dt`, `.W` and, as declared, `.H`, `.K`),
      or `None` for deterministic terms.

    **Example** (explicit Euler for ODEs, written by a user):

    ```python
    class MyEuler(js.diffeq.AbstractSolver):
        term_types = (js.diffeq.ODETerm,)
        levy_area = "none"
        order = 1
        adaptive = False

        def strong_order(self, terms):
            return None

        def init(self, terms, t0, t1, y0, args):
            return None

        def step(self, terms, t0, t1, y0, args, increment, state):
            f0 = terms.vector_field(t0, y0, args)
            y1 = jax.tree.map(lambda y, f: y + (t1 - t0) * f, y0, f0)
            return js.diffeq.StepOutput(y1, None, js.diffeq.DenseInfo(y0, y1), None)

    term = js.diffeq.ODETerm(lambda t, y, args: -y)
    sol = js.diffeq.solve(term, MyEuler(), 0.0, 1.0, jnp.ones(()), dt0=0.1)
    assert jnp.allclose(sol.ys[-1], 0.9**10)
    ```
    """

    term_types: eqx.AbstractClassVar[tuple[type, ...]]
    levy_area: eqx.AbstractClassVar[str]
    order: eqx.AbstractClassVar[int | None]
    adaptive: eqx.AbstractClassVar[bool]
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "additive", "general")
    dense_weights: ClassVar[Any] = None
    error_estimate_order: ClassVar[int | None] = None

    @abc.abstractmethod
    def strong_order(self, terms: AbstractTerm) -> float | None:
        """The strong order of convergence on `terms`, or `None` if not an SDE solver."""

    @abc.abstractmethod
    def init(self, terms, t0, t1, y0, args) -> Any:
        """Build the solver state (a pytree of arrays, or `None`)."""

    @abc.abstractmethod
    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        """Advance from `t0` to `t1`: a pure function of its inputs."""


def error_order(solver: AbstractSolver, terms: AbstractTerm) -> float:
    """The order used by step-size control: the ODE order, or strong order + 1/2 for SDEs."""
    if terms.brownian is not None:
        strong = solver.strong_order(terms)
        if strong is None:
            raise ValueError(f"{type(solver).__name__} declares no strong order for SDE terms")
        return float(strong) + 0.5
    if solver.error_estimate_order is not None:
        return float(solver.error_estimate_order)
    if solver.order is None:
        raise ValueError(f"{type(solver).__name__} declares no order for ODE terms")
    return float(solver.order)


def check_compatible(solver: AbstractSolver, terms: AbstractTerm) -> None:
    """Eager checks that `solver` can integrate `terms` with the Brownian motion they carry."""
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            f"`solver` must be a jaxsolve.diffeq.AbstractSolver, got {type(solver).__name__}"
        )
    if not isinstance(terms, AbstractTerm):
        raise TypeError(
            f"`terms` must be a jaxsolve.diffeq term (ODETerm, SDETerm, ...), got "
            f"{type(terms).__name__}"
        )
    if not isinstance(terms, solver.term_types):
        names = ", ".join(t.__name__ for t in solver.term_types)
        raise ValueError(
            f"{type(solver).__name__} integrates {names}, got {type(terms).__name__}"
            + (
                "; for SDEs use EulerMaruyama, Milstein, Heun, SRA1, ShARK, SEA or SPaRK"
                if isinstance(terms, SDETerm)
                else ""
            )
            + ("; for ODEs use Euler, Heun, ..., Tsit5" if isinstance(terms, ODETerm) else "")
        )
    noise = getattr(terms, "noise", None)
    if noise is not None and noise not in solver.noise_types:
        raise ValueError(
            f"{type(solver).__name__} handles SDEs with noise in {solver.noise_types}, got "
            f"noise={noise!r}"
        )
    if terms.brownian is not None:
        have = getattr(terms.brownian, "levy_area", "none")
        if _LEVY_RANK.get(have, 0) < _LEVY_RANK[solver.levy_area]:
            raise ValueError(
                f"{type(solver).__name__} needs the {solver.levy_area!r} Lévy area, but the "
                f"Brownian motion provides {have!r}; build it with "
                f"VirtualBrownianTree(..., levy_area={solver.levy_area!r})"
            )
