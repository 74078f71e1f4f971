"""Batched gradients through adaptive ODE solves and a neural-ODE training step, written the
way users write them (issue 8, bugs 1, 3 and 6).

- `vmap` over lanes that take different numbers of adaptive steps must give the gradient of a
  Python loop over the lanes (it gave NaN: a finished lane's frozen steps leaked 0/0 into the
  cotangent) and the analytic value.
- An equinox MLP vector field passed in `args`, trained with `eqx.filter_jit`,
  `eqx.filter_value_and_grad` and optax adam: gradient = loop over lanes, = central finite
  differences along a direction, finite, loss decreasing, no retrace after the first step.
- New float values of `dt0`, `t1`, `args` and of `PIDController(rtol=...)` do not recompile.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxsolve as js
from tests.helpers import neural_vector_field, spiral_data

d = js.diffeq
F64 = jnp.float64
RATES = np.array([0.1, 1.0, 10.0])


def _decay(t, y, rate):
    return -rate * y


def _decay_lane(scale, rate):
    sol = d.solve(
        d.ODETerm(_decay),
        d.Tsit5(),
        0.0,
        1.0,
        jnp.ones(1, F64),
        args=scale * rate,
        dt0=0.1,
        controller=d.PIDController(rtol=1e-5, atol=1e-7),
    )
    return jnp.sum(sol.ys), sol.stats["num_steps"]


def test_vmap_gradient_with_lanes_of_different_step_counts():
    # The user program of the issue: d/ds sum_k exp(-s k) at s = 1 is -sum_k k exp(-k).
    rates = jnp.asarray(RATES, F64)
    steps = jax.vmap(lambda k: _decay_lane(jnp.asarray(1.0, F64), k)[1])(rates)
    assert len(set(np.asarray(steps).tolist())) == 3, steps  # the lanes really differ

    def batched(scale):
        return jnp.sum(jax.vmap(lambda k: _decay_lane(scale, k)[0])(rates))

    grad_batched = float(jax.grad(batched)(jnp.asarray(1.0, F64)))
    lane_grad = jax.jit(jax.grad(lambda s, k: _decay_lane(s, k)[0]))
    grad_loop = sum(float(lane_grad(jnp.asarray(1.0, F64), k)) for k in rates)
    exact = float(-np.sum(RATES * np.exp(-RATES)))
    assert np.isfinite(grad_batched), grad_batched
    assert abs(grad_batched - grad_loop) <= 1e-10 * abs(exact), (grad_batched, grad_loop)
    assert abs(grad_batched - exact) <= 1e-4 * abs(exact), (grad_batched, exact)

    # Per-lane gradients (wrt each lane's own rate): d/dk exp(-k) = -exp(-k), under jit too.
    per_lane = jax.jit(
        jax.grad(lambda ks: jnp.sum(jax.vmap(lambda k: _decay_lane(1.0, k)[0])(ks)))
    )(rates)
    np.testing.assert_allclose(np.asarray(per_lane), -np.exp(-RATES), rtol=1e-4)


def test_vmap_gradient_of_adaptive_sde_matches_loop_over_lanes():
    # The SDE version: additive-noise OU lanes with different mean-reversion rates on one fixed
    # Brownian path each (keys per lane), ShARK + PID. Finished lanes must not poison the rest.
    keys = jax.random.split(jax.random.key(3), 3)
    rates = jnp.asarray(RATES, F64)

    def lane(scale, rate, key):
        bm = js.brownian.VirtualBrownianTree(
            0.0, 1.0, 2.0**-10, (1,), key, levy_area="space-time", dtype=F64
        )
        term = d.SDETerm(
            lambda t, y, a: -a * y, lambda t, y, a: jnp.full_like(y, 0.3), bm, noise="additive"
        )
        sol = d.solve(term, d.ShARK(), 0.0, 1.0, jnp.ones(1, F64), dt0=0.05, args=scale * rate,
                      controller=d.PIDController(rtol=1e-3, atol=1e-3), max_steps=512)  # fmt: skip
        return jnp.sum(sol.ys**2), sol.stats["num_steps"]

    one = jnp.asarray(1.0, F64)
    steps = jax.vmap(lambda k, key: lane(one, k, key)[1])(rates, keys)
    assert len(set(np.asarray(steps).tolist())) > 1, steps

    batched = jax.jit(
        jax.grad(lambda s: jnp.sum(jax.vmap(lambda k, key: lane(s, k, key)[0])(rates, keys)))
    )(one)
    lane_grad = jax.jit(jax.grad(lambda s, k, key: lane(s, k, key)[0]))
    loop = sum(float(lane_grad(one, rates[i], keys[i])) for i in range(3))
    assert np.isfinite(float(batched)), batched
    assert abs(float(batched) - loop) <= 1e-8 * max(1.0, abs(loop)), (float(batched), loop)


# ---------------------------------------------------------------------------------------------
# A neural-ODE training step, as a user writes it
# ---------------------------------------------------------------------------------------------

BATCH, NUM_TIMES = 16, 40


def _loss(model, ts, y0s, targets, rtol, atol):
    def one(y0):
        sol = d.solve(
            d.ODETerm(lambda t, y, mlp: mlp(y)),
            d.Tsit5(),
            ts[0],
            ts[-1],
            y0,
            dt0=0.05,
            args=model,
            saveat=d.SaveAt(ts=ts),
            controller=d.PIDController(rtol=rtol, atol=atol),
        )
        return sol.ys

    ys = jax.vmap(one)(y0s)
    return jnp.mean((ys - targets) ** 2)


def test_args_may_hold_an_equinox_module():
    model = neural_vector_field(jax.random.key(0), F64)
    y0 = jnp.asarray([0.5, -0.3], F64)
    sol = d.solve(d.ODETerm(lambda t, y, mlp: mlp(y)), d.Tsit5(), 0.0, 1.0, y0, dt0=0.05,
                  args=model, controller=d.PIDController(rtol=1e-8, atol=1e-10))  # fmt: skip
    # The same field closed over rather than passed in args: the same numbers.
    closed = d.solve(d.ODETerm(lambda t, y, a: model(y)), d.Tsit5(), 0.0, 1.0, y0, dt0=0.05,
                     controller=d.PIDController(rtol=1e-8, atol=1e-10))  # fmt: skip
    np.testing.assert_allclose(np.asarray(sol.ys), np.asarray(closed.ys), rtol=1e-12)
    assert sol.result == js.RESULTS.successful
    # ... and under eqx.filter_jit with the module as an argument.
    run = eqx.filter_jit(
        lambda m, y: (
            d.solve(
                d.ODETerm(lambda t, y, mlp: mlp(y)),
                d.Tsit5(),
                0.0,
                1.0,
                y,
                dt0=0.05,
                args=m,
                controller=d.PIDController(rtol=1e-8, atol=1e-10),
            ).ys
        )  # fmt: skip
    )
    np.testing.assert_allclose(np.asarray(run(model, y0)), np.asarray(closed.ys), rtol=1e-12)


def test_neural_ode_gradient_equals_loop_and_finite_differences():
    model = neural_vector_field(jax.random.key(0), F64)
    ts, y0s, targets = spiral_data(BATCH, NUM_TIMES, seed=0, dtype=F64)
    rtol, atol = 1e-6, 1e-8
    loss_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(_loss))
    value, grads = loss_and_grad(model, ts, y0s, targets, rtol, atol)
    grad_leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grad_leaves)

    # A Python loop over the lanes, each lane's gradient summed (the loss is a mean over lanes).
    lane_grad = eqx.filter_jit(eqx.filter_grad(_loss))
    total = None
    for i in range(BATCH):
        g = lane_grad(model, ts, y0s[i : i + 1], targets[i : i + 1], rtol, atol)
        g = jax.tree.map(lambda x: x / BATCH, eqx.filter(g, eqx.is_array))
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    for a, b in zip(grad_leaves, jax.tree.leaves(total), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-12)

    # Central finite differences along a random direction of parameter space: the step sizes
    # are treated as constants by the gradient, so use tight tolerances for the comparison.
    params, static = eqx.partition(model, eqx.is_array)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    direction = jax.tree.unflatten(
        treedef, [jax.random.normal(k, x.shape, F64) for k, x in zip(keys, leaves, strict=True)]
    )
    loss_at = eqx.filter_jit(
        lambda eps: _loss(
            eqx.combine(jax.tree.map(lambda p, v: p + eps * v, params, direction), static),
            ts,
            y0s,
            targets,
            rtol,
            atol,
        )  # fmt: skip
    )
    eps = 1e-4
    fd = (float(loss_at(jnp.asarray(eps, F64))) - float(loss_at(jnp.asarray(-eps, F64)))) / (
        2 * eps
    )
    directional = sum(
        float(jnp.vdot(g, v)) for g, v in zip(grad_leaves, jax.tree.leaves(direction), strict=True)
    )
    assert abs(directional - fd) <= 1e-4 * abs(fd) + 1e-9, (directional, fd)
    assert abs(float(value) - float(loss_at(jnp.asarray(0.0, F64)))) <= 1e-12 * float(value)


def test_neural_ode_training_step_decreases_loss_without_retracing():
    model = neural_vector_field(jax.random.key(2), F64)
    ts, y0s, targets = spiral_data(BATCH, NUM_TIMES, seed=1, dtype=F64)
    optimiser = optax.adam(1e-2)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def train_step(model, opt_state, y0s, targets):
        loss, grads = eqx.filter_value_and_grad(_loss)(model, ts, y0s, targets, 1e-3, 1e-6)
        # optax mixes its int32 step count with Python floats: not our strictness to impose.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    losses = []
    for _ in range(5):
        model, opt_state, loss = train_step(model, opt_state, y0s, targets)
        losses.append(float(loss))
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.9 * losses[0], losses


# ---------------------------------------------------------------------------------------------
# No recompilation for new float values
# ---------------------------------------------------------------------------------------------


def test_new_float_values_do_not_recompile():
    compiles = []
    listener = lambda event, duration, **kwargs: compiles.append(event)
    jax.monitoring.register_event_duration_secs_listener(listener)

    def field(t, y, rate):
        return -rate * y

    def run(dt0, t1, rate):
        return d.solve(d.ODETerm(field), d.Tsit5(), 0.0, t1, jnp.ones(2, F64), dt0=dt0,
                       args=rate, controller=d.PIDController(rtol=1e-6, atol=1e-8)).ys[-1]  # fmt: skip

    # Called eagerly: solve's own compiled core must be reused for new Python floats (eager
    # validation traces the vector field abstractly, but nothing is compiled again).
    try:
        first = run(0.1, 1.0, 0.5)
        count = compiles.count("/jax/core/compile/backend_compile_duration")
        second = run(0.05, 2.0, 1.5)
        after = compiles.count("/jax/core/compile/backend_compile_duration")
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert count > 0, "the compile listener saw no compilation at all"
    assert after == count, "a new dt0/t1/args value recompiled solve"
    np.testing.assert_allclose(np.asarray(first), np.exp(-0.5), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(second), np.exp(-3.0), rtol=1e-5)

    # Inside the user's jit.
    user = jax.jit(eqx.debug.assert_max_traces(run, max_traces=1))
    user(0.1, 1.0, 0.5)
    np.testing.assert_allclose(np.asarray(user(0.05, 2.0, 1.5)), np.exp(-3.0), rtol=1e-5)

    # A new PIDController(rtol=...) passed to an eqx.filter_jit function.
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def with_controller(controller):
        return d.solve(d.ODETerm(lambda t, y, a: -y), d.Tsit5(), 0.0, 1.0, jnp.ones(1, F64),
                       dt0=0.1, controller=controller, saveat=d.SaveAt(t1=True))  # fmt: skip

    loose = with_controller(d.PIDController(rtol=1e-3, atol=1e-6))
    tight = with_controller(d.PIDController(rtol=1e-9, atol=1e-11))
    assert int(tight.stats["num_steps"]) > int(loose.stats["num_steps"])
    assert abs(float(tight.ys[-1, 0]) - np.exp(-1.0)) < 1e-8
