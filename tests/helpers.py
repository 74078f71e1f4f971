"""The shared problem library of the test suite.

Each pillar keeps its problems in its own section below (test SDEs with known solutions,
analytic diffusion models, problems with closed-form optima), plus generic checks.
"""

import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------------------------
# Generic checks
# ---------------------------------------------------------------------------------------------


def tree_allclose(x, y, *, rtol=1e-7, atol=1e-9) -> bool:
    """True when two pytrees have the same structure and allclose leaves."""
    if jax.tree.structure(x) != jax.tree.structure(y):
        return False
    return all(
        np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True)
    )


def finite_difference_grad(fn, x, eps=1e-6):
    """Central finite differences of a scalar function of a 1-D float64 array."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        grad[i] = (float(fn(jnp.asarray(x + e))) - float(fn(jnp.asarray(x - e)))) / (2 * eps)
    return grad


def fitted_slope(xs, ys) -> float:
    """The least-squares slope of log(ys) against log(xs): an empirical convergence order."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


# ---------------------------------------------------------------------------------------------
# Brownian motion and SDEs (jaxsolve.brownian, jaxsolve.diffeq)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Diffusion models (jaxsolve.diffusion)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Linear, implicit and nonlinear problems (jaxsolve.linear, .implicit, .nonlinear)
# ---------------------------------------------------------------------------------------------
