"""Sinkhorn 512 x 512, eps = 0.05, vs ott-jax: same cost, marginals, threshold, dtype, one process.

Times the solve alone and the solve plus the gradient of the regularised OT cost with respect
to the cost matrix (both libraries use the envelope theorem for this gradient: it is the plan).
Also prints the minimum over interleaved calls, robust to the load of a shared machine.

Run: `python -m benchmarks.sinkhorn` (from the repository root).
"""

import jax
import jax.numpy as jnp

import jaxsolve as js

from ._harness import measure, print_table
from .nonlinear import interleaved_minimum

N = 512
EPSILON = 0.05
THRESHOLD = 1e-3


def problem(dtype=jnp.float32):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.uniform(k1, (N, 2), dtype)
    y = jax.random.uniform(k2, (N, 2), dtype)
    cost = jnp.sum((x[:, None] - y[None]) ** 2, -1)
    a = jnp.full((N,), 1.0 / N, dtype)
    return cost, a, a


def main():
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn as ott_sinkhorn

    cost, a, b = problem()

    def ours_cost(cost):
        sol = js.nonlinear.sinkhorn(cost, a, b, EPSILON, threshold=THRESHOLD, check_every=10)
        return sol.reg_ot_cost, sol

    def ott_solve(cost):
        geom = geometry.Geometry(cost_matrix=cost, epsilon=EPSILON)
        solver = ott_sinkhorn.Sinkhorn(threshold=THRESHOLD, inner_iterations=10)
        return solver(linear_problem.LinearProblem(geom, a, b))

    ours = jax.jit(lambda c: ours_cost(c)[1].plan)
    theirs = jax.jit(lambda c: ott_solve(c).matrix)
    ours_grad = jax.jit(jax.grad(lambda c: ours_cost(c)[0]))
    theirs_grad = jax.jit(jax.grad(lambda c: ott_solve(c).reg_ot_cost))

    sol = jax.jit(lambda c: ours_cost(c)[1])(cost)
    out = jax.jit(ott_solve)(cost)
    plan_diff = float(jnp.max(jnp.abs(sol.plan - out.matrix)))
    value_diff = float(jnp.abs(sol.reg_ot_cost - out.reg_ot_cost))
    iterations = int(sol.stats["num_steps"])
    ott_iterations = int(jnp.sum(out.errors > -1) * 10)

    timings = [
        measure("jaxsolve sinkhorn (solve)", ours, cost, note=f"{iterations} sweeps"),
        measure("ott-jax Sinkhorn (solve)", theirs, cost, note=f"~{ott_iterations} sweeps"),
        measure("jaxsolve sinkhorn (solve + grad C)", ours_grad, cost, note="envelope theorem"),
        measure("ott-jax Sinkhorn (solve + grad C)", theirs_grad, cost, note="envelope theorem"),
    ]
    grad_diff = float(jnp.max(jnp.abs(ours_grad(cost) - theirs_grad(cost))))
    timings[0].note += f"; max|P - P_ott| {plan_diff:.1e}, |cost diff| {value_diff:.1e}"
    timings[2].note += f"; max|grad - grad_ott| {grad_diff:.1e}"
    rows = print_table(
        f"Sinkhorn {N}x{N}, eps={EPSILON}, threshold {THRESHOLD}, float32 (solve)",
        timings[:2],
        "ott-jax Sinkhorn (solve)",
    )
    rows += print_table(
        f"Sinkhorn {N}x{N}, eps={EPSILON}, float32 (solve + gradient w.r.t. cost)",
        timings[2:],
        "ott-jax Sinkhorn (solve + grad C)",
    )
    interleaved_minimum("Sinkhorn solve", [("jaxsolve", ours), ("ott-jax", theirs)], cost)
    interleaved_minimum(
        "Sinkhorn solve + grad C", [("jaxsolve", ours_grad), ("ott-jax", theirs_grad)], cost
    )
    return rows


if __name__ == "__main__":
    main()
