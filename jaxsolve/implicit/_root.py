"""Implicit differentiation of a root: `custom_root`, `custom_fixed_point`, `implicit_root`.

At a root `x*(θ)` of `F(x, θ) = 0` the implicit function theorem gives
`∂F/∂x · dx* = −∂F/∂θ · dθ`. We attach that rule to the solver's output with a custom JVP
whose tangent is a linear solve (`jaxsolve.linear.solve`, itself a `custom_linear_solve`), so:

- forward mode (`jax.jvp`, `jax.jacfwd`) solves `J ẋ = −∂F/∂θ θ̇` once per tangent;
- reverse mode transposes that linear map: one solve with `J^T` per cotangent;
- the solver's own iterations are never traced for differentiation (its inputs are
  `stop_gradient`-ed), so memory does not grow with its number of steps.
"""

import functools
from collections.abc import Callable, Iterable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .. import linear
from ..linear._solve import derivative_solve

_TOLERANCE = {jnp.dtype("float16"): 1e-3, jnp.dtype("bfloat16"): 1e-2, jnp.dtype("float32"): 1e-6}


def _stop(tree: Any) -> Any:
    dynamic, static = eqx.partition(tree, eqx.is_array)
    # `jnp.asarray`: the primal of a tracer made from a Python scalar may be a Python scalar,
    # which must stay an array to match the closure-converted signature.
    dynamic = jax.tree.map(lambda x: jnp.asarray(lax.stop_gradient(x)), dynamic)
    return eqx.combine(dynamic, static)


def default_solver(x: Any) -> linear.AbstractLinearSolver:
    """The default backward solve: `linear.Auto` (LU or Cholesky up to 512 unknowns, else
    GMRES, or CG when the Jacobian is declared positive definite), with tolerances tight for
    the dtype. None of these squares the condition number of `∂F/∂x`.

    **Example:**

    ```python
    print(js.implicit.default_solver(jnp.zeros(3)))  # Auto, tolerance tight for float32
    print(js.implicit.default_solver(jnp.zeros(3, jnp.float16)).rtol)
    ```
    """
    dtype = jnp.result_type(*jax.tree.leaves(x))
    tol = _TOLERANCE.get(jnp.dtype(dtype), 1e-12)
    return linear.Auto(rtol=tol, atol=0.0)


_WHERE = "the tangent/cotangent linear solve of implicit differentiation"


def _finite_or_raise(x, throw):
    if not throw:
        return x
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(x)]))
    return eqx.error_if(
        x, ~finite, f"{_WHERE} failed with result `nonfinite`: the user's `solve` returned NaN/inf"
    )


def _solve_tangent(solve, operator, rhs, throw):
    if solve is None:
        solve = default_solver(rhs)
    if isinstance(solve, linear.AbstractLinearSolver):
        if throw:
            # Checked inside the solve and inside its transpose: a reverse-mode cotangent solve
            # runs in JAX's transposition rule, after this function has returned.
            return derivative_solve(operator, rhs, solve, _WHERE)
        return linear.solve(operator, rhs, solve, throw=False).value
    if not callable(solve):
        raise TypeError(
            "`solve` must be None, a jaxsolve.linear solver or a function "
            f"solve(matvec, b) -> x; got {type(solve).__name__}"
        )
    # A user function solve(matvec, b): wrap it so the solve transposes for reverse mode. Its
    # convergence is its own business; a non-finite answer (a singular system) is reported.
    return lax.custom_linear_solve(
        operator.mv,
        rhs,
        lambda matvec, b: _finite_or_raise(solve(matvec, b), throw),
        lambda vecmat, b: _finite_or_raise(solve(vecmat, b), throw),
    )


@eqx.filter_custom_jvp
def _implicit_identity(x_star, optimality_fn, args, kwargs, *, solve, tags, throw):
    del optimality_fn, args, kwargs, solve, tags, throw
    return x_star


