"""The four entry points: `root_find`, `fixed_point`, `minimize`, `least_squares`.

Each validates eagerly, flattens the pytree `y0` to one 1-D array (solvers work on flat arrays),
runs `solver.step` in a bounded while loop until `solver.terminate` says done, and hands the
derivative rule to the adjoint: by default the implicit function theorem applied to the problem's
optimality condition (F(y) = 0; f(y) - y = 0; grad f(y) = 0, or the projected-gradient fixed point
for constrained minimisers; J(y)' r(y) = 0).
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .._core import (
    RESULTS,
    bounded_while_loop,
    check_floating,
    check_positive,
    check_result,
    check_same_structure,
    is_concrete,
)
from ._adjoint import AbstractAdjoint, ImplicitAdjoint
from ._base import (
    AbstractConstrainedMinimiser,
    AbstractFixedPointSolver,
    AbstractLeastSquaresSolver,
    AbstractMinimiser,
    AbstractNonlinearSolver,
    AbstractRootFinder,
)
from ._solution import Solution

_FAMILIES = {
    "root_find": (AbstractRootFinder, "a root finder (an AbstractRootFinder)"),
    "fixed_point": (
        (AbstractFixedPointSolver, AbstractRootFinder),
        "a fixed-point solver or a root finder",
    ),
    "minimize": (AbstractMinimiser, "a minimiser (an AbstractMinimiser)"),
    "least_squares": (
        (AbstractLeastSquaresSolver, AbstractMinimiser),
        "a least-squares solver or a minimiser",
    ),
}


def _validate(kind, fn, solver, y0, args, max_steps, adjoint):
    if not callable(fn):
        raise TypeError(f"`fn` must be callable as fn(y, args), got {type(fn).__name__}")
    classes, what = _FAMILIES[kind]
    if not isinstance(solver, classes):
        raise TypeError(f"`solver` of {kind} must be {what}, got {type(solver).__name__}")
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}")
    if adjoint is not None and not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(
            "`adjoint` must be None, ImplicitAdjoint(), RecursiveCheckpointAdjoint(), DirectAdjoint() or ForwardMode(), got "
            f"{type(adjoint).__name__}"
        )
    leaves = jax.tree.leaves(y0)
    if not leaves:
        raise ValueError("`y0` must contain at least one array")
    check_floating("y0", y0)
    dtypes = {jnp.result_type(leaf) for leaf in leaves}
    if len(dtypes) > 1:
        raise TypeError(
            f"`y0` leaves must share one floating dtype, got {sorted(map(str, dtypes))}"
        )
    # `args` may hold anything (an equinox model with activation functions, Python callables,
    # static data): only its arrays are abstracted, everything else is passed as it is.
    try:
        out = eqx.filter_eval_shape(fn, y0, args)
    except Exception as error:
        raise TypeError(f"calling `fn(y0, args)` failed: {error}") from error
    if kind in ("root_find", "fixed_point"):
        check_same_structure(
            "fn(y0, args)", out, y0, "`y0` (a root finder's function maps y to y's shape):"
        )
    elif kind == "minimize":
        if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
            shapes = jax.tree.map(lambda x: x.shape, out)
            raise ValueError(
                f"`fn` must return a scalar objective for minimize, got output of shape {shapes}; "
                "for a vector of residuals use least_squares"
            )
        check_floating("fn(y0, args)", out)
    else:
        if not jax.tree.leaves(out):
            raise ValueError("`fn` must return at least one residual array for least_squares")
        check_floating("fn(y0, args)", out)


def _check_tolerances(solver, flat_y0):
    """`rtol`/`atol` of `solver` must be finite and >= 0: raise now when they are concrete, and
    attach an `eqx.error_if` to `flat_y0` when they are traced (a solver built inside `jit` or
    `vmap`), where a negative tolerance would otherwise make the stopping test unreachable."""
    traced = []
    for name in ("rtol", "atol"):
        value = getattr(solver, name, None)
        if value is None:
            continue
        if not is_concrete(value):
            traced.append((name, value))
            continue
        check_positive(f"{type(solver).__name__}.{name}", value, allow_zero=True)
    for name, value in traced:
        bad = ~(jnp.isfinite(value) & (value >= 0))
        flat_y0 = eqx.error_if(
            flat_y0, bad, f"`{type(solver).__name__}.{name}` must be finite and >= 0"
        )
    return flat_y0


def _iterate(flat_fn, solver, y0, args, max_steps, loop_kind):
    options = {"loop_kind": loop_kind}
    state = solver.init(flat_fn, y0, args, options)

    def classify(y, state):
        done, result = solver.terminate(flat_fn, y, args, options, state)
        finite = jnp.all(jnp.isfinite(y))
        return done | ~finite, RESULTS.where(finite, result, RESULTS.nonfinite)

    def body(carry):
        y, state, _ = carry
        y, state = solver.step(flat_fn, y, args, options, state)
        # Only `done` is carried: the result is a function of the final (y, state), computed
        # once after the loop rather than selected on every step.
        return y, state, classify(y, state)[0]

    init = (y0, state, jnp.array(False))
    out = bounded_while_loop(lambda c: ~c[2], body, init, max_steps=max_steps, kind=loop_kind)
    y, state, _ = out.value
    result = classify(y, state)[1]
    result = RESULTS.where(out.max_steps_reached, RESULTS.max_steps_reached, result)
    return y, (result, out.num_steps, state)


def _solve(kind, fn, solver, y0, args, max_steps, adjoint, throw):
    """The body of the four entry points; `kind` is the entry point's name."""
    _validate(kind, fn, solver, y0, args, max_steps, adjoint)
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    flat_y0, unravel = ravel_pytree(y0)
    flat_y0 = _check_tolerances(solver, flat_y0)
    dynamic_args, static_args = eqx.partition(args, eqx.is_inexact_array)

    def user_fn(y, dynamic):
        return fn(unravel(y), eqx.combine(dynamic, static_args))

    if kind == "minimize":

        def flat_fn(y, dynamic):
            return user_fn(y, dynamic)
    elif kind == "fixed_point" and isinstance(solver, AbstractRootFinder):
        # A root finder solves f(y) - y = 0.
        def flat_fn(y, dynamic):
            return ravel_pytree(user_fn(y, dynamic))[0] - y
    elif kind == "least_squares" and isinstance(solver, AbstractMinimiser):
        # A minimiser solves min 0.5 ||r(y)||^2.
        def flat_fn(y, dynamic):
            r = ravel_pytree(user_fn(y, dynamic))[0]
            return 0.5 * jnp.vdot(r, r)
    else:

        def flat_fn(y, dynamic):
            return ravel_pytree(user_fn(y, dynamic))[0]

    optimality = _optimality(kind, solver, user_fn)

    def primal(y_init, dynamic):
        return _iterate(flat_fn, solver, y_init, dynamic, max_steps, adjoint.loop_kind)

    positive_definite = kind in ("minimize", "least_squares") and not isinstance(
        solver, AbstractConstrainedMinimiser
    )
    y, (result, num_steps, state) = adjoint.apply(
        primal,
        optimality,
        jax.lax.stop_gradient(flat_y0),
        dynamic_args,
        positive_definite=positive_definite,
        throw=throw,
    )
    stats = {"num_steps": num_steps, "max_steps": jnp.array(max_steps)}
    solution = Solution(value=unravel(y), result=result, stats=stats, state=state)
    return check_result(solution, result, throw, f"jaxsolve.nonlinear.{kind}")


