"""The optimisers on sharded parameters, particles and directions (8 simulated CPU devices).

Runs in a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=8` (the device count
is fixed when JAX starts). Each computation is compared with the same computation on
unsharded inputs and its output sharding is asserted; XLA's "involuntary full
rematerialization" warning (a gather of a sharded array onto one device) must not appear.
"""

import textwrap

from tests.helpers import run_on_8_devices

_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jaxsolve as js

    assert len(jax.devices()) == 8
    mesh = Mesh(np.array(jax.devices()), ("d",))
    rows = NamedSharding(mesh, P("d"))          # a weight matrix sharded by rows
    repl = NamedSharding(mesh, P())

    def close(a, b, tol=1e-5):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)

    # 1. optax-style optimisers: a linear least-squares model with a (64, 16) weight sharded by
    # rows; three jitted steps, sharded vs unsharded parameters, same updates; the parameters
    # keep their sharding.
    key = jax.random.key(0)
    X = jax.random.normal(key, (128, 64))
    # interpolating (f* = 0), as the Polyak-type steps assume
    Y = X @ jax.random.normal(jax.random.key(1), (64, 16)) + 0.5
    params = {"w": 0.1 * jax.random.normal(jax.random.key(2), (64, 16)), "b": jnp.zeros(16)}
    loss = lambda p: jnp.mean((X @ p["w"] + p["b"] - Y) ** 2)
    sharded = {"w": jax.device_put(params["w"], rows), "b": jax.device_put(params["b"], repl)}
    # (SANIA takes one step: its AdaGrad-SQR metric makes the first step -f/(d g_i) per
    # coordinate, far too long on this problem, and a diverging run amplifies rounding)
    for name, tx, needs_value, steps in [
        ("soap", js.optimizers.soap(1e-2, precondition_frequency=1), False, 3),
        ("shampoo", js.optimizers.shampoo(1e-2, precondition_frequency=1), False, 3),
        ("turbo_muon", js.optimizers.turbo_muon(1e-2), False, 3),
        ("polyak_momentum", js.optimizers.polyak_momentum(), True, 3),
        ("sania", js.optimizers.sania(), True, 1),
    ]:
        @jax.jit
        def run(p):
            state = tx.init(p)
            for _ in range(steps):
                value, g = jax.value_and_grad(loss)(p)
                extra = {"value": value} if needs_value else {}
                updates, state = tx.update(g, state, p, **extra)
                p = optax.apply_updates(p, updates)
            return p
        ours, reference = run(sharded), run(params)
        if name == "soap":
            # SOAP's eigenbases are those of nearly degenerate statistics (rank <= 3 after three
            # steps), where float32 eigh/QR on a different partition picks another basis of the
            # same subspaces; the step is the same only up to that choice.
            close(loss(ours), loss(reference), 1e-2)
        else:
            close(ours, reference, 1e-4)
        assert ours["w"].sharding.is_equivalent_to(rows, 2), (name, ours["w"].sharding)
        assert name == "sania" or loss(ours) < loss(params), name

    # 2. estimate_gradient with sharded parameters: equal to the unsharded estimate (same key).
    # A sharded loss sums in another order; a float32 central difference divides that rounding
    # by 2 * smoothing, hence the large smoothing (exact for this quadratic loss anyway).
    for est in (js.optimizers.TwoPoint(num_directions=4, smoothing=0.1),
                js.optimizers.ForwardGradient(num_directions=4)):
        f = jax.jit(lambda p, k: js.optimizers.estimate_gradient(loss, est, p, k))
        (v1, g1), (v2, g2) = f(sharded, key), f(params, key)
        close(v1, v2), close(g1, g2, 1e-3)
        assert g1["w"].sharding.is_equivalent_to(rows, 2), g1["w"].sharding

    # 3. CBO with the particles sharded across devices: the same consensus point (after 10
    # steps: the strong noise makes the swarm chaotic, amplifying the reduction order's rounding).
    rastrigin = lambda x: 10 * x.size + jnp.sum((x - 1) ** 2 - 10 * jnp.cos(2 * jnp.pi * (x - 1)))
    particles = jax.random.uniform(jax.random.key(3), (256, 4), minval=-3.0, maxval=3.0)
    solve = jax.jit(lambda x: js.optimizers.cbo_minimize(
        rastrigin, x, jax.random.key(4), alpha=3.0, sigma=5.0, dt=0.04, max_steps=10,
        throw=False))
    ours, reference = solve(jax.device_put(particles, rows)), solve(particles)
    close(ours.value, reference.value, 1e-4)
    assert ours.state.particles.sharding.is_equivalent_to(rows, 2), ours.state.particles.sharding
    print("OK")
    """
)


def test_optimizers_on_sharded_inputs_match_unsharded():
    run_on_8_devices(_SCRIPT)