@_implicit_identity.def_jvp
def _implicit_identity_jvp(primals, tangents, *, solve, tags, throw):
    x_star, optimality_fn, args, kwargs = primals
    _, t_fn, t_args, t_kwargs = tangents
    inputs = (optimality_fn, args, kwargs)
    t_inputs = (t_fn, t_args, t_kwargs)

    # Differentiate only the leaves that carry a tangent; everything else is static.
    leaves, treedef = jax.tree.flatten(inputs)
    # Non-differentiated leaves have a `None` tangent where the primal has a leaf.
    t_leaves = treedef.flatten_up_to(t_inputs)
    diff_index = [i for i, t in enumerate(t_leaves) if t is not None]
    if not diff_index:
        return x_star, None
    # A differentiated input made from a Python scalar (e.g. `jax.jacrev(f)(0.1)`) may arrive
    # here as a Python scalar primal: make it an array again, as the converted function expects.
    leaves = [
        jnp.asarray(leaf) if t is not None and isinstance(leaf, (int, float, complex)) else leaf
        for leaf, t in zip(leaves, t_leaves, strict=True)
    ]
    inputs = jax.tree.unflatten(treedef, leaves)
    # The root as a function of the inputs *through this rule*: an identity now, but when the
    # rule itself is differentiated (second order) the Jacobian and right-hand side below see
    # x*'s own dependence on the inputs instead of a constant.
    x_star = _implicit_identity(x_star, *inputs, solve=solve, tags=tags, throw=throw)

    def residual_of(diff_leaves):
        full = list(leaves)
        for i, value in zip(diff_index, diff_leaves, strict=True):
            full[i] = value
        fn, a, kw = jax.tree.unflatten(treedef, full)
        return fn(x_star, *a, **kw)

    primal_diff = [leaves[i] for i in diff_index]
    tangent_diff = [t_leaves[i] for i in diff_index]
    _, rhs = jax.jvp(residual_of, (primal_diff,), (tangent_diff,))
    rhs = jax.tree.map(jnp.negative, rhs)

    fn, a, kw = inputs
    _, jacobian = jax.linearize(lambda x: fn(x, *a, **kw), x_star)
    operator = linear.FunctionOperator(jacobian, x_star, tags)
    x_dot = _solve_tangent(solve, operator, rhs, throw)
    return x_star, x_dot


def _check_structure(name: str, out: Any, x: Any) -> None:
    if jax.tree.structure(out) != jax.tree.structure(x):
        raise ValueError(
            f"`{name}` must return a pytree with the structure of `x` "
            f"{jax.tree.structure(x)}, got {jax.tree.structure(out)}"
        )
    for o, r in zip(jax.tree.leaves(out), jax.tree.leaves(x), strict=True):
        if o.shape != jnp.shape(r) or o.dtype != jnp.result_type(r):
            raise ValueError(
                f"`{name}` must return arrays shaped like `x` ({jnp.shape(r)}, "
                f"{jnp.result_type(r)}), got ({o.shape}, {o.dtype})"
            )


def implicit_root(
    solver_fn: Callable,
    optimality_fn: Callable,
    x_init: Any,
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    solve: Any = None,
    has_aux: bool = False,
    tags: Iterable[str] = (),
    throw: bool = True,
) -> Any:
    """Run `solver_fn(x_init, *args, **kwargs)` and differentiate its output implicitly as a
    root of `optimality_fn(x, *args, **kwargs) == 0`.

    The functional form behind `custom_root`, for wrapping a solver loop directly (see
    `custom_root` for the contract). `solver_fn` returns `x*` (or `(x*, aux)` with
    `has_aux=True`; `aux` is returned without gradient).

    **Example:**

    ```python
    def newton(x, a):  # x**2 = a by a fixed number of Newton steps
        return jax.lax.fori_loop(0, 20, lambda _, x: 0.5 * (x + a / x), x)


    sqrt = lambda a: js.implicit.implicit_root(newton, lambda x, a: x**2 - a, 1.0, (a,))
    print(sqrt(2.0), jax.grad(sqrt)(2.0))  # 1.41421, 1 / (2 sqrt(2))
    ```
    """
    kwargs = {} if kwargs is None else dict(kwargs)
    tags = tuple(tags)
    # Python scalars as the initial guess become arrays: `x*` is an array of the same type.
    x_init = jax.tree.map(jnp.asarray, x_init)
    # Closed-over arrays of the optimality function are inputs we differentiate; closing over
    # them across the custom-JVP boundary would hide them, so hoist them into a pytree.
    converted_fn = eqx.filter_closure_convert(optimality_fn, x_init, *args, **kwargs)
    # The solver runs on gradient-stopped inputs (its own closure included): JAX never
    # traces its iterations for differentiation.
    converted_solver = eqx.filter_closure_convert(solver_fn, x_init, *args, **kwargs)
    out = _stop(converted_solver)(_stop(x_init), *_stop(args), **_stop(kwargs))
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ValueError("with `has_aux=True` the solver must return a pair `(x, aux)`")
        x_star, aux = out
    else:
        x_star, aux = out, None
    _check_structure("solver", x_star, x_init)
    _check_structure(
        "optimality_fn", eqx.filter_eval_shape(converted_fn, x_star, *args, **kwargs), x_star
    )
    x_star = _implicit_identity(
        x_star, converted_fn, args, kwargs, solve=solve, tags=tags, throw=bool(throw)
    )
    return (x_star, aux) if has_aux else x_star