def _optimality(kind, solver, user_fn) -> Callable:
    """The function that is zero at a solution, in flat coordinates."""
    if kind == "root_find":
        return lambda y, dynamic: ravel_pytree(user_fn(y, dynamic))[0]
    if kind == "fixed_point":
        return lambda y, dynamic: ravel_pytree(user_fn(y, dynamic))[0] - y
    if kind == "minimize":
        grad = jax.grad(user_fn)
        if isinstance(solver, AbstractConstrainedMinimiser):
            project = solver.constraint.project
            return lambda y, dynamic: y - project(y - grad(y, dynamic))
        return grad

    def normal_equations(y, dynamic):
        residual = lambda y: ravel_pytree(user_fn(y, dynamic))[0]
        r, vjp = jax.vjp(residual, y)
        return vjp(r)[0]

    if isinstance(solver, AbstractConstrainedMinimiser):
        project = solver.constraint.project
        return lambda y, dynamic: y - project(y - normal_equations(y, dynamic))
    return normal_equations


_COMMON_ARGUMENTS = """\
- `y0`: the initial guess, a pytree of floating arrays of one dtype.
- `args`: anything `fn` needs (arrays, equinox modules, functions, static data); the
  solution is differentiable with respect to its floating-point arrays.
- `max_steps`: the iteration cap (a Python int); reaching it is
  `RESULTS.max_steps_reached`.
- `adjoint`: how gradients flow: `ImplicitAdjoint()` (default; the implicit function
  theorem, reverse and forward mode, forward iterations never unrolled),
  `RecursiveCheckpointAdjoint()`, `DirectAdjoint()` or `ForwardMode()` (through the
  iterations).
- `throw`: raise on failure (default); with `False`, read `Solution.result`."""


