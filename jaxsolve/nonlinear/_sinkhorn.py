"""Entropic optimal transport by Sinkhorn's algorithm in the log domain, differentiable with
respect to the cost matrix and both marginals by implicit differentiation.

Potentials (f, g) define the plan P_ij = exp((f_i + g_j - C_ij) / eps). One Sinkhorn sweep is

    f <- eps log a - eps logsumexp_j((g_j - C_ij) / eps)
    g <- eps log b - eps logsumexp_i((f_i - C_ij) / eps)

after which the column marginals of P are exact; the solve stops when the row marginals are
within `threshold` in the l1 norm. Potentials are defined up to f + c, g - c; we fix the gauge
<a, f> = <b, g>, and add that gauge condition to the optimality function so that the
implicit-function-theorem system is nonsingular.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float

from .._core import (
    RESULTS,
    AbstractSolution,
    bounded_while_loop,
    check_floating,
    check_positive,
    check_result,
)
from ._adjoint import AbstractAdjoint, ImplicitAdjoint


class SinkhornSolution(AbstractSolution):
    """The outcome of `sinkhorn` (`value` is the transport plan).

    - `plan`: the transport plan P, shape (n, m).
    - `f`, `g`: the dual potentials (gauge <a, f> = <b, g>).
    - `reg_ot_cost`: the entropic OT cost <P, C> + eps KL(P | a b'), computed as the dual
      value; its gradients in cost, marginals and eps come from the envelope theorem (no linear
      solve). Gradients with respect to `a`, `b` are meaningful along the simplex (up to an
      additive constant).
    - `transport_cost`: <P, C>.
    - `result`: a `RESULTS` item; `stats`: `"num_steps"` (Sinkhorn sweeps), `"marginal_error"`.
    """

    plan: Float[Array, "n m"]
    f: Float[Array, " n"]
    g: Float[Array, " m"]
    reg_ot_cost: Float[Array, ""]
    transport_cost: Float[Array, ""]
    result: RESULTS
    stats: dict[str, Array]
    state: Any = None

    @property
    def value(self):
        return self.plan


def _update_f(g, cost, log_a, epsilon):
    return epsilon * log_a - epsilon * logsumexp((g[None, :] - cost) / epsilon, axis=1)


def _update_g(f, cost, log_b, epsilon):
    return epsilon * log_b - epsilon * logsumexp((f[:, None] - cost) / epsilon, axis=0)


def _dual_value(f, g, cost, a, b, epsilon):
    """<P, C> + eps KL(P | a b') at the optimum, as the value of the dual problem
    max <a, u> + <b, v> - eps sum_ij a_i b_j exp((u_i + v_j - C_ij) / eps) + eps
    at u = f - eps log a, v = g - eps log b, with (u, v) held fixed: by the envelope (Danskin)
    theorem its gradient in (C, a, b, eps) is exact at the optimum without a linear solve
    (d/dC = P, d/da = u - eps), as in ott-jax."""
    u = lax.stop_gradient(f - epsilon * jnp.log(a))
    v = lax.stop_gradient(g - epsilon * jnp.log(b))
    kernel = a[:, None] * b[None, :] * jnp.exp((u[:, None] + v[None, :] - cost) / epsilon)
    return jnp.vdot(a, u) + jnp.vdot(b, v) - epsilon * jnp.sum(kernel) + epsilon


def _gauge_shift(f, g, a, b):
    shift = (jnp.vdot(a, f) - jnp.vdot(b, g)) / (jnp.sum(a) + jnp.sum(b))
    return f - shift, g + shift


def _optimality(potentials, cost, a, b, epsilon):
    f, g = potentials
    residual_f = f - _update_f(g, cost, jnp.log(a), epsilon)
    residual_g = g - _update_g(f, cost, jnp.log(b), epsilon)
    # The gauge condition, zero at our solution, removes the (1, -1) null direction.
    residual_g = residual_g + (jnp.vdot(a, f) - jnp.vdot(b, g))
    return residual_f, residual_g


def sinkhorn(
    cost: Float[Array, "n m"],
    a: Float[Array, " n"],
    b: Float[Array, " m"],
    epsilon: Any,
    *,
    threshold: float = 1e-3,
    max_steps: int = 2000,
    check_every: int = 10,
    adjoint: AbstractAdjoint | None = None,
    throw: bool = True,
) -> SinkhornSolution:
    """Entropy-regularised optimal transport between `a` and `b` for the cost matrix `cost`.

    **Arguments:**

    - `cost`: an (n, m) floating array.
    - `a`, `b`: positive marginal weights of shapes (n,) and (m,) with equal sums.
    - `epsilon`: the entropic regularisation (> 0), in the units of `cost`.
    - `threshold`: stop when `sum_i |sum_j P_ij - a_i| <= threshold`.

    `epsilon` and `threshold` may be traced: pass them as JAX arrays (`jnp.asarray(0.05)`) to
    a jitted function and a new value does not recompile (a Python float argument of
    `eqx.filter_jit` is static, so each new float compiles anew). Traced values are checked
    at run time (`> 0`, finite) with `eqx.error_if`.
    - `max_steps`: the cap on Sinkhorn sweeps (a Python int); `check_every` sweeps run between
      two checks of the marginal error.
    - `adjoint`: `ImplicitAdjoint()` (default; the backward pass is one linear solve on the
      potentials, whatever the number of sweeps) or `RecursiveCheckpointAdjoint()`.
    - `throw`: raise if the threshold is not met within `max_steps` (else see `result`).

    **Returns:** a `SinkhornSolution(plan, f, g, reg_ot_cost, transport_cost, result, stats)`.

    **Example:**

    ```python
    x, y = jax.random.normal(k1, (64, 2)), jax.random.normal(k2, (64, 2))
    cost = jnp.sum((x[:, None] - y[None]) ** 2, -1)
    a = b = jnp.full(64, 1 / 64)
    sol = js.nonlinear.sinkhorn(cost, a, b, 0.05)
    grad_x = jax.grad(lambda x: js.nonlinear.sinkhorn(cost_fn(x, y), a, b, 0.05).reg_ot_cost)(x)
    ```

    References: Cuturi, "Sinkhorn distances", NeurIPS 2013; Peyré & Cuturi, *Computational
    Optimal Transport*, 2019, §4.4 (log domain); Blondel et al., "Efficient and Modular
    Implicit Differentiation", NeurIPS 2022 (implicit gradients); Luise et al., "Differential
    properties of Sinkhorn approximation", NeurIPS 2018.
    """
    check_floating("cost", cost)
    check_floating("a", a)
    check_floating("b", b)
    if jnp.ndim(cost) != 2:
        raise ValueError(f"`cost` must be a 2-D (n, m) array, got shape {jnp.shape(cost)}")
    n, m = jnp.shape(cost)
    if jnp.shape(a) != (n,):
        raise ValueError(f"`a` must have shape (n,) = ({n},) to match `cost`, got {jnp.shape(a)}")
    if jnp.shape(b) != (m,):
        raise ValueError(f"`b` must have shape (m,) = ({m},) to match `cost`, got {jnp.shape(b)}")
    dtypes = {jnp.result_type(x) for x in (cost, a, b)}
    if len(dtypes) > 1:
        raise TypeError(f"`cost`, `a` and `b` must share one dtype, got {sorted(map(str, dtypes))}")
    check_positive("epsilon", epsilon)
    check_positive("threshold", threshold)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}")
    if not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"`check_every` must be a positive int, got {check_every!r}")
    if adjoint is not None and not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(f"`adjoint` must be an AbstractAdjoint, got {type(adjoint).__name__}")
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    dtype = jnp.result_type(cost)
    cost, a, b = (jnp.asarray(x, dtype) for x in (cost, a, b))
    # `epsilon` and `threshold` are used as arrays of the problem's dtype: pass them as JAX
    # arrays to a jitted caller and a new value reuses the compilation. A traced value cannot
    # be checked above, so it is checked here, at run time.
    epsilon = jnp.asarray(epsilon, dtype)
    threshold = jnp.asarray(threshold, dtype)
    for name, value in (("epsilon", epsilon), ("threshold", threshold)):
        if isinstance(value, jax.core.Tracer):
            cost = eqx.error_if(
                cost, ~(value > 0) | ~jnp.isfinite(value), f"`{name}` must be finite and > 0"
            )
    num_blocks = -(-max_steps // check_every)

    def primal(potentials, cost, a, b, epsilon):
        # Iterate on potentials in units of epsilon against the pre-scaled cost: one division
        # of the (n, m) matrix per solve instead of two per sweep.
        log_a, log_b = jnp.log(a), jnp.log(b)
        scaled_cost = cost / epsilon

        def sweep(fg):
            f, g = fg
            lse_rows = logsumexp(g[None, :] - scaled_cost, axis=1)
            f = log_a - lse_rows
            g = log_b - logsumexp(f[:, None] - scaled_cost, axis=0)
            return (f, g), lse_rows

        def body(carry):
            fg, _ = carry
            fg = lax.fori_loop(0, check_every - 1, lambda _, fg: sweep(fg)[0], fg)
            f_old = fg[0]
            # The last sweep's row log-sum-exp gives the row marginals of the plan before it:
            # sum_j P_ij = exp(f_i + lse_i). The error check costs no extra pass.
            fg, lse_rows = sweep(fg)
            return fg, jnp.sum(jnp.abs(jnp.exp(f_old + lse_rows) - a))

        init = (jax.tree.map(lambda p: p / epsilon, potentials), jnp.asarray(jnp.inf, dtype))
        out = bounded_while_loop(
            lambda c: ~(c[1] <= threshold),
            body,
            init,
            max_steps=num_blocks,
            kind=adjoint.loop_kind,
        )
        (f, g), error = out.value
        f, g = _gauge_shift(epsilon * f, epsilon * g, a, b)
        return (f, g), (error, out.num_steps * check_every)

    zeros = (jnp.zeros((n,), dtype), jnp.zeros((m,), dtype))

    def flat_primal(potentials, args):
        return primal(potentials, *args)

    def flat_optimality(potentials, args):
        return _optimality(potentials, *args)

    (f, g), (error, num_steps) = adjoint.apply(
        flat_primal, flat_optimality, zeros, (cost, a, b, epsilon), throw=throw
    )
    plan = jnp.exp((f[:, None] + g[None, :] - cost) / epsilon)
    finite = jnp.all(jnp.isfinite(f)) & jnp.all(jnp.isfinite(g))
    result = RESULTS.where(error <= threshold, RESULTS.successful, RESULTS.max_steps_reached)
    result = RESULTS.where(finite, result, RESULTS.nonfinite)
    solution = SinkhornSolution(
        plan=plan,
        f=f,
        g=g,
        reg_ot_cost=_dual_value(f, g, cost, a, b, epsilon),
        transport_cost=jnp.sum(plan * cost),
        result=result,
        stats={"num_steps": num_steps, "marginal_error": error},
    )
    return check_result(solution, result, throw, "jaxsolve.nonlinear.sinkhorn")
