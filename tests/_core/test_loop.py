import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve._core import bounded_while_loop, scan_steps


def _heron(a, kind="checkpointed", max_steps=64):
    out = bounded_while_loop(
        lambda x: jnp.abs(x * x - a) > 1e-12 * a,
        lambda x: 0.5 * (x + a / x),
        a,
        max_steps=max_steps,
        kind=kind,
    )
    return out


def _unrolled_heron(a, num_steps):
    x = a
    for _ in range(num_steps):
        x = 0.5 * (x + a / x)
    return x


@pytest.mark.parametrize("kind", ["checkpointed", "recursive", "lax"])
def test_loop_value_and_step_count(kind):
    out = jax.jit(lambda a: _heron(a, kind))(jnp.array(3.0))
    assert np.isclose(float(out.value), np.sqrt(3.0), rtol=1e-14)
    assert not bool(out.max_steps_reached)
    assert 3 <= int(out.num_steps) < 64


@pytest.mark.parametrize("kind", ["checkpointed", "recursive"])
def test_reverse_mode_gradient_equals_unrolled_gradient(kind):
    a = jnp.array(3.0)
    steps = int(_heron(a, kind).num_steps)
    grad_loop = jax.grad(lambda a: _heron(a, kind).value)(a)
    grad_unrolled = jax.grad(lambda a: _unrolled_heron(a, steps))(a)
    assert np.isclose(float(grad_loop), float(grad_unrolled), rtol=1e-12)
    assert np.isclose(float(grad_loop), 0.5 / np.sqrt(3.0), rtol=1e-10)


@pytest.mark.parametrize("kind", ["checkpointed", "recursive"])
def test_gradient_with_small_blocks_and_pytree_carry(kind):
    # carry is a pytree; block_size 3 forces several checkpointed blocks, some partly used
    def run(theta):
        def body(c):
            x, v = c
            return x + 0.1 * v, v * theta

        out = bounded_while_loop(
            lambda c: c[0] < 5.0,
            body,
            (jnp.array(0.0), jnp.array(1.0)),
            max_steps=40,
            block_size=3,
            kind=kind,
        )
        return out.value[0], out.num_steps

    theta = jnp.array(1.05)
    value, steps = run(theta)
    grad = jax.grad(lambda t: run(t)[0])(theta)

    def unrolled(t):
        x, v = jnp.array(0.0), jnp.array(1.0)
        for _ in range(int(steps)):
            x, v = x + 0.1 * v, v * t
        return x

    assert np.isclose(float(value), float(unrolled(theta)))
    assert np.isclose(float(grad), float(jax.grad(unrolled)(theta)), rtol=1e-12)


def test_forward_mode_both_kinds():
    a = jnp.array(2.0)
    for kind in ("checkpointed", "lax"):
        _, tangent = jax.jvp(lambda a: _heron(a, kind).value, (a,), (jnp.array(1.0),))
        assert np.isclose(float(tangent), 0.5 / np.sqrt(2.0), rtol=1e-10)


def test_max_steps_reached_is_reported():
    out = bounded_while_loop(lambda x: x < 1e9, lambda x: x + 1.0, jnp.array(0.0), max_steps=10)
    assert int(out.num_steps) == 10
    assert bool(out.max_steps_reached)
    assert float(out.value) == 10.0


def test_vmap_lanes_stop_independently():
    targets = jnp.array([1.0, 5.0, 20.0])
    out = jax.vmap(
        lambda t: bounded_while_loop(
            lambda x: x < t, lambda x: x + 1.0, jnp.array(0.0), max_steps=8
        )
    )(targets)
    np.testing.assert_array_equal(np.asarray(out.value), [1.0, 5.0, 8.0])
    np.testing.assert_array_equal(np.asarray(out.max_steps_reached), [False, False, True])


