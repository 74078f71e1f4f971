"""jaxsolve.implicit: closed-form implicit derivatives in forward and reverse mode."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxsolve as js
from tests.helpers import (
    finite_difference_grad,
    ridge_closed_form,
    ridge_optimality,
    ridge_problem,
)


def _gradient_descent_ridge(w_init, lam, X, y):
    # A deliberately iterative solver (lax.while_loop): it cannot be reverse-differentiated
    # by unrolling, so a correct gradient proves the implicit rule is used.
    step = 0.5 / (jnp.linalg.norm(X, 2) ** 2 / X.shape[0] + lam)

    def body(carry):
        i, w = carry
        return i + 1, w - step * ridge_optimality(w, lam, X, y)

    return lax.while_loop(lambda c: c[0] < 3000, body, (0, w_init))[1]


ridge = js.implicit.custom_root(ridge_optimality)(_gradient_descent_ridge)


def test_ridge_hypergradient_closed_form_float64():
    X, y = ridge_problem()
    lam = jnp.asarray(0.2)
    w0 = jnp.zeros(X.shape[1])
    w_exact, dw_exact = ridge_closed_form(lam, X, y)
    assert np.allclose(ridge(w0, lam, X, y), w_exact, rtol=1e-10, atol=1e-12)
    for jac in (jax.jacrev, jax.jacfwd):
        dw = jax.jit(jac(ridge, argnums=1))(w0, lam, X, y)
        np.testing.assert_allclose(dw, dw_exact, rtol=1e-9, atol=1e-12)


def test_ridge_hypergradient_float32_default_solve():
    # Correlated features: cond(X^T X / n + lam) ~ 1e3 (float32 floor ~2e-5), where squaring the condition number
    # (normal-equation CG, JAXopt's default) costs accuracy in float32.
    rng = np.random.default_rng(5)
    n, d = 200, 40
    base = rng.normal(size=(n, d))
    X64 = base @ np.diag(np.logspace(0, -1.0, d)) + 0.3 * base[:, :1]
    y64 = X64 @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    lam = 1e-3
    _, dw_exact = ridge_closed_form(lam, X64, y64)
    X, y = jnp.asarray(X64, jnp.float32), jnp.asarray(y64, jnp.float32)

    @js.implicit.custom_root(ridge_optimality)
    def exact_ridge(w_init, lam, X, y):
        H = X.T @ X / X.shape[0] + lam * jnp.eye(X.shape[1], dtype=X.dtype)
        return jnp.linalg.solve(H, X.T @ y / X.shape[0])

    lam32 = jnp.asarray(lam, jnp.float32)
    for jac in (jax.jacrev, jax.jacfwd):
        dw = jax.jit(jac(exact_ridge, argnums=1))(jnp.zeros(d, jnp.float32), lam32, X, y)
        assert dw.dtype == jnp.float32
        rel = np.linalg.norm(np.asarray(dw, np.float64) - dw_exact) / np.linalg.norm(dw_exact)
        assert rel <= 1e-4, rel


def test_fixed_point_cos():
    @js.implicit.custom_fixed_point(lambda x, theta: jnp.cos(x) + theta)
    def solve(x_init, theta):
        return lax.fori_loop(0, 300, lambda _, x: jnp.cos(x) + theta, x_init)

    theta = jnp.asarray(0.3)
    x_star = solve(jnp.asarray(0.0), theta)
    np.testing.assert_allclose(x_star, jnp.cos(x_star) + theta, atol=1e-13)
    expected = 1.0 / (1.0 + jnp.sin(x_star))
    grads = jax.jit(
        lambda t: (jax.grad(solve, argnums=1)(0.0, t), jax.jacfwd(solve, argnums=1)(0.0, t))
    )
    for grad in grads(theta):
        np.testing.assert_allclose(grad, expected, rtol=1e-12)


def _newton_cube_root(x_init, a):
    return lax.fori_loop(0, 60, lambda _, x: x - (x**3 - a) / (3 * x**2), x_init)


cube_root = js.implicit.custom_root(lambda x, a: x**3 - a)(_newton_cube_root)


def test_cube_root_under_vmap_and_jit():
    a = jnp.array([1.0, 8.0, 27.0, 2.0])
    grads = jax.jit(jax.vmap(jax.grad(cube_root, argnums=1)))(jnp.ones(4), a)
    np.testing.assert_allclose(grads, 1.0 / (3.0 * jnp.cbrt(a) ** 2), rtol=1e-12)
    # Python scalars in and out (the primal of the differentiated input is a Python float).
    scalar_modes = jax.jit(
        lambda: (
            jax.grad(cube_root, argnums=1)(1.0, 8.0),
            jax.jacfwd(cube_root, argnums=1)(1.0, 8.0),
        )
    )
    for derivative in scalar_modes():
        np.testing.assert_allclose(derivative, 1.0 / 12.0, rtol=1e-12)
    # Second order: the rule differentiates itself (d^2 a^(1/3) / da^2 = -2/9 a^(-5/3)).
    second = jax.jit(
        lambda a: (
            jax.grad(jax.grad(cube_root, argnums=1), argnums=1)(jnp.asarray(1.0), a),
            jax.jacfwd(jax.jacrev(cube_root, argnums=1), argnums=1)(jnp.asarray(1.0), a),
        )
    )(jnp.asarray(8.0))
    for derivative in second:
        np.testing.assert_allclose(derivative, -2.0 / 9.0 * 8.0 ** (-5.0 / 3.0), rtol=1e-10)
    jac = jax.jit(jax.jacfwd(cube_root, argnums=1))(jnp.ones(4), a)  # elementwise root: diagonal
    np.testing.assert_allclose(jac, jnp.diag(1.0 / (3.0 * jnp.cbrt(a) ** 2)), rtol=1e-12)


def test_implicit_euler_step_sensitivities():
    # y1 = y0 + h M(theta) y1 solved by a fixed-point iteration; closed form (I - h M)^{-1} y0.
    rng = np.random.default_rng(1)
    A1, A2 = jnp.asarray(rng.normal(size=(2, 3, 3)) * 0.3)

    def vector_field(y, theta):
        return (theta[0] * A1 + theta[1] * A2) @ y

    def residual(y1, y0, h, theta):
        return y1 - y0 - h * vector_field(y1, theta)

    @js.implicit.custom_root(residual)
    def implicit_euler(y_init, y0, h, theta):
        return lax.fori_loop(0, 200, lambda _, y: y0 + h * vector_field(y, theta), y_init)

    def closed_form(y0, h, theta):
        M = theta[0] * A1 + theta[1] * A2
        return jnp.linalg.solve(jnp.eye(3) - h * M, y0)

    y0, h, theta = jnp.array([1.0, -0.5, 2.0]), jnp.asarray(0.1), jnp.array([0.7, -1.2])
    args = (y0, h, theta)
    chex.assert_trees_all_close(
        implicit_euler(y0, *args), closed_form(*args), rtol=1e-12, atol=1e-9
    )
    for jac in (jax.jacrev, jax.jacfwd):
        got = jax.jit(jac(lambda *a: implicit_euler(y0, *a), argnums=(0, 1, 2)))(*args)
        want = jax.jit(jac(closed_form, argnums=(0, 1, 2)))(*args)
        chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)


def test_linear_fixed_point_pytree_and_finite_differences():
    # x = B x + c with a dict-valued x; x* = (I - B)^{-1} c.
    rng = np.random.default_rng(2)
    B = jnp.asarray(rng.normal(size=(4, 4)) * 0.15)

    def T(x, params):
        flat = jnp.concatenate([x["a"], x["b"]])
        out = params["B"] @ flat + params["c"]
        return {"a": out[:2], "b": out[2:]}

    @js.implicit.custom_fixed_point(T)
    def iterate(x_init, params):
        return lax.fori_loop(0, 400, lambda _, x: T(x, params), x_init)

    x_init = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    c = jnp.array([1.0, 2.0, -1.0, 0.5])

    def objective(c_vec):
        x = iterate(x_init, {"B": B, "c": c_vec})
        return jnp.sum(x["a"] ** 2) + jnp.sum(jnp.sin(x["b"]))

    def closed(c_vec):
        x = jnp.linalg.solve(jnp.eye(4) - B, c_vec)
        return jnp.sum(x[:2] ** 2) + jnp.sum(jnp.sin(x[2:]))

    objective = jax.jit(objective)
    np.testing.assert_allclose(objective(c), closed(c), rtol=1e-12)
    fd = finite_difference_grad(objective, c)
    grad = jax.jit(jax.grad(objective))(c)
    np.testing.assert_allclose(grad, fd, rtol=1e-7)
    np.testing.assert_allclose(grad, jax.grad(closed)(c), rtol=1e-11)
    dB = jax.jit(jax.grad(lambda B_: jnp.sum(iterate(x_init, {"B": B_, "c": c})["a"])))(B)
    dB_ref = jax.grad(lambda B_: jnp.sum(jnp.linalg.solve(jnp.eye(4) - B_, c)[:2]))(B)
    np.testing.assert_allclose(dB, dB_ref, rtol=1e-10, atol=1e-12)


def _simplex_threshold_condition(tau, z):
    return jnp.sum(jnp.maximum(z - tau, 0.0)) - 1.0


@js.implicit.custom_root(_simplex_threshold_condition)
def _simplex_threshold(tau_init, z):
    # Bisection on tau in [min z - 1, max z]: the condition is decreasing in tau.
    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        positive = _simplex_threshold_condition(mid, z) > 0
        return jnp.where(positive, mid, lo), jnp.where(positive, hi, mid)

    lo, hi = lax.fori_loop(0, 100, body, (jnp.min(z) - 1.0, jnp.max(z)))
    return 0.5 * (lo + hi) + 0.0 * tau_init


def project_simplex(z):
    tau = _simplex_threshold(jnp.asarray(0.0, z.dtype), z)
    return jnp.maximum(z - tau, 0.0)


def test_simplex_projection_jacobian():
    z = jnp.array([0.9, 0.1, 0.6, -0.4, 0.3])
    x = project_simplex(z)
    np.testing.assert_allclose(jnp.sum(x), 1.0, rtol=1e-12)
    support = (x > 0).astype(z.dtype)
    expected = jnp.diag(support) - jnp.outer(support, support) / jnp.sum(support)
    for jac in (jax.jacrev, jax.jacfwd):
        np.testing.assert_allclose(jax.jit(jac(project_simplex))(z), expected, atol=1e-12)


def test_has_aux_mixed_args_kwargs_and_closure():
    # The form jaxsolve.nonlinear.root_find uses: args mixing arrays with non-arrays, an aux output.
    scale = jnp.asarray(2.0)  # closed over by the optimality function

    def F(x, args, *, power):
        fn, a = args
        return scale * (fn(x) ** power - a)

    @js.implicit.custom_root(F, has_aux=True)
    def solver(x_init, args, *, power):
        fn, a = args
        x = lax.fori_loop(0, 80, lambda _, x: x - (fn(x) ** power - a) / (power * x), x_init)
        return x, {"num_steps": jnp.array(80), "label": jnp.array(1)}

    a = jnp.array([4.0, 9.0])
    x, aux = solver(jnp.ones(2), (lambda v: v, a), power=2)
    np.testing.assert_allclose(x, jnp.sqrt(a), rtol=1e-12)
    assert int(aux["num_steps"]) == 80

    def objective(a):
        return jnp.sum(solver(jnp.ones(2), (lambda v: v, a), power=2)[0])

    grad, jvp = jax.jit(
        lambda a: (jax.grad(objective)(a), jax.jvp(objective, (a,), (jnp.ones(2),))[1])
    )(a)
    np.testing.assert_allclose(grad, 0.5 / jnp.sqrt(a), rtol=1e-12)
    np.testing.assert_allclose(jvp, jnp.sum(0.5 / jnp.sqrt(a)), rtol=1e-12)


@pytest.mark.parametrize(
    "solve",
    [
        js.linear.GMRES(rtol=1e-12, atol=0.0),
        js.linear.BiCGStab(rtol=1e-12, atol=0.0),
        js.linear.CG(rtol=1e-12, atol=0.0),
        lambda matvec, b: jax.scipy.sparse.linalg.cg(matvec, b, tol=1e-12, atol=0.0)[0],
    ],
    ids=["GMRES", "BiCGStab", "CG", "callable"],
)
def test_choice_of_backward_solve(solve):
    X, y = ridge_problem()
    lam = jnp.asarray(0.2)
    _, dw_exact = ridge_closed_form(lam, X, y)
    tags = ("positive_definite",) if isinstance(solve, js.linear.CG) else ()
    solver = js.implicit.custom_root(ridge_optimality, solve=solve, tags=tags)(
        _gradient_descent_ridge
    )
    dw = jax.jit(jax.jacrev(solver, argnums=1))(jnp.zeros(X.shape[1]), lam, X, y)
    np.testing.assert_allclose(dw, dw_exact, rtol=1e-8, atol=1e-11)


def test_bad_input_errors():
    X, y = ridge_problem()
    w0 = jnp.zeros(X.shape[1])
    wrong_shape = js.implicit.custom_root(lambda w, lam, X, y: (X @ w) * lam)(
        _gradient_descent_ridge
    )
    with pytest.raises(ValueError, match="`optimality_fn` must return"):
        wrong_shape(w0, jnp.asarray(0.1), X, y)
    wrong_solver = js.implicit.custom_root(ridge_optimality)(lambda w, lam, X, y: w[:2])
    with pytest.raises(ValueError, match="`solver` must return"):
        wrong_solver(w0, jnp.asarray(0.1), X, y)
    no_aux = js.implicit.custom_root(ridge_optimality, has_aux=True)(_gradient_descent_ridge)
    with pytest.raises(ValueError, match="has_aux"):
        no_aux(w0, jnp.asarray(0.1), X, y)
    bad_solve = js.implicit.custom_root(ridge_optimality, solve="lu")(_gradient_descent_ridge)
    with pytest.raises(TypeError, match="`solve`"):
        jax.grad(lambda lam: bad_solve(w0, lam, X, y).sum())(jnp.asarray(0.1))


def test_no_retrace_on_new_values():
    X, y = ridge_problem()
    w0 = jnp.zeros(X.shape[1])

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def hypergradient(lam):
        return jax.grad(lambda lam: jnp.sum(ridge(w0, lam, X, y) ** 2))(lam)

    values = [float(hypergradient(jnp.asarray(lam))) for lam in (0.1, 0.2, 0.4)]
    assert len(set(values)) == 3