def _entry_point(kind: str, doc: str) -> Callable[..., Solution]:
    """The public function `kind`: one signature and one body for the four entry points,
    which differ only in the problem `kind` names (validation, the flat function, the
    optimality condition) and in their docstrings (`doc`, whose `{arguments}` is filled with
    the arguments they share)."""

    def entry_point(
        fn: Callable,
        solver: AbstractNonlinearSolver,
        y0: Any,
        args: Any = None,
        *,
        max_steps: int = 256,
        adjoint: AbstractAdjoint | None = None,
        throw: bool = True,
    ) -> Solution:
        return _solve(kind, fn, solver, y0, args, max_steps, adjoint, throw)

    entry_point.__name__ = entry_point.__qualname__ = kind
    entry_point.__doc__ = doc.format(arguments=_COMMON_ARGUMENTS)
    return entry_point


root_find = _entry_point(
    "root_find",
    """Find `y` with `fn(y, args) == 0`.

**Arguments:**

- `fn`: `fn(y, args)` returning a pytree with the structure and shapes of `y`.
- `solver`: a root finder: `Newton`, `Chord`, `Broyden`, `Bisection`.
{arguments}

**Returns:** a `Solution(value, result, stats, state)`.

**Example:**

```python
cube_root = lambda a: js.nonlinear.root_find(
    lambda x, a: x**3 - a, js.nonlinear.Newton(), 1.0, a
).value
print(cube_root(2.0), jax.grad(cube_root)(2.0))  # 2 ** (1/3), (1/3) 2 ** (-2/3)
```
""",
)

fixed_point = _entry_point(
    "fixed_point",
    """Find `y` with `fn(y, args) == y`.

**Arguments:**

- `fn`: `fn(y, args)` returning a pytree with the structure and shapes of `y`.
- `solver`: `FixedPointIteration`, `Anderson`, or any root finder (applied to
  `fn(y, args) - y`).
{arguments}

**Returns:** a `Solution(value, result, stats, state)`.

**Example:**

```python
fn = lambda x, t: jnp.cos(x) + t
sol = js.nonlinear.fixed_point(fn, js.nonlinear.Anderson(), 0.0, 0.1)
print(sol.value, sol.stats["num_steps"])  # x = cos(x) + 0.1
```
""",
)

minimize = _entry_point(
    "minimize",
    """Minimise the scalar `fn(y, args)` over `y`.

**Arguments:**

- `fn`: `fn(y, args)` returning a scalar.
- `solver`: `GradientDescent`, `NonlinearCG`, `BFGS`, `LBFGS`, `OptaxMinimizer`, or the
  constrained `ProjectedGradient` and `FrankWolfe`. The implicit adjoint differentiates the
  condition grad f(y) = 0 (for constrained solvers, y = P(y - grad f(y)) with P the
  projection on the feasible set).
{arguments}

**Returns:** a `Solution(value, result, stats, state)`.

**Example** (ridge regression and the derivative of its solution in the penalty):

```python
X = jax.random.normal(jax.random.PRNGKey(0), (20, 3))
t = X @ jnp.array([1.0, -2.0, 0.5])
loss = lambda w, lam: jnp.mean((X @ w - t) ** 2) + lam * jnp.sum(w**2)
solver = js.nonlinear.LBFGS(rtol=1e-6, atol=1e-6)
w = lambda lam: js.nonlinear.minimize(loss, solver, jnp.zeros(3), lam).value
value, derivative = jax.jvp(w, (0.1,), (1.0,))  # forward mode, implicit
print(value, derivative)
```
""",
)

least_squares = _entry_point(
    "least_squares",
    """Minimise `0.5 * ||fn(y, args)||^2` where `fn` returns a pytree of residuals.

**Arguments:**

- `fn`: `fn(y, args)` returning a pytree of residuals (any shapes).
- `solver`: `GaussNewton`, `LevenbergMarquardt`, or any minimiser (applied to
  `0.5 ||r||^2`).
{arguments}

**Returns:** a `Solution(value, result, stats, state)`.

**Example:**

```python
rosenbrock = lambda y, _: jnp.stack([10 * (y[1] - y[0] ** 2), 1 - y[0]])
solver = js.nonlinear.LevenbergMarquardt(rtol=1e-6, atol=1e-6)
sol = js.nonlinear.least_squares(rosenbrock, solver, jnp.array([-1.2, 1.0]))
print(sol.value)  # [1, 1]
```
""",
)
