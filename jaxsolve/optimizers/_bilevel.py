"""Fully first-order bilevel optimisation by the penalty method (Kwon, Kwon, Wright & Nowak, 2023).

The bilevel problem `min_x F(x) = f(x, y*(x))`, `y*(x) = argmin_y g(x, y)`, has the
hypergradient `∇F = ∇_x f - ∇²_xy g (∇²_yy g)^{-1} ∇_y f` (implicit function theorem), which
needs second derivatives of `g` and a linear solve. The penalty method replaces the constraint
by `λ (g(x, y) - min_z g(x, z))`: with `y_λ = argmin_y f(x, y) + λ g(x, y)` and
`z* = argmin_z g(x, z)`, Danskin's theorem gives the gradient of the penalised value function

    ∇_x L_λ(x) = ∇_x f(x, y_λ) + λ (∇_x g(x, y_λ) - ∇_x g(x, z*)),

which uses gradients only and differs from `∇F(x)` by O(1/λ) when `g` is strongly convex in
`y` and the derivatives are Lipschitz (Kwon et al., 2023; the tests measure the 1/λ rate on
the ridge problem of the `hyperparam_implicit` experiment).
F2SA (Kwon et al., ICML 2023) runs it stochastically: a few gradient steps on `y` (for
`f/λ + g`) and on `z` (for `g`), warm-started from the last outer step, then one step on `x`
along that estimate. That is the solver here, deterministic or with whatever noise the user's
`outer_fn`/`inner_fn` carry in `args`.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .._core import (
    RESULTS,
    AbstractSolution,
    AbstractSolver,
    check_positive,
    check_result,
    hyperparameter,
    scan_steps,
    tree_all_finite,
)


def _axpy(a, x, y):
    """`a * x + y` on pytrees (`a` a scalar array)."""
    return jax.tree.map(lambda xi, yi: a.astype(xi.dtype) * xi + yi, x, y)


def penalty_hypergradient(
    outer_fn: Callable, inner_fn: Callable, x: Any, y: Any, z: Any, args: Any, penalty: Any
) -> Any:
    """The first-order (penalty) estimate of the bilevel hypergradient.

    `∇_x f(x, y) + penalty * (∇_x g(x, y) - ∇_x g(x, z))`, where `y` should approximate
    `argmin_y f(x, y)/penalty + g(x, y)` and `z` should approximate `argmin_z g(x, z)`. For a
    strongly convex `g` it tends to the implicit hypergradient `d f(x, y*(x)) / dx` like
    `1/penalty`. Only gradients of `f` and `g` are evaluated: no Hessian, no linear solve.

    **Arguments:**

    - `outer_fn`: `f(x, y, args) -> scalar`, the upper-level objective.
    - `inner_fn`: `g(x, y, args) -> scalar`, the lower-level objective (minimised over `y`).
    - `x`, `y`, `z`: pytrees (upper-level variable, penalised and plain lower-level points).
    - `args`: anything, passed to both functions.
    - `penalty`: `λ > 0`.

    **Returns:** a pytree shaped like `x`.

    **Example** (`g = (y - x)^2 / 2`, `f = y^2 / 2`: `y*(x) = x`, `dF/dx = x`):

    ```python
    f = lambda x, y, a: 0.5 * y**2
    g = lambda x, y, a: 0.5 * (y - x) ** 2
    x, lam = 2.0, 100.0
    y_lam, z = lam * x / (1 + lam), x  # the two inner minimisers, in closed form
    est = js.optimizers.penalty_hypergradient(f, g, x, y_lam, z, None, lam)
    assert abs(est - x) < 2 * x / lam
    ```
    """
    grad_x_f = jax.grad(outer_fn)(x, y, args)
    grad_x_g_y = jax.grad(inner_fn)(x, y, args)
    grad_x_g_z = jax.grad(inner_fn)(x, z, args)
    penalty = jnp.asarray(penalty)
    return jax.tree.map(
        lambda a, b, c: a + penalty.astype(a.dtype) * (b - c), grad_x_f, grad_x_g_y, grad_x_g_z
    )


class BilevelState(NamedTuple):
    """State of `PenaltyBilevel`: the upper-level variable `x`, the penalised lower-level
    point `y` (≈ `argmin f/λ + g`), the lower-level point `z` (≈ `argmin g`), the last
    hypergradient estimate, and the number of outer steps.

    **Example:**

    ```python
    f = lambda x, y, a: 0.5 * y**2
    g = lambda x, y, a: 0.5 * (y - x) ** 2
    solver = js.optimizers.PenaltyBilevel(penalty=10.0, learning_rate=0.0,
                                          inner_learning_rate=0.5, inner_steps=60)
    state = solver.step(f, g, None, solver.init(f, g, 2.0, 0.0, None))
    # y -> argmin y^2/20 + (y - 2)^2/2 = 20/11, z -> argmin (z - 2)^2/2 = 2
    assert abs(state.y - 20 / 11) < 1e-6 and abs(state.z - 2.0) < 1e-6
    assert abs(state.hypergradient - 20 / 11) < 1e-5  # dF/dx = x = 2, up to O(1/penalty)
    ```
    """

    x: Any
    y: Any
    z: Any
    hypergradient: Any
    num_steps: jax.Array


class PenaltyBilevel(AbstractSolver):
    """F2SA / penalty-method steps for `min_x f(x, y*(x))`, `y*(x) = argmin_y g(x, y)`.

    One `step` makes `inner_steps` gradient steps of size `inner_learning_rate` on
    `y -> f(x, y)/penalty + g(x, y)` and on `z -> g(x, z)` (warm-started), then one gradient
    step of size `learning_rate` on `x` along `penalty_hypergradient`. First-order oracles only.

    **Arguments** (fields; the floats are hyperparameters: a new value does not recompile):

    - `penalty`: `λ > 0`; the stationary points are O(1/λ) from the bilevel problem's.
    - `learning_rate`: the upper-level step size (about 1/(the smoothness of `F`)).
    - `inner_learning_rate`: the lower-level step size (at most 1/(the smoothness of `g` in
      `y`, plus that of `f` divided by λ)).
    - `inner_steps`: lower-level steps per outer step (a Python int).

    The problem handed to `init` and `step` is `(outer_fn, inner_fn, args)` (with `x0, y0`
    for `init`); see `penalty_bilevel`.

    **Example** (your own loop):

    ```python
    f = lambda x, y, a: 0.5 * (y - 1.0) ** 2 + 0.5 * x**2
    g = lambda x, y, a: 0.5 * (y - x) ** 2
    solver = js.optimizers.PenaltyBilevel(penalty=100.0, learning_rate=0.3,
                                          inner_learning_rate=0.5, inner_steps=20)
    state, step = solver.init(f, g, 0.0, 0.0, None), eqx.filter_jit(solver.step)
    for _ in range(50):
        state = step(f, g, None, state)
    assert abs(state.x - 0.5) < 0.02  # F(x) = (x - 1)^2/2 + x^2/2 is least at x = 1/2
    ```

    **Reference:** J. Kwon, D. Kwon, S. Wright, R. Nowak, "A Fully First-Order Method for
    Stochastic Bilevel Optimization", ICML 2023; "On Penalty Methods for Nonconvex Bilevel
    Optimization and First-Order Stochastic Approximation", ICLR 2024 (arXiv:2309.01753).
    """

    penalty: jax.Array = hyperparameter(100.0)
    learning_rate: jax.Array = hyperparameter(0.1)
    inner_learning_rate: jax.Array = hyperparameter(0.1)
    inner_steps: int = eqx.field(static=True, default=10)

    def init(self, outer_fn: Callable, inner_fn: Callable, x0: Any, y0: Any, args: Any):
        zeros = jax.tree.map(jnp.zeros_like, x0)
        return BilevelState(x0, y0, y0, zeros, jnp.array(0))

    def _inner(self, outer_fn, inner_fn, x, y, z, args):
        """`inner_steps` gradient steps on `y` (for f/λ + g) and on `z` (for g)."""
        alpha = -self.inner_learning_rate
        inverse_penalty = 1 / self.penalty

        def body(carry, _):
            y, z = carry
            grad_y = jax.tree.map(
                lambda a, b: inverse_penalty.astype(a.dtype) * a + b,
                jax.grad(outer_fn, argnums=1)(x, y, args),
                jax.grad(inner_fn, argnums=1)(x, y, args),
            )
            grad_z = jax.grad(inner_fn, argnums=1)(x, z, args)
            return (_axpy(alpha, grad_y, y), _axpy(alpha, grad_z, z)), None

        (y, z), _ = lax.scan(body, (y, z), None, length=self.inner_steps)
        return y, z

    def step(self, outer_fn: Callable, inner_fn: Callable, args: Any, state: BilevelState):
        y, z = self._inner(outer_fn, inner_fn, state.x, state.y, state.z, args)
        hypergradient = penalty_hypergradient(outer_fn, inner_fn, state.x, y, z, args, self.penalty)
        x = _axpy(-self.learning_rate, hypergradient, state.x)
        return BilevelState(x, y, z, hypergradient, state.num_steps + 1)


class BilevelSolution(AbstractSolution):
    """What `penalty_bilevel` returns.

    - `value`: the upper-level variable `x`.
    - `inner_value`: the lower-level solution `z ≈ y*(x)` at the final `x` (from the last
      outer step).
    - `result`: `RESULTS.successful`, or `RESULTS.nonfinite` if an iterate became NaN/inf.
    - `stats`: `{"num_steps": outer steps, "inner_steps": lower-level steps per outer step}`.
    - `state`: the final `BilevelState` (to continue with `PenaltyBilevel.step`).

    **Example:**

    ```python
    f = lambda x, y, a: 0.5 * (y - 1.0) ** 2 + 0.5 * x**2
    g = lambda x, y, a: 0.5 * (y - x) ** 2
    sol = js.optimizers.penalty_bilevel(f, g, 0.0, 0.0, learning_rate=0.3,
                                        inner_learning_rate=0.5)
    print(sol.value, sol.inner_value, sol.result == js.RESULTS.successful)
    ```
    """

    value: Any
    inner_value: Any
    result: RESULTS
    stats: dict
    state: BilevelState


def _check_scalar_fn(name, fn, x0, y0, args):
    if not callable(fn):
        raise TypeError(f"`{name}` must be callable as {name}(x, y, args), got {type(fn).__name__}")
    try:
        out = eqx.filter_eval_shape(fn, x0, y0, args)
    except Exception as error:
        raise TypeError(f"calling `{name}(x0, y0, args)` failed: {error}") from error
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
        shapes = jax.tree.map(lambda s: s.shape, out)
        raise ValueError(f"`{name}` must return a scalar, got output of shape {shapes}")


def _check_floating(name, tree):
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"`{name}` must contain at least one array")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(f"`{name}` must be floating point, got {jnp.result_type(leaf)}")


def penalty_bilevel(
    outer_fn: Callable,
    inner_fn: Callable,
    x0: Any,
    y0: Any,
    args: Any = None,
    *,
    penalty: float = 100.0,
    learning_rate: float = 0.1,
    inner_learning_rate: float = 0.1,
    inner_steps: int = 10,
    num_steps: int = 100,
    throw: bool = True,
) -> BilevelSolution:
    """Solve `min_x f(x, y*(x))`, `y*(x) = argmin_y g(x, y)` with first-order oracles only.

    Runs `num_steps` steps of `PenaltyBilevel` (F2SA with a fixed penalty; Kwon et al., 2023)
    in `lax.scan`: per step, `inner_steps` warm-started gradient steps on the lower-level
    problems `f/λ + g` and `g`, then one step on `x` along
    `∇_x f(x, y) + λ (∇_x g(x, y) - ∇_x g(x, z))`. No Hessian-vector products and no linear
    solves. Its stationary points are O(1/λ) from those of the bilevel problem (strongly convex
    `g`).

    **Arguments:**

    - `outer_fn`: `f(x, y, args) -> scalar`.
    - `inner_fn`: `g(x, y, args) -> scalar`, minimised over `y`.
    - `x0`, `y0`: starting points (pytrees of floating arrays).
    - `args`: any pytree passed to both functions.
    - `penalty`, `learning_rate`, `inner_learning_rate`, `inner_steps`: see `PenaltyBilevel`.
    - `num_steps`: outer steps (a positive Python int).
    - `throw`: raise if an iterate becomes non-finite (else report `RESULTS.nonfinite`).

    **Returns:** a `BilevelSolution` (`value` = `x`, `inner_value` = `y*(x)` approx.).

    **Example** (`f = (y - 1)^2/2 + x^2/2`, `g = (y - x)^2/2`: the answer is `x = 1/2`):

    ```python
    f = lambda x, y, a: 0.5 * (y - 1.0) ** 2 + 0.5 * x**2
    g = lambda x, y, a: 0.5 * (y - x) ** 2
    sol = js.optimizers.penalty_bilevel(f, g, 0.0, 0.0, penalty=1000.0, learning_rate=0.3,
                                        inner_learning_rate=0.5, inner_steps=20)
    assert abs(sol.value - 0.5) < 1e-2 and abs(sol.inner_value - 0.5) < 1e-2
    ```

    **Reference:** J. Kwon, D. Kwon, S. Wright, R. Nowak, "A Fully First-Order Method for
    Stochastic Bilevel Optimization", ICML 2023; "On Penalty Methods for Nonconvex Bilevel
    Optimization and First-Order Stochastic Approximation", ICLR 2024.
    """
    for name, value in (("num_steps", num_steps), ("inner_steps", inner_steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive Python int, got {value!r}")
    for name, value in (
        ("penalty", penalty),
        ("learning_rate", learning_rate),
        ("inner_learning_rate", inner_learning_rate),
    ):
        check_positive(name, value)
    _check_floating("x0", x0)
    _check_floating("y0", y0)
    x0 = jax.tree.map(jnp.asarray, x0)
    y0 = jax.tree.map(jnp.asarray, y0)
    _check_scalar_fn("outer_fn", outer_fn, x0, y0, args)
    _check_scalar_fn("inner_fn", inner_fn, x0, y0, args)
    solver = PenaltyBilevel(penalty, learning_rate, inner_learning_rate, inner_steps)
    state = solver.init(outer_fn, inner_fn, x0, y0, args)

    def body(state, _):
        return solver.step(outer_fn, inner_fn, args, state), None

    state, _ = scan_steps(body, state, length=num_steps)
    finite = tree_all_finite((state.x, state.y, state.z))
    result = RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)
    stats = {"num_steps": state.num_steps, "inner_steps": jnp.array(inner_steps)}
    solution = BilevelSolution(
        value=state.x, inner_value=state.z, result=result, stats=stats, state=state
    )
    return check_result(solution, result, throw, "jaxsolve.optimizers.penalty_bilevel")
