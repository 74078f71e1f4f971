"""Batches of linear and nonlinear solves sharded over 8 simulated devices (`vmap` over the
systems): equal to the unsharded solves, outputs still sharded, no gather onto one device.

Runs in a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=8`; XLA's
"involuntary full rematerialization" warning fails the test (see `tests.helpers`).
"""

import textwrap

from tests.helpers import run_on_8_devices

_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jaxsolve as js

    jax.config.update("jax_enable_x64", True)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    batch = NamedSharding(mesh, P("batch"))
    B, n = 64, 8
    M = jax.random.normal(jax.random.key(0), (B, n, n))
    A = M @ jnp.swapaxes(M, 1, 2) + n * jnp.eye(n)          # a batch of SPD systems
    b = jax.random.normal(jax.random.key(1), (B, n))
    A_s, b_s = jax.device_put(A, batch), jax.device_put(b, batch)

    def check(run, *args):
        sharded = run(*(jax.device_put(x, batch) for x in args))
        reference = run(*args)
        for x, y in zip(jax.tree.leaves(sharded), jax.tree.leaves(reference), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-10, atol=1e-12)
            assert x.sharding.is_equivalent_to(batch, x.ndim), x.sharding
        return sharded

    # Linear solves, dense and matrix-free, with the default throw=True (its check must not
    # gather the batch), and a vmapped gradient through CG (implicit adjoint).
    for solver in (js.linear.LU(), js.linear.CG(rtol=1e-10, atol=1e-12),
                   js.linear.GMRES(rtol=1e-10, atol=1e-12)):
        run = jax.jit(jax.vmap(lambda A, b: js.linear.solve(A, b, solver).value))
        x = check(run, A, b)
        np.testing.assert_allclose(np.asarray(jnp.einsum("bij,bj->bi", A, x)), np.asarray(b),
                                   atol=1e-8)
    matvec = lambda A: (lambda v: A @ v)
    grad = jax.jit(jax.vmap(jax.grad(
        lambda A, b: jnp.sum(js.linear.solve(matvec(A), b, js.linear.CG(rtol=1e-12, atol=1e-12)
                                             ).value ** 2), argnums=(0, 1))))
    check(grad, A, b)

    # Nonlinear: a batch of root finds (Newton) and of minimisations (L-BFGS).
    c = jax.random.normal(jax.random.key(2), (B, 4))
    root = jax.jit(jax.vmap(lambda c: js.nonlinear.root_find(
        lambda y, c: y ** 3 + y - c, js.nonlinear.Newton(rtol=1e-10, atol=1e-10), jnp.zeros(4), c
    ).value))
    check(root, c)
    minimum = jax.jit(jax.vmap(lambda c: js.nonlinear.minimize(
        lambda y, c: jnp.sum((y - c) ** 2) + jnp.sum(y ** 4),
        js.nonlinear.LBFGS(rtol=1e-10, atol=1e-10), jnp.zeros(4), c).value))
    check(minimum, c)
    # and Sinkhorn on a batch of cost matrices
    cost = jax.random.uniform(jax.random.key(3), (B, 10, 12))
    plan = jax.jit(jax.vmap(lambda C: js.nonlinear.sinkhorn(
        C, jnp.full(10, 0.1), jnp.full(12, 1 / 12), epsilon=0.1).value))
    check(plan, cost)
    print("OK")
    """
)


def test_batched_linear_and_nonlinear_solves_stay_sharded():
    run_on_8_devices(_SCRIPT, timeout=400)
