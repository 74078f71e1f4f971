"""Entropic optimal transport by Sinkhorn's algorithm in the log domain, differentiable with
respect to the cost matrix and both marginals by implicit differentiation.

Potentials (f, g) define the plan P_ij = exp((f_i + g_j - C_ij) / eps). One Sinkhorn sweep is

    f <- eps log a - eps logsumexp_j((g_j - C_ij) / eps)
    g <- eps log b - eps logsumexp_i((f_i - C_ij) / eps)

after which the column marginals of P are exact; the solve stops when the row marginals are
within `threshold` in the l1 norm. `Sinkhorn` is the solver (init/step/terminate, for a user's
own loop); `sinkhorn` the entry point that runs it and differentiates the solution. Potentials are defined up to f + c, g - c; we fix the gauge
<a, f> = <b, g>, and add that gauge condition to the optimality function so that the
implicit-function-theorem system is nonsingular.
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float, Int

from .._core import (
    RESULTS,
    AbstractIterativeSolver,
    AbstractSolution,
    bounded_while_loop,
    check_floating,
    check_positive,
    check_result,
    hyperparameter,
    is_concrete,
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

    **Example:**

    ```python
    x = jnp.linspace(0.0, 1.0, 4)
    cost, a = (x[:, None] - x[None, :]) ** 2, jnp.full(4, 0.25)
    sol = js.nonlinear.sinkhorn(cost, a, a, 0.1)
    print(sol.plan.sum(axis=1), sol.reg_ot_cost, sol.stats["num_steps"])
    ```
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


class SinkhornState(NamedTuple):
    """The state of `Sinkhorn`.

    - `f`, `g`: the dual potentials in units of epsilon (`f / epsilon`, `g / epsilon`), before
      the gauge is fixed (`Sinkhorn.extract` returns them in the units of the cost).
    - `marginal_error`: `sum_i |sum_j P_ij - a_i|` measured during the last step (`inf`
      before the first).
    - `num_sweeps`: the Sinkhorn sweeps run so far (`check_every` per step).

    **Example:**

    ```python
    x = jnp.linspace(0.0, 1.0, 4)
    cost, a = (x[:, None] - x[None, :]) ** 2, jnp.full(4, 0.25)
    solver = js.nonlinear.Sinkhorn(epsilon=0.1)
    state = solver.step(cost, a, a, solver.init(cost, a, a))
    print(state.marginal_error, state.num_sweeps)  # after check_every = 10 sweeps
    ```
    """

    f: Float[Array, " n"]
    g: Float[Array, " m"]
    marginal_error: Float[Array, ""]
    num_sweeps: Int[Array, ""]


class Sinkhorn(AbstractIterativeSolver):
    """Sinkhorn's algorithm in the log domain, as a solver: `init`, `step`, `terminate`.

    `jaxsolve.nonlinear.sinkhorn` runs it and differentiates the result; use the solver
    directly to drive the sweeps in your own jitted loop (warm starts, logging, a schedule on
    epsilon between calls).

    **Arguments:**

    - `epsilon`: the entropic regularisation (> 0), in the units of the cost.
    - `threshold`: stop when the rows of the plan miss `a` by at most this, in the l1 norm.
    - `check_every`: Sinkhorn sweeps per `step` (a static Python int); the marginal error is
      read off the last sweep of each step at no extra cost.

    `epsilon` and `threshold` are array fields: a new value does not recompile.

    **Methods** (the state last, as every jaxsolve solver):

    - `init(cost, a, b) -> SinkhornState`: zero potentials.
    - `step(cost, a, b, state) -> SinkhornState`: `check_every` sweeps.
    - `terminate(cost, a, b, state) -> (done, result)`: done once the marginal error is at
      most `threshold` (`RESULTS.successful`) or is NaN (`RESULTS.nonfinite`).
    - `extract(cost, a, b, state) -> (f, g)`: the potentials, gauge `<a, f> = <b, g>`.
    - `solution(cost, a, b, state) -> SinkhornSolution`: what `sinkhorn` would return for
      that state (without its derivative rule).

    **Example:**

    ```python
    x = jnp.linspace(0.0, 1.0, 5)
    cost, a = (x[:, None] - x[None, :]) ** 2, jnp.full(5, 0.2)
    solver = js.nonlinear.Sinkhorn(epsilon=0.1, threshold=1e-6)

    @jax.jit
    def run(cost):
        state = jax.lax.while_loop(
            lambda s: ~solver.terminate(cost, a, a, s)[0],
            lambda s: solver.step(cost, a, a, s),
            solver.init(cost, a, a),
        )
        return solver.solution(cost, a, a, state)

    sol = run(cost)  # sol.plan matches js.nonlinear.sinkhorn(cost, a, a, 0.1, threshold=1e-6)
    ```

    Reference: Cuturi, "Sinkhorn distances", NeurIPS 2013; Peyré & Cuturi, *Computational
    Optimal Transport*, 2019, §4.4 (log domain).
    """

    epsilon: Array = hyperparameter()
    threshold: Array = hyperparameter(1e-3)
    check_every: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        check_positive("epsilon", self.epsilon)
        check_positive("threshold", self.threshold)
        every = self.check_every
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"`check_every` must be a positive int, got {every!r}")

    def init(self, cost: Float[Array, "n m"], a: Float[Array, " n"], b: Float[Array, " m"]):
        n, m = jnp.shape(cost)
        dtype = jnp.result_type(cost)
        zeros = lambda size: jnp.zeros((size,), dtype)
        return SinkhornState(zeros(n), zeros(m), jnp.asarray(jnp.inf, dtype), jnp.array(0))

    def step(self, cost, a, b, state: SinkhornState) -> SinkhornState:
        # Sweep on potentials in units of epsilon against the pre-scaled cost: one division of
        # the (n, m) matrix per step instead of two per sweep.
        log_a, log_b = jnp.log(a), jnp.log(b)
        scaled_cost = cost / self.epsilon

        def sweep(fg):
            f, g = fg
            lse_rows = logsumexp(g[None, :] - scaled_cost, axis=1)
            f = log_a - lse_rows
            g = log_b - logsumexp(f[:, None] - scaled_cost, axis=0)
            return (f, g), lse_rows

        fg = lax.fori_loop(0, self.check_every - 1, lambda _, fg: sweep(fg)[0], (state.f, state.g))
        f_old = fg[0]
        # The last sweep's row log-sum-exp gives the row marginals of the plan before it:
        # sum_j P_ij = exp(f_i + lse_i). The error check costs no extra pass.
        (f, g), lse_rows = sweep(fg)
        error = jnp.sum(jnp.abs(jnp.exp(f_old + lse_rows) - a))
        return SinkhornState(f, g, error, state.num_sweeps + self.check_every)

    def terminate(self, cost, a, b, state: SinkhornState):
        error = state.marginal_error
        # NaN fails every comparison: stop on it rather than sweep on to the step cap.
        nan = jnp.isnan(error)
        done = (error <= self.threshold) | nan
        return done, RESULTS.where(nan, RESULTS.nonfinite, RESULTS.successful)

    def extract(self, cost, a, b, state: SinkhornState):
        """The potentials `(f, g)` in the units of the cost, gauge `<a, f> = <b, g>`."""
        return _gauge_shift(self.epsilon * state.f, self.epsilon * state.g, a, b)

    def solution(self, cost, a, b, state: SinkhornState) -> SinkhornSolution:
        """The `SinkhornSolution` at `state` (as `sinkhorn` builds it, without its adjoint)."""
        f, g = self.extract(cost, a, b, state)
        return _solution(self, cost, a, b, f, g, state.marginal_error, state.num_sweeps)


def _solution(solver, cost, a, b, f, g, error, num_sweeps) -> SinkhornSolution:
    epsilon = solver.epsilon
    plan = jnp.exp((f[:, None] + g[None, :] - cost) / epsilon)
    finite = jnp.all(jnp.isfinite(f)) & jnp.all(jnp.isfinite(g))
    result = RESULTS.where(error <= solver.threshold, RESULTS.successful, RESULTS.max_steps_reached)
    result = RESULTS.where(finite, result, RESULTS.nonfinite)
    return SinkhornSolution(
        plan=plan,
        f=f,
        g=g,
        reg_ot_cost=_dual_value(f, g, cost, a, b, epsilon),
        transport_cost=jnp.sum(plan * cost),
        result=result,
        stats={"num_steps": num_sweeps, "marginal_error": error},
    )


def _check_problem(cost, a, b):
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
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x, y = jax.random.normal(k1, (16, 2)), jax.random.normal(k2, (16, 2))
    cost_fn = lambda x, y: jnp.sum((x[:, None] - y[None]) ** 2, -1)
    a = b = jnp.full(16, 1 / 16)
    cost, grad_x = jax.value_and_grad(  # the envelope theorem: no linear solve
        lambda x: js.nonlinear.sinkhorn(cost_fn(x, y), a, b, 0.5).reg_ot_cost
    )(x)
    print(cost, grad_x.shape)
    ```

    References: Cuturi, "Sinkhorn distances", NeurIPS 2013; Peyré & Cuturi, *Computational
    Optimal Transport*, 2019, §4.4 (log domain); Blondel et al., "Efficient and Modular
    Implicit Differentiation", NeurIPS 2022 (implicit gradients); Luise et al., "Differential
    properties of Sinkhorn approximation", NeurIPS 2018.
    """
    _check_problem(cost, a, b)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}")
    if adjoint is not None and not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(f"`adjoint` must be an AbstractAdjoint, got {type(adjoint).__name__}")
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    dtype = jnp.result_type(cost)
    cost, a, b = (jnp.asarray(x, dtype) for x in (cost, a, b))
    # `epsilon` and `threshold` are used as arrays of the problem's dtype: pass them as JAX
    # arrays to a jitted caller and a new value reuses the compilation. A traced value cannot
    # be checked eagerly (the solver's own check skips it), so it is checked at run time.
    solver = Sinkhorn(jnp.asarray(epsilon, dtype), jnp.asarray(threshold, dtype), check_every)
    for name in ("epsilon", "threshold"):
        value = getattr(solver, name)
        if not is_concrete(value):
            cost = eqx.error_if(
                cost, ~(value > 0) | ~jnp.isfinite(value), f"`{name}` must be finite and > 0"
            )
    num_blocks = -(-max_steps // check_every)

    def primal(potentials, args):
        # `potentials` is the zero initial guess; the solver starts from zero itself.
        cost, a, b, epsilon = args
        # Rebuilt from the traced `epsilon`, so unrolling adjoints differentiate through it.
        inner = eqx.tree_at(lambda s: s.epsilon, solver, epsilon)
        out = bounded_while_loop(
            lambda state: ~inner.terminate(cost, a, b, state)[0],
            lambda state: inner.step(cost, a, b, state),
            inner.init(cost, a, b),
            max_steps=num_blocks,
            kind=adjoint.loop_kind,
        )
        state = out.value
        return inner.extract(cost, a, b, state), (state.marginal_error, state.num_sweeps)

    def optimality(potentials, args):
        return _optimality(potentials, *args)

    n, m = jnp.shape(cost)
    zeros = (jnp.zeros((n,), dtype), jnp.zeros((m,), dtype))
    (f, g), (error, num_sweeps) = adjoint.apply(
        primal, optimality, zeros, (cost, a, b, solver.epsilon), throw=throw
    )
    solution = _solution(solver, cost, a, b, f, g, error, num_sweeps)
    return check_result(
        solution, result=solution.result, throw=throw, where="jaxsolve.nonlinear.sinkhorn"
    )