def test_vmap_stops_when_the_slowest_lane_stops():
    """Under vmap the loop must not run all max_steps bodies (a batched cond is a select)."""
    calls = []

    def body(x):
        jax.debug.callback(lambda: calls.append(1))
        return x + 1.0

    targets = jnp.array([2.0, 5.0])
    run = jax.jit(
        jax.vmap(
            lambda t: (
                bounded_while_loop(lambda x: x < t, body, jnp.array(0.0), max_steps=1000).value
            )
        )
    )
    np.testing.assert_array_equal(np.asarray(run(targets)), [2.0, 5.0])
    jax.effects_barrier()
    # one (unbatched) callback per executed step: 5 for the slowest lane, not max_steps = 1000
    assert len(calls) == 5
    grads = jax.vmap(jax.grad(lambda a: _heron(a).value))(jnp.array([2.0, 9.0]))
    np.testing.assert_allclose(grads, 0.5 / np.sqrt([2.0, 9.0]), rtol=1e-10)


def test_no_retrace_on_new_values():
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def solve(a):
        return _heron(a).value

    solve(jnp.array(2.0))
    solve(jnp.array(7.0))


def test_bad_max_steps():
    with pytest.raises(ValueError, match="`max_steps` must be a positive Python int"):
        bounded_while_loop(lambda x: x < 1, lambda x: x, 0.0, max_steps=0)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        bounded_while_loop(lambda x: x < 1, lambda x: x, 0.0, max_steps=3, kind="fast")


def test_scan_steps_checkpoint_gradient():
    def f(x, checkpoint):
        final, _ = scan_steps(
            lambda c, _: (jnp.sin(c) + c, None), x, length=5, checkpoint=checkpoint
        )
        return final

    x = jnp.array(0.3)
    assert np.isclose(float(jax.grad(f)(x, True)), float(jax.grad(f)(x, False)))


def test_recursive_kind_under_vmap_with_closed_over_keys_and_integers():
    # Lanes stop after different numbers of steps; the body closes over a batched PRNG key and
    # an integer: gradients equal a Python loop over lanes (and the checkpointed kind).
    keys = jax.random.split(jax.random.key(0), 3)
    targets = jnp.array([2.0, 50.0, 1e4])

    def lane(theta, key, target, kind):
        noise = jax.random.uniform(key, (), minval=1.0, maxval=1.1)
        stride = jnp.asarray(2)

        def body(c):
            x, count = c
            return x * theta * noise + 0.01 * x**2, count + stride

        out = bounded_while_loop(
            lambda c: c[0] < target, body, (jnp.array(1.0), jnp.asarray(0)), max_steps=200,
            kind=kind, block_size=4,
        )  # fmt: skip
        return out.value[0], out.num_steps

    theta = jnp.array(1.3)
    steps = jax.vmap(lambda k, t: lane(theta, k, t, "recursive")[1])(keys, targets)
    assert len(set(np.asarray(steps).tolist())) == 3, steps
    total = lambda th, kind: jnp.sum(jax.vmap(lambda k, t: lane(th, k, t, kind)[0])(keys, targets))
    batched = jax.jit(jax.grad(total), static_argnums=1)(theta, "recursive")
    loop = sum(
        jax.grad(lambda th: lane(th, keys[i], targets[i], "recursive")[0])(theta) for i in range(3)
    )
    reference = jax.grad(total)(theta, "checkpointed")
    assert np.isfinite(float(batched))
    assert np.isclose(float(batched), float(loop), rtol=1e-12)
    assert np.isclose(float(batched), float(reference), rtol=1e-12)


def test_recursive_backward_cost_follows_the_steps_taken():
    # 5 steps with max_steps=10_000: the body runs 5 times forward, 5 to replay the block and 5
    # inside jax.vjp on the backward pass, not once per max_steps slot.
    calls = []

    def body(x):
        jax.debug.callback(lambda: calls.append(1))
        return 0.5 * (x + 3.0 / x)

    def run(a):
        return bounded_while_loop(
            lambda x: jnp.abs(x * x - 3.0) > 1e-12, body, a, max_steps=10_000, kind="recursive"
        ).value

    grad = jax.grad(run)(jnp.array(3.0))
    assert np.isclose(float(grad), float(jax.grad(lambda a: _unrolled_heron_fixed(a, 5))(3.0)))
    assert len(calls) <= 3 * 6, len(calls)


def _unrolled_heron_fixed(x, num_steps):
    for _ in range(num_steps):
        x = 0.5 * (x + 3.0 / x)
    return x


def test_recursive_kind_refuses_forward_mode_clearly():
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda a: _heron(a, "recursive").value, (jnp.array(2.0),), (jnp.array(1.0),))
