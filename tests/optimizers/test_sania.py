"""sania: the preconditioned Polyak step against its formula, scale invariance of AdaGrad-SQR and
Adam-SQR (and its failure for the plain Polyak step), Hutchinson's step on a separable quadratic
(a Newton direction with a Polyak length: the loss falls by exactly 4 per step at any
conditioning), linear convergence on an interpolating least-squares problem, and the contract."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js


def _problem(seed=0, num_samples=40, num_features=6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_samples, num_features))
    y = X @ rng.normal(size=num_features)  # interpolation: f* = 0
    return jnp.asarray(X), jnp.asarray(y)


def _run(tx, loss, w0, num_steps, hutchinson=False):
    """The final parameters and, per step, (loss, grads, updates, state) as a list."""

    def body(carry, _):
        w, state = carry
        value, grads = jax.value_and_grad(loss)(w)
        extra = {"value_fn": loss} if hutchinson else {}
        updates, state = tx.update(grads, state, w, value=value, **extra)
        return (optax.apply_updates(w, updates), state), (value, grads, updates, state)

    (w, _), stacked = jax.jit(
        lambda w0: jax.lax.scan(body, (w0, tx.init(w0)), None, length=num_steps)
    )(w0)
    stacked = jax.tree.map(
        lambda x: x if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else np.asarray(x),
        stacked,
    )
    trace = [jax.tree.map(lambda x, k=k: x[k], stacked) for k in range(num_steps)]
    return w, trace


def _least_squares_loss(X, y):
    return lambda w: 0.5 * jnp.mean((X @ w - y) ** 2)


@pytest.mark.parametrize("preconditioner", ["adagrad_sqr", "adam_sqr"])
def test_step_is_the_preconditioned_polyak_formula(preconditioner):
    X, y = _problem()
    b2, f_star = 0.9, -0.01
    tx = js.optimizers.sania(preconditioner, f_star=f_star, b2=b2)
    _, trace = _run(tx, _least_squares_loss(X, y), jnp.zeros(6), 20)
    b = np.zeros(6)
    for k, (value, grads, updates, state) in enumerate(trace):
        g = np.asarray(grads)
        if preconditioner == "adagrad_sqr":
            b = b + g**2
        else:
            b = g**2 if k == 0 else b2 * b + (1 - b2) * g**2
        direction = g / b
        step = (float(value) - f_star) / float(g @ direction)
        np.testing.assert_allclose(state.learning_rate, step, rtol=1e-10)
        np.testing.assert_allclose(updates, -step * direction, rtol=1e-9)


def test_identity_preconditioner_is_the_uncapped_polyak_step():
    X, y = _problem()
    loss = _least_squares_loss(X, y)
    _, ours = _run(js.optimizers.sania("identity"), loss, jnp.zeros(6), 20)
    _, ref = _run(optax.polyak_sgd(max_learning_rate=jnp.inf), loss, jnp.zeros(6), 20)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a[2], b[2], rtol=1e-12, atol=1e-300)


def _scaled_losses(preconditioner, scales, num_steps=60):
    """Loss trajectories of `sania` on the least-squares problem with features X * scale, one
    per row of `scales` (one compilation: the scale is an argument)."""
    X, y = _problem()
    tx = js.optimizers.sania(preconditioner)

    @jax.jit
    def losses(scale):
        loss = _least_squares_loss(X * scale, y)

        def body(carry, _):
            w, state = carry
            value, grads = jax.value_and_grad(loss)(w)
            updates, state = tx.update(grads, state, w, value=value)
            return (w + updates, state), value

        w0 = jnp.zeros(6)
        return jax.lax.scan(body, (w0, tx.init(w0)), None, length=num_steps)[1]

    return [np.asarray(losses(jnp.asarray(scale))) for scale in scales]


@pytest.mark.parametrize("preconditioner", ["adagrad_sqr", "adam_sqr"])
def test_feature_scaling_gives_the_same_loss_trajectory(preconditioner):
    # w -> D^{-1} w when X -> X D: the preconditioned step is the same change of variables.
    # With D made of powers of two the scaling itself is exact in floating point, so the two
    # trajectories must agree to the last bits all the way down; with any other D they agree
    # up to rounding, which these Polyak iterations amplify after a few dozen steps.
    plain, powers_of_two, general = _scaled_losses(
        preconditioner,
        [np.ones(6), 2.0 ** np.array([-10, -5, 0, 3, 7, 12]), np.logspace(-3, 3, 6)],
    )
    np.testing.assert_allclose(powers_of_two, plain, rtol=1e-12)
    np.testing.assert_allclose(general[:15], plain[:15], rtol=1e-8)
    assert plain[-1] < 1e-5 * plain[0]  # and it converged


def test_the_plain_polyak_step_is_not_scale_invariant():
    # the control: the same test fails without the preconditioner
    plain, powers_of_two = _scaled_losses(
        "identity", [np.ones(6), 2.0 ** np.array([-10, -5, 0, 3, 7, 12])]
    )
    assert powers_of_two[-1] > 1e3 * plain[-1]


@pytest.mark.parametrize("preconditioner, b2", [("adagrad_sqr", 0.999), ("adam_sqr", 0.9)])
def test_linear_convergence_on_interpolating_least_squares(preconditioner, b2):
    # (Adam-SQR with b2 = 0.999 converges linearly too, more slowly: 5.7e-7 of the initial loss
    # after 150 steps, 7.6e-16 after 300, on this problem.)
    X, y = _problem(num_samples=60, num_features=10)
    X = X * jnp.asarray(np.logspace(0, 2, 10))  # badly scaled features
    loss = _least_squares_loss(X, y)
    _, trace = _run(js.optimizers.sania(preconditioner, b2=b2), loss, jnp.zeros(10), 150)
    losses = np.array([float(t[0]) for t in trace])
    assert losses[-1] < 1e-10 * losses[0]
    slope = np.polyfit(np.arange(150), np.log(losses), 1)[0]
    assert slope < -0.1
    print(f"{preconditioner}: log-loss slope {slope:.3f} per step")


def test_hutchinson_is_a_newton_direction_with_a_polyak_length():
    # f = 1/2 sum h_i x_i^2 (f* = 0): z * (H z) = diag(H) exactly for Rademacher z, so
    # B^{-1} g = x, <g, B^{-1} g> = 2 f, the step is 1/2 and f falls by exactly 4 per step,
    # for any conditioning; the plain Polyak step crawls.
    h = jnp.asarray(np.logspace(0, 6, 8))

    def loss(x):
        return 0.5 * jnp.sum(h * x**2)

    x0 = jnp.ones(8)
    tx = js.optimizers.sania("hutchinson", b2=0.9, key=jax.random.key(0))
    _, trace = _run(tx, loss, x0, 10, hutchinson=True)
    losses = np.array([float(t[0]) for t in trace])
    np.testing.assert_allclose(losses[1:] / losses[:-1], 0.25, rtol=1e-10)
    np.testing.assert_allclose([float(t[3].learning_rate) for t in trace], 0.5, rtol=1e-10)
    _, plain = _run(js.optimizers.sania("identity"), loss, x0, 10)
    assert float(plain[-1][0]) > 1e3 * losses[-1]


def test_hutchinson_on_least_squares_converges():
    X, y = _problem()
    loss = _least_squares_loss(X, y)
    tx = js.optimizers.sania("hutchinson", b2=0.99, key=jax.random.key(1))
    _, trace = _run(tx, loss, jnp.zeros(6), 100, hutchinson=True)
    assert float(trace[-1][0]) < 1e-8 * float(trace[0][0])


def test_pytree_params_jit_vmap_and_no_recompile():
    X, y = _problem()
    params = {"a": jnp.zeros(2), "b": jnp.zeros(4)}

    def loss(p):
        return 0.5 * jnp.mean((X @ jnp.concatenate([p["a"], p["b"]]) - y) ** 2)

    def train(b2):
        tx = js.optimizers.sania("adam_sqr", b2=b2)

        def body(carry, _):
            p, state = carry
            value, grads = jax.value_and_grad(loss)(p)
            updates, state = tx.update(grads, state, p, value=value)
            return (optax.apply_updates(p, updates), state), value

        # 12 steps: these iterations amplify rounding (vmap reorders reductions) later on
        return jax.lax.scan(body, (params, tx.init(params)), None, length=12)[1]

    b2s = jnp.array([0.5, 0.9, 0.999])
    batched, unbatched = jax.jit(jax.vmap(train))(b2s), jax.jit(train)
    for i, b2 in enumerate(b2s):
        np.testing.assert_allclose(batched[i], unbatched(b2), rtol=1e-8)
    assert not np.allclose(batched[0], batched[2])  # b2 reached each lane

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(tx, p, state):
        value, grads = jax.value_and_grad(loss)(p)
        return tx.update(grads, state, p, value=value)

    for b2, f_star, scaling in ((0.9, 0.0, 1.0), (0.5, -0.1, 0.5)):
        tx = js.optimizers.sania("adam_sqr", f_star=f_star, b2=b2, scaling=scaling)
        step(tx, params, tx.init(params))


@pytest.mark.float32
def test_float32():
    X = jax.random.normal(jax.random.key(0), (30, 6), jnp.float32)
    y = X @ jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32)
    loss = _least_squares_loss(X, y)
    for preconditioner in ("adam_sqr",):  # the heavier dtype path (one compile: CI time)
        w, trace = _run(
            js.optimizers.sania(preconditioner, b2=0.9), loss, jnp.zeros(6, jnp.float32), 60
        )
        assert w.dtype == jnp.float32 and trace[-1][3].learning_rate.dtype == jnp.float32
        assert loss(w) < 1e-6 * loss(jnp.zeros(6, jnp.float32))


def test_bad_input():
    with pytest.raises(ValueError, match="preconditioner"):
        js.optimizers.sania("shampoo")
    with pytest.raises(ValueError, match="b2"):
        js.optimizers.sania("adam_sqr", b2=1.5)
    with pytest.raises(ValueError, match="eps"):
        js.optimizers.sania(eps=-1.0)
    with pytest.raises(ValueError, match="key"):
        js.optimizers.sania("hutchinson")
    tx = js.optimizers.sania()
    with pytest.raises(TypeError, match="value=loss"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), jnp.zeros(2))
    tx = js.optimizers.sania("hutchinson", key=jax.random.key(0))
    with pytest.raises(TypeError, match="value_fn"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), jnp.zeros(2), value=1.0)
