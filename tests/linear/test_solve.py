"""jaxsolve.linear.solve: values and derivatives against jnp.linalg.solve, for every solver."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from jaxsolve._core import AbstractIterativeSolver
from tests.helpers import (
    finite_difference_grad,
    nonsymmetric_matrix,
    poisson_2d,
    spd_matrix,
)

N = 6
TIGHT = dict(rtol=1e-12, atol=1e-12)

# name -> (solver, the kind of matrix it needs)
SOLVERS = {
    "LU": (js.linear.LU(), "general"),
    "Cholesky": (js.linear.Cholesky(), "spd"),
    "QR": (js.linear.QR(), "general"),
    "CG": (js.linear.CG(**TIGHT), "spd"),
    "GMRES": (js.linear.GMRES(**TIGHT, restart=4), "general"),
    "BiCGStab": (js.linear.BiCGStab(**TIGHT), "general"),
    "SOR": (js.linear.SOR(omega=1.2, **TIGHT), "spd"),
    "SSOR": (js.linear.SSOR(omega=1.2, **TIGHT), "spd"),
}


def _system(kind):
    A = spd_matrix(N) if kind == "spd" else nonsymmetric_matrix(N)
    b = jnp.asarray(np.random.default_rng(3).normal(size=N))
    return A, b


def _reference(A, b):
    return jnp.linalg.solve(A, b)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_value_and_derivatives_match_dense_solve(name):
    solver, kind = SOLVERS[name]
    A, b = _system(kind)

    def ours(A, b):
        return js.linear.solve(A, b, solver).value

    def value_and_jacobians(fn):
        # One compilation for the value and both modes (compile time dominates the suite).
        return jax.jit(
            lambda A, b: (
                fn(A, b),
                jax.jacrev(fn, argnums=(0, 1))(A, b),
                jax.jacfwd(fn, argnums=(0, 1))(A, b),
            )
        )(A, b)

    got, want = value_and_jacobians(ours), value_and_jacobians(_reference)
    chex.assert_trees_all_close(got[0], want[0], rtol=1e-9, atol=1e-10)
    chex.assert_trees_all_close(got[1], want[1], rtol=1e-8, atol=1e-9)
    chex.assert_trees_all_close(got[2], want[2], rtol=1e-8, atol=1e-9)


def test_least_squares_tall_and_wide():
    rng = np.random.default_rng(7)
    tall = jnp.asarray(rng.normal(size=(8, 3)))
    wide = jnp.asarray(rng.normal(size=(3, 8)))
    b_tall = jnp.asarray(rng.normal(size=8))  # inconsistent: non-zero residual
    b_wide = jnp.asarray(rng.normal(size=3))

    def ours(A, b):
        return js.linear.solve(A, b, js.linear.QR()).value

    def normal_equations(A, b):  # x = (A^T A)^{-1} A^T b
        return jnp.linalg.solve(A.T @ A, A.T @ b)

    def minimum_norm(A, b):  # x = A^T (A A^T)^{-1} b
        return A.T @ jnp.linalg.solve(A @ A.T, b)

    def value_and_jacobians(fn, A, b):
        return jax.jit(
            lambda A, b: (
                fn(A, b),
                jax.jacrev(fn, argnums=(0, 1))(A, b),
                jax.jacfwd(fn, argnums=(0, 1))(A, b),
            )
        )(A, b)

    for A, b, ref in ((tall, b_tall, normal_equations), (wide, b_wide, minimum_norm)):
        got, want = value_and_jacobians(ours, A, b), value_and_jacobians(ref, A, b)
        chex.assert_trees_all_close(got[0], want[0], rtol=1e-10, atol=1e-12)
        chex.assert_trees_all_close(got[1:], want[1:], rtol=1e-8, atol=1e-10)


def test_matrix_free_pytree_operator():
    # A block-diagonal operator on a dict of arrays, given as a plain function.
    A1, A2 = spd_matrix(3, seed=4), spd_matrix(2, seed=5)
    b = {"u": jnp.arange(1.0, 4.0), "v": jnp.array([0.5, -1.0])}

    def matvec(x):
        return {"u": A1 @ x["u"], "v": A2 @ x["v"]}

    x = jax.jit(lambda b: js.linear.solve(matvec, b, js.linear.CG(**TIGHT)).value)(b)
    expected = {"u": jnp.linalg.solve(A1, b["u"]), "v": jnp.linalg.solve(A2, b["v"])}
    chex.assert_trees_all_close(x, expected, rtol=1e-7, atol=1e-9)


def test_matrix_free_poisson_and_closure_gradient_vs_finite_differences():
    grid = 5
    laplacian = poisson_2d(grid)
    f = jnp.asarray(np.random.default_rng(0).normal(size=(grid, grid)))
    op = js.linear.FunctionOperator(laplacian, f, tags=("positive_definite",))
    dense = op.as_matrix()
    u = jax.jit(lambda f: js.linear.solve(op, f, js.linear.CG(**TIGHT)).value)(f)
    chex.assert_trees_all_close(u.ravel(), jnp.linalg.solve(dense, f.ravel()), rtol=1e-9, atol=1e-9)

    # d/dc of a functional of u(c) with (L + c I) u = f, c closed over by the function.
    weights = jnp.cos(jnp.arange(grid * grid, dtype=jnp.float64)).reshape(grid, grid)

    @jax.jit
    def objective(c, solver):
        shifted = js.linear.FunctionOperator(lambda v: laplacian(v) + c[0] * v, f)
        return jnp.sum(weights * js.linear.solve(shifted, f, solver).value)

    c0 = jnp.array([3.0])
    solver = js.linear.GMRES(**TIGHT, reorthogonalise=True)
    fd = finite_difference_grad(lambda c: objective(c, solver), c0, eps=1e-5)
    np.testing.assert_allclose(jax.jit(jax.grad(objective))(c0, solver), fd, rtol=1e-6)


def test_preconditioned_cg():
    scales = jnp.logspace(0, 3, 20)
    A = spd_matrix(20) * jnp.sqrt(scales[:, None] * scales[None, :])
    b = jnp.ones(20)
    plain = js.linear.solve(A, b, js.linear.CG(**TIGHT, max_steps=2000))
    jacobi = js.linear.DiagonalOperator(1.0 / jnp.diagonal(A))
    pre = js.linear.solve(A, b, js.linear.CG(**TIGHT, preconditioner=jacobi))
    chex.assert_trees_all_close(pre.value, jnp.linalg.solve(A, b), rtol=1e-9, atol=1e-9)
    assert int(pre.stats["num_steps"]) < int(plain.stats["num_steps"])


def test_vmap_and_float32():
    A = nonsymmetric_matrix(N, dtype=np.float32)
    bs = jnp.asarray(np.random.default_rng(2).normal(size=(4, N)), jnp.float32)
    solver = js.linear.BiCGStab(rtol=1e-6, atol=1e-6)
    xs = jax.vmap(lambda b: js.linear.solve(A, b, solver).value)(bs)
    assert xs.dtype == jnp.float32
    for b, x in zip(bs, xs, strict=True):
        np.testing.assert_allclose(x, jnp.linalg.solve(A, b), rtol=1e-4, atol=1e-5)


def test_nonconvergence_and_singular_are_reported():
    A, b = _system("spd")
    short = js.linear.CG(rtol=1e-14, atol=0.0, max_steps=2)
    sol = js.linear.solve(A, b, short, throw=False)
    assert sol.result == js.RESULTS.linear_solve_failed
    assert int(sol.stats["num_steps"]) == 2
    with pytest.raises(Exception, match="linear_solve_failed"):
        js.linear.solve(A, b, short)

    singular = jnp.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    rhs = jnp.ones(3)
    for solver in (js.linear.LU(), js.linear.QR()):
        assert js.linear.solve(singular, rhs, solver, throw=False).result == js.RESULTS.singular
    with pytest.raises(Exception, match="singular"):
        jax.jit(lambda A: js.linear.solve(A, rhs, js.linear.LU()).value)(singular)
    not_pd = -spd_matrix(3)
    assert js.linear.solve(not_pd, rhs, js.linear.Cholesky(), throw=False).result == (
        js.RESULTS.singular
    )
    failing = js.linear.solve(A, b, js.linear.GMRES(rtol=1e-14, atol=0.0, max_steps=3), throw=False)
    assert failing.result == js.RESULTS.linear_solve_failed


def test_bad_input_errors():
    A, b = _system("general")
    with pytest.raises(ValueError, match="`b` must have the shape"):
        js.linear.solve(A, jnp.ones(N + 1), js.linear.LU())
    with pytest.raises(ValueError, match="must be square"):
        js.linear.solve(jnp.ones((4, 3)), jnp.ones(4), js.linear.LU())
    with pytest.raises(ValueError, match="2-D"):
        js.linear.solve(jnp.ones((2, 2, 2)), jnp.ones(2))
    with pytest.raises(TypeError, match="one floating dtype"):
        js.linear.solve(A.astype(jnp.float32), b, js.linear.LU())
    with pytest.raises(TypeError, match="floating"):
        js.linear.solve(A, jnp.arange(N), js.linear.LU())
    with pytest.raises(TypeError, match="`solver`"):
        js.linear.solve(A, b, "cg")
    with pytest.raises(ValueError, match="`omega`"):
        js.linear.SOR(omega=2.5)
    with pytest.raises(ValueError, match="`rtol`"):
        js.linear.CG(rtol=-1.0)
    with pytest.raises(ValueError, match="`max_steps`"):
        js.linear.GMRES(max_steps=0)
    with pytest.raises(ValueError, match="`tags`"):
        js.linear.MatrixOperator(A, tags=("symetric",))


def test_new_hyperparameter_values_do_not_retrace():
    A, b = _system("spd")

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(solver, A, b):
        return js.linear.solve(A, b, solver).value

    for rtol in (1e-6, 1e-8, 1e-10):
        run(js.linear.CG(rtol=rtol, atol=0.0), A, b)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run_sor(solver, A, b):
        return js.linear.solve(A, b, solver).stats["num_steps"]

    steps = [int(run_sor(js.linear.SOR(omega=w, rtol=1e-8, atol=0.0), A, b)) for w in (1.0, 1.3)]
    assert steps[0] != steps[1]  # the new omega was really used


def test_auto_selection():
    auto = js.linear.Auto()
    big = jnp.zeros(600)
    pd_function = js.linear.FunctionOperator(lambda v: 2.0 * v, big, tags=("positive_definite",))
    general_function = js.linear.FunctionOperator(lambda v: 2.0 * v, big)
    small_function = js.linear.FunctionOperator(lambda v: 2.0 * v, jnp.zeros(5))
    assert isinstance(auto.select(pd_function), js.linear.CG)
    assert isinstance(auto.select(general_function), js.linear.GMRES)
    assert isinstance(auto.select(small_function), js.linear.LU)
    pd_matrix = js.linear.MatrixOperator(spd_matrix(3), tags=("positive_definite",))
    assert isinstance(auto.select(pd_matrix), js.linear.Cholesky)
    assert isinstance(auto.select(js.linear.MatrixOperator(jnp.ones((4, 2)))), js.linear.QR)
    A, b = _system("general")
    chex.assert_trees_all_close(
        js.linear.solve(A, b, auto).value, _reference(A, b), rtol=1e-10, atol=1e-9
    )


class _ExplicitInverse(js.linear.AbstractLinearSolver):
    """A user-defined solver written against the public ABC only."""

    def compute(self, operator, vector):
        x = jnp.linalg.inv(operator.as_matrix()) @ vector.reshape(-1)
        return x.reshape(vector.shape), js.RESULTS.successful, {"num_steps": jnp.array(0)}

    def needs_square(self):
        return True


def test_user_defined_solver_is_differentiated_as_a_solve():
    A, b = _system("general")

    def ours(A, b):
        return jnp.sum(jnp.sin(js.linear.solve(A, b, _ExplicitInverse()).value))

    def reference(A, b):
        return jnp.sum(jnp.sin(_reference(A, b)))

    got = jax.jit(jax.grad(ours, argnums=(0, 1)))(A, b)
    chex.assert_trees_all_close(
        got, jax.grad(reference, argnums=(0, 1))(A, b), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize(
    "solver", [js.linear.LU(), js.linear.QR(), js.linear.CG(rtol=1e-12, atol=0.0)]
)
def test_solvers_follow_the_contract_in_a_users_loop(solver):
    """Direct and iterative solvers alike run from `init`/`step`/`terminate` (the state last)
    in a jitted `lax.while_loop` and agree with `solve`."""
    A, b = _system("spd")
    op = js.linear.MatrixOperator(A)
    assert isinstance(solver, js.linear.AbstractLinearSolver)
    assert isinstance(solver, AbstractIterativeSolver)

    @jax.jit
    def run(b):
        return jax.lax.while_loop(
            lambda state: ~solver.terminate(op, b, state)[0],
            lambda state: solver.step(op, b, state),
            solver.init(op, b),
        )

    state = run(b)
    x = state.x
    chex.assert_shape(x, b.shape)
    chex.assert_trees_all_close(x, js.linear.solve(A, b, solver).value, rtol=1e-10, atol=1e-12)
    done, result = solver.terminate(op, b, state)
    assert done and result == js.RESULTS.successful
