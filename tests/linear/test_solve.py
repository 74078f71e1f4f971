"""jaxsolve.linear.solve: values and derivatives against jnp.linalg.solve, for every solver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from tests.helpers import nonsymmetric_matrix, spd_matrix, tree_allclose

N = 6
TIGHT = dict(rtol=1e-12, atol=1e-12)

# (solver, which matrix it needs)
SOLVERS = {
    "LU": (js.linear.LU(), "general"),
    "Cholesky": (js.linear.Cholesky(), "spd"),
    "QR": (js.linear.QR(), "general"),
    "CG": (js.linear.CG(**TIGHT), "spd"),
    "GMRES": (js.linear.GMRES(**TIGHT, restart=4), "general"),
    "BiCGStab": (js.linear.BiCGStab(**TIGHT), "general"),
    "Auto": (js.linear.Auto(), "general"),
}


def _system(kind):
    A = spd_matrix(N) if kind == "spd" else nonsymmetric_matrix(N)
    b = jnp.asarray(np.random.default_rng(3).normal(size=N))
    return A, b


@pytest.mark.parametrize("name", list(SOLVERS))
def test_value_and_derivatives_match_dense_solve(name):
    solver, kind = SOLVERS[name]
    A, b = _system(kind)

    @jax.jit
    def ours(A, b):
        return js.linear.solve(A, b, solver).value

    def reference(A, b):
        return jnp.linalg.solve(A, b)

    assert tree_allclose(ours(A, b), reference(A, b), rtol=1e-9, atol=1e-10)
    for jac in (jax.jacrev, jax.jacfwd):
        got = jac(ours, argnums=(0, 1))(A, b)
        want = jac(reference, argnums=(0, 1))(A, b)
        assert tree_allclose(got, want, rtol=1e-8, atol=1e-9), (name, jac.__name__)


def test_matrix_free_pytree_operator():
    # A block-diagonal operator on a dict of arrays, given as a plain function.
    A1, A2 = spd_matrix(3, seed=4), spd_matrix(2, seed=5)
    b = {"u": jnp.arange(1.0, 4.0), "v": jnp.array([0.5, -1.0])}

    def matvec(x):
        return {"u": A1 @ x["u"], "v": A2 @ x["v"]}

    x = js.linear.solve(matvec, b, js.linear.CG(**TIGHT)).value
    assert tree_allclose(x, {"u": jnp.linalg.solve(A1, b["u"]), "v": jnp.linalg.solve(A2, b["v"])})
