"""Regularisers of the solver's own heuristics, for training neural differential equations.

Pal, Ma, Shah & Rackauckas, "Opening the Blackbox: Accelerating Neural Differential Equations
by Regularizing Internal Solver Heuristics" (ICML 2021), add to the training loss the quantities
an adaptive solver steers by, so that training prefers dynamics that are cheap to integrate:

- `R_E = sum_j E_j |h_j|`: the local error estimates `E_j` (the scaled RMS norm
  `||err_j / (atol + rtol max(|y_j|, |y_{j+1}|))||` that the step-size controller compares with 1)
  weighted by the step sizes `h_j`, over the accepted steps;
- `R_S = sum_j S_j`: stiffness estimates, Shampine's `||k_s - k_{s-1}|| / ||Y_s - Y_{s-1}||`
  (the last two stages `k` of an explicit Runge–Kutta step and their inputs `Y`, both at the
  step's end for Dopri5 and Tsit5: an estimate of the Jacobian's largest eigenvalue), or
  `||f(y_{j+1}) - f(y_j)|| / ||y_{j+1} - y_j||` for solvers without stored stages.

Pal, Edelman & Rackauckas, "Locally Regularized Neural Differential Equations: Some Black Boxes
Were Meant to Remain Closed!" (ICML 2022) regularise one step only, chosen at random per
iteration: `R_E_local = E_k |h_k|`, `R_S_local = S_k` for the step `k` covering a time drawn
uniformly in `[t0, t1]`.

The controller's decisions stay `stop_gradient` (DESIGN section 2): the step sizes `h_j` are
constants, and the gradient of a regulariser is that of the error/stiffness estimates of the
steps taken, through the stages, with respect to `y0` and `args`.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax


class Regularise(eqx.Module):
    """Ask `solve` for the solver-heuristic regularisers of Pal et al. (2021, 2022).

    **Arguments:**

    - `key`: `None`, or a `jax.random` key: then also the local variants, for the step that
      covers a time drawn uniformly in `[t0, t1]` with this key.

    With `solve(..., regularise=Regularise(...))` (an adaptive ODE solver and a
    `PIDController`), `sol.stats` also holds, as differentiable scalars:

    - `"R_E"`: `sum_j E_j |h_j|`, the accepted steps' scaled error estimates times step sizes;
    - `"R_S"`: `sum_j S_j`, their stiffness estimates;
    - with a key, `"R_E_local"` and `"R_S_local"`: the same for one random step.

    Add `lambda_E * R_E` (or `R_S`, or the local ones) to a training loss to learn dynamics that
    need fewer steps. See the module docstring for the formulas.

    **Example:**

    ```python
    term = js.diffeq.ODETerm(lambda t, y, rate: -rate * y)

    def regulariser(rate):
        sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.ones(2), args=rate,
                              controller=js.diffeq.PIDController(rtol=1e-4, atol=1e-6),
                              regularise=js.diffeq.Regularise(key=jax.random.key(0)))
        return sol.stats["R_E"], sol.stats["R_S"], sol.stats["R_S_local"]

    r_e, r_s, r_s_local = regulariser(3.0)
    assert r_e > 0 and 0 < r_s_local <= r_s
    # the stiffness of y' = -rate y, summed over the steps, grows with the rate
    assert jax.grad(lambda rate: regulariser(rate)[1])(3.0) > 0
    ```
    """

    key: Any = None

    def __check_init__(self):
        if self.key is not None and not (
            eqx.is_array(self.key)
            and (
                jnp.issubdtype(self.key.dtype, jax.dtypes.prng_key)
                or (self.key.dtype == jnp.uint32 and self.key.shape[-1:] == (2,))
            )
        ):
            raise TypeError(
                f"`Regularise.key` must be None or a jax.random key, got {type(self.key).__name__}"
            )


def _norm(tree):
    """The 2-norm of a pytree, with a finite gradient at 0."""
    squares = sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))
    tiny = jnp.finfo(squares.dtype).tiny
    return jnp.sqrt(jnp.maximum(squares, tiny))


def _rms(tree):
    size = sum(x.size for x in jax.tree.leaves(tree))
    return _norm(tree) / jnp.sqrt(jnp.asarray(size, _norm(tree).dtype))


def error_estimate(controller, y0, y1, y_error):
    """`E_j`: the scaled RMS error the controller sees (differentiable)."""

    def scaled(e, a, b):
        atol = jnp.asarray(controller.atol).astype(e.dtype)
        rtol = jnp.asarray(controller.rtol).astype(e.dtype)
        return e / (atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b)))

    return _rms(jax.tree.map(scaled, y_error, y0, y1))


def stiffness_estimate(solver, h, info):
    """`S_j`: Shampine's estimate from the last two stages, or an endpoint Lipschitz estimate."""
    tableau = getattr(solver, "tableau", None)
    if tableau is not None and info.ks is not None and len(info.ks) >= 3:
        rows = ((),) + tuple(tableau.a)
        last, before = rows[-1], rows[-2]
        width = len(last)
        coeffs = [
            (last[j] if j < len(last) else 0.0) - (before[j] if j < len(before) else 0.0)
            for j in range(width)
        ]
        # Y_s - Y_{s-1} = h sum_j (a_sj - a_{s-1,j}) k_j.
        dy = jax.tree.map(
            lambda *ks: (
                h.astype(ks[0].dtype) * sum(c * k for c, k in zip(coeffs, ks, strict=False))
            ),
            *info.ks[:width],
        )
        dk = jax.tree.map(lambda a, b: a - b, info.ks[-1], info.ks[-2])
    else:
        dy = jax.tree.map(lambda a, b: a - b, info.y1, info.y0)
        dk = jax.tree.map(lambda a, b: a - b, info.f1, info.f0)
    denominator = _norm(dy)
    usable = denominator > 0
    return jnp.where(usable, _norm(dk) / jnp.where(usable, denominator, 1), 0)


def check_regularise(regularise, solver, controller, terms):
    """Eager checks: an adaptive ODE solve with a controller that has `rtol`/`atol`."""
    if regularise is None:
        return
    if not isinstance(regularise, Regularise):
        raise TypeError(
            f"`regularise` must be None or a jaxsolve.diffeq.Regularise, got "
            f"{type(regularise).__name__}"
        )
    if terms.brownian is not None:
        raise ValueError("`regularise` is for ODEs (the papers' estimates need an ODE step)")
    if not (hasattr(controller, "rtol") and hasattr(controller, "atol")):
        raise ValueError(
            "`regularise` needs an adaptive solve: pass controller=PIDController(rtol, atol) "
            "(the error estimate is scaled by its tolerances)"
        )


def step_values(solver, controller, t_start, t_next, y0, out):
    """`(E_j |h_j|, S_j)` for one step (differentiable; the step size is a constant)."""
    h = lax.stop_gradient(t_next - t_start)
    error = error_estimate(controller, y0, out.y1, out.y_error)
    stiffness = stiffness_estimate(solver, h, out.dense_info)
    return error * jnp.abs(h).astype(error.dtype), stiffness.astype(error.dtype)
