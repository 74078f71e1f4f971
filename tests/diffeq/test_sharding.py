"""Brownian paths, SDE and ODE batches and a data-parallel training step on 8 simulated devices.

Runs in a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=8` (the device count
is fixed when JAX starts). Each sharded computation is compared with the same computation on
unsharded inputs (bitwise for Brownian increments and fixed-step solves: every path is computed
by the same code on one device), its output sharding is asserted, and XLA's "involuntary full
rematerialization" warning (a sharded array gathered onto one device) fails the test.
"""

import textwrap

from tests.helpers import run_on_8_devices

_SCRIPT = textwrap.dedent(
    """
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jaxsolve as js

    jax.config.update("jax_enable_x64", True)
    assert len(jax.devices()) == 8
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    batch, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())

    def same(ours, reference, exact=False, tol=1e-10):
        leaves = lambda t: jax.tree.leaves(eqx.filter(t, eqx.is_array))
        for x, y in zip(leaves(ours), leaves(reference), strict=True):
            if exact:
                assert np.array_equal(np.asarray(x), np.asarray(y))
            else:
                np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)

    B = 64
    keys = jax.random.split(jax.random.key(0), B)
    y0 = 1.0 + 0.1 * jax.random.normal(jax.random.key(1), (B, 3))
    keys_s, y0_s = jax.device_put(keys, batch), jax.device_put(y0, batch)

    # 1. One tree per path (its key), space-time Levy area on a grid: bitwise, stays sharded.
    def increments(key):
        bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-3, (3,), key, levy_area="space-time")
        return bm.increments(jnp.linspace(0.0, 1.0, 17))
    run = jax.jit(jax.vmap(increments))
    ours = run(keys_s)
    same(ours, run(keys), exact=True)
    assert ours.W.sharding.is_equivalent_to(batch, 3) and ours.H.sharding.is_equivalent_to(batch, 3)

    # 2. Euler-Maruyama, geometric Brownian motion, fixed steps, default throw=True and a
    # progress meter: bitwise, stays sharded.
    def em(key, y0):
        bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-3, (3,), key)
        term = js.diffeq.SDETerm(lambda t, y, a: -y, lambda t, y, a: 0.5 * y, bm)
        return js.diffeq.solve(term, js.diffeq.EulerMaruyama(), 0.0, 1.0, y0, dt0=0.01,
                               progress=True).ys
    run = jax.jit(jax.vmap(em))
    ours = run(keys_s, y0_s)
    same(ours, run(keys, y0), exact=True)
    assert ours.sharding.is_equivalent_to(batch, 3), ours.sharding

    # 3. Adaptive ShARK + PID per path (each lane its own step sequence).
    def shark(key, y0):
        bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-4, (3,), key, levy_area="space-time")
        term = js.diffeq.SDETerm(lambda t, y, a: jnp.sin(y), lambda t, y, a: 0.5 * jnp.ones_like(y),
                                 bm, noise="additive")
        controller = js.diffeq.PIDController(rtol=1e-3, atol=1e-3)
        sol = js.diffeq.solve(term, js.diffeq.ShARK(), 0.0, 1.0, y0, dt0=0.05,
                              controller=controller)
        return sol.ys, sol.stats["num_steps"]
    run = jax.jit(jax.vmap(shark))
    ours = run(keys_s, y0_s)
    same(ours, run(keys, y0))
    assert ours[0].sharding.is_equivalent_to(batch, 3), ours[0].sharding
    assert len(set(np.asarray(ours[1]).tolist())) > 1  # the lanes took different step counts

    # 4. A data-parallel training step through an adaptive neural ODE: the model (an equinox
    # module) in `args`, the batch sharded, the parameters replicated; same loss, gradient and
    # updated parameters as on one device.
    class Field(eqx.Module):
        mlp: eqx.nn.MLP
        def __call__(self, t, y, args):
            return self.mlp(y)
    model = Field(eqx.nn.MLP(3, 3, 16, 2, activation=jnp.tanh, key=jax.random.key(2)))
    term = js.diffeq.ODETerm(lambda t, y, field: field(t, y, None))
    def loss(field, y0):
        def one(y):
            return js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, y, args=field, dt0=0.1,
                                   controller=js.diffeq.PIDController(rtol=1e-6, atol=1e-6)).ys[-1]
        return jnp.mean((jax.vmap(one)(y0) - 1.0) ** 2)
    optimiser = optax.adam(1e-2)
    @eqx.filter_jit
    def train_step(field, opt_state, y0):
        value, grads = eqx.filter_value_and_grad(loss)(field, y0)
        updates, opt_state = optimiser.update(grads, opt_state, field)
        return eqx.apply_updates(field, updates), opt_state, value, grads
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))
    ours = train_step(model, opt_state, y0_s)
    same(ours, train_step(model, opt_state, y0))
    assert all(leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
               for leaf in jax.tree.leaves(eqx.filter(ours[0], eqx.is_array)))
    assert np.all(np.isfinite(np.asarray(jax.tree.leaves(eqx.filter(ours[3], eqx.is_array))[0])))
    print("OK")
    """
)


def test_sde_ode_and_training_batches_stay_sharded():
    run_on_8_devices(_SCRIPT, timeout=400)