def custom_root(
    optimality_fn: Callable,
    solve: Any = None,
    has_aux: bool = False,
    tags: Iterable[str] = (),
    throw: bool = True,
) -> Callable[[Callable], Callable]:
    """Decorate a root solver so that its output is differentiated implicitly.

    **The contract.** The decorated function is called as `solver(x_init, *args, **kwargs)`
    and returns `x*` (or `(x*, aux)` with `has_aux=True`) with
    `optimality_fn(x*, *args, **kwargs) == 0`, where `x*` has the pytree structure, shapes
    and dtypes of `x_init`. Derivatives of `x*` with respect to every floating-point array in
    `args`, `kwargs` and in the closure of `optimality_fn` come from the implicit function
    theorem: `∂F/∂x · dx* = −∂F/∂θ · dθ`, solved with `solve`. Derivatives with respect to
    `x_init` are zero, and the solver's own closure is not differentiated. `args`/`kwargs`
    may mix arrays with non-array values (functions, ints, solver objects); non-arrays are
    passed through unchanged. The solver's iterations are never differentiated: it can use
    `lax.while_loop`, and memory does not grow with its number of steps. Works under `jit`
    and `vmap`, in forward mode (`jax.jvp`, `jax.jacfwd`) and reverse mode (`jax.grad`,
    `jax.jacrev`), and to higher order (the rule differentiates itself).

    **Arguments:**

    - `optimality_fn`: `F(x, *args, **kwargs)`, returning a pytree shaped like `x`.
    - `solve`: the backward linear solve: None (default: `linear.Auto` with tolerances tight
      for the dtype, i.e. LU up to 512 unknowns, else GMRES; never normal equations, so
      the condition number is not squared), a `jaxsolve.linear` solver (e.g.
      `linear.CG(...)` with `tags=("positive_definite",)` for minimisation), or a function
      `solve(matvec, b) -> x` (JAXopt style).
    - `has_aux`: whether the solver returns `(x*, aux)`; `aux` gets no gradient.
    - `tags`: structure of `∂F/∂x` the backward solve may use: `"symmetric"`,
      `"positive_definite"` (true for the gradient of a strictly convex objective).
    - `throw`: if True (default), a derivative solve that fails raises when the derivative is
      computed (also under `jit`), with a message naming the tangent/cotangent solve and the
      failure: `linear_solve_failed` (an iterative `solve` did not converge), `singular` (a
      singular `∂F/∂x`, e.g. a root that is not isolated), `breakdown`, `nonfinite`. The check
      is a scalar test per solve. With False the solver's answer is used unchecked (a
      non-converged solve gives a finite, wrong derivative).

    **Returns:** a decorator.

    **Example:**

    ```python
    def optimality(w, lam, X, y):  # the gradient of the ridge objective
        return X.T @ (X @ w - y) + lam * w


    @js.implicit.custom_root(optimality)
    def ridge(w_init, lam, X, y):  # any solver; it is never differentiated
        return jnp.linalg.solve(X.T @ X + lam * jnp.eye(X.shape[1]), X.T @ y)


    X = jax.random.normal(jax.random.PRNGKey(0), (10, 3))
    y = X @ jnp.array([1.0, -1.0, 0.5])
    print(jax.jacfwd(ridge, argnums=1)(jnp.zeros(3), 1.0, X, y))  # jax.grad works too
    ```

    Reference: Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022.
    """

    def decorator(solver_fn: Callable) -> Callable:
        @functools.wraps(solver_fn)
        def wrapped(x_init, *args, **kwargs):
            return implicit_root(
                solver_fn,
                optimality_fn,
                x_init,
                args,
                kwargs,
                solve=solve,
                has_aux=has_aux,
                tags=tags,
                throw=throw,
            )

        return wrapped

    return decorator


def custom_fixed_point(
    fixed_point_fn: Callable,
    solve: Any = None,
    has_aux: bool = False,
    tags: Iterable[str] = (),
    throw: bool = True,
) -> Callable[[Callable], Callable]:
    """Decorate a fixed-point solver so that its output is differentiated implicitly.

    As `custom_root` with `F(x, θ) = T(x, θ) − x`: the decorated
    `solver(x_init, *args, **kwargs)` returns `x*` with
    `fixed_point_fn(x*, *args, **kwargs) == x*`. The backward solve is with `∂T/∂x − I`.

    **Example:**

    ```python
    @js.implicit.custom_fixed_point(lambda x, theta: jnp.cos(x) + theta)
    def fixed_point(x_init, theta):  # any loop; it is never differentiated
        return jax.lax.fori_loop(0, 100, lambda _, x: jnp.cos(x) + theta, x_init)


    x = fixed_point(0.0, 0.5)
    print(x, jax.grad(fixed_point, argnums=1)(0.0, 0.5), 1 / (1 + jnp.sin(x)))  # equal
    ```
    """

    def optimality_fn(x, *args, **kwargs):
        return jax.tree.map(jnp.subtract, fixed_point_fn(x, *args, **kwargs), x)

    optimality_fn.__wrapped__ = fixed_point_fn
    return custom_root(optimality_fn, solve=solve, has_aux=has_aux, tags=tags, throw=throw)
