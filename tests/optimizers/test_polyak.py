"""polyak_momentum: the generalised Polyak step (ALR-SMAG / ALR-HB) against its formula, its
reduction to optax.polyak_sgd, the linear rate of the Polyak step on an interpolating least
squares problem, and the usual contract (jit, vmap, pytrees, float32, no recompiles, errors)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js


def _least_squares(seed=0, num_samples=40, num_features=8, spread=1.0):
    """An interpolating least-squares problem (f* = 0, strongly convex as n > d) with its
    smoothness L and strong convexity mu."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_samples, num_features)) * np.logspace(0, spread, num_features)
    w_true = rng.normal(size=num_features)
    y = X @ w_true
    eigenvalues = np.linalg.eigvalsh(X.T @ X / num_samples)
    X, y = jnp.asarray(X), jnp.asarray(y)

    def loss(w):
        return 0.5 * jnp.mean((X @ w - y) ** 2)

    return loss, jnp.asarray(w_true), float(eigenvalues[-1]), float(eigenvalues[0])


def _run(tx, loss, w0, num_steps):
    """The final parameters and, per step, (params, loss, grads, updates, state) as a list."""

    def body(carry, _):
        w, state = carry
        value, grads = jax.value_and_grad(loss)(w)
        updates, state = tx.update(grads, state, w, value=value)
        return (optax.apply_updates(w, updates), state), (w, value, grads, updates, state)

    (w, _), stacked = jax.jit(
        lambda w0: jax.lax.scan(body, (w0, tx.init(w0)), None, length=num_steps)
    )(w0)
    stacked = jax.tree.map(np.asarray, stacked)
    trace = [jax.tree.map(lambda x, k=k: x[k], stacked) for k in range(num_steps)]
    return w, trace


@pytest.mark.parametrize("variant", ["smag", "hb"])
def test_momentum_zero_is_optax_polyak_sgd_bit_for_bit(variant):
    loss, _, _, _ = _least_squares(spread=0.5)
    params = {"a": jnp.zeros(3), "b": jnp.zeros(5)}

    def tree_loss(p):
        return loss(jnp.concatenate([p["a"], p["b"]]))

    ours = js.optimizers.polyak_momentum(
        f_star=0.1, momentum=0.0, max_learning_rate=0.7, variant=variant
    )
    reference = optax.polyak_sgd(max_learning_rate=0.7, f_min=0.1)

    @jax.jit
    def step(p_ours, s_ours, p_ref, s_ref):
        value, grads = jax.value_and_grad(tree_loss)(p_ours)
        u_ours, s_ours = ours.update(grads, s_ours, p_ours, value=value)
        value_ref, grads_ref = jax.value_and_grad(tree_loss)(p_ref)
        u_ref, s_ref = reference.update(grads_ref, s_ref, p_ref, value=value_ref)
        p_ours, p_ref = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_ref, u_ref)
        return p_ours, s_ours, p_ref, s_ref

    carry = (params, ours.init(params), params, reference.init(params))
    for _ in range(30):
        carry = step(*carry)
        for a, b in zip(jax.tree.leaves(carry[0]), jax.tree.leaves(carry[2])):
            if variant == "smag":  # the same operations: bit for bit
                np.testing.assert_array_equal(a, b)
            else:  # -a g + 0 u: XLA may fuse it differently, equal to the last bit or so
                np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-16)
    # and it optimised: with f_star = 0.1 > min f the Polyak step stops on the level set f = 0.1
    assert abs(tree_loss(carry[0]) - 0.1) < 1e-6


def test_step_sizes_are_the_formulas():
    loss, _, _, _ = _least_squares()
    w0 = jnp.zeros(8)
    beta, f_star, cap = 0.6, -0.05, 2.0
    # moving-average gradient (ALR-SMAG): d_k = beta d_{k-1} + g_k, a_k = min((f-f*)/|d|^2, cap)
    tx = js.optimizers.polyak_momentum(f_star=f_star, momentum=beta, max_learning_rate=cap)
    _, trace = _run(tx, loss, w0, 25)
    d = np.zeros(8)
    capped = 0
    for _, value, grads, updates, state in trace:
        d = beta * d + np.asarray(grads)
        expected = min((float(value) - f_star) / float(d @ d), cap)
        capped += expected == cap
        np.testing.assert_allclose(state.learning_rate, expected, rtol=1e-12)
        np.testing.assert_allclose(updates, -expected * d, rtol=1e-10, atol=1e-14)
    # heavy ball (ALR-HB): a_k = min((f - f* + beta <g_k, u_{k-1}>)_+ / |g_k|^2, cap)
    tx = js.optimizers.polyak_momentum(
        f_star=f_star, momentum=beta, max_learning_rate=cap, variant="hb"
    )
    _, trace = _run(tx, loss, w0, 25)
    previous = np.zeros(8)
    for _, value, grads, updates, state in trace:
        g = np.asarray(grads)
        gap = max(float(value) - f_star + beta * float(g @ previous), 0.0)
        expected = min(gap / float(g @ g), cap)
        np.testing.assert_allclose(state.learning_rate, expected, rtol=1e-10, atol=1e-15)
        previous = -expected * g + beta * previous
        np.testing.assert_allclose(updates, previous, rtol=1e-9, atol=1e-14)


def test_polyak_step_contracts_at_the_theoretical_rate():
    # For a mu-strongly convex, L-smooth f with f* known, the Polyak step gives
    # |x_{k+1} - x*|^2 <= |x_k - x*|^2 - (f - f*)^2/|g|^2 <= (1 - mu/(4L)) |x_k - x*|^2
    # (as f - f* >= |g|^2/(2L) and f - f* >= mu/2 |x - x*|^2): checked step by step.
    loss, w_star, L, mu = _least_squares()
    tx = js.optimizers.polyak_momentum(momentum=0.0, max_learning_rate=1e6)
    _, trace = _run(tx, loss, jnp.zeros(8), 60)
    distances = np.array([float(jnp.sum((w - w_star) ** 2)) for w, *_ in trace])
    ratios = distances[1:] / distances[:-1]
    bound = 1 - mu / (4 * L)
    assert np.all(ratios <= bound + 1e-12), (ratios.max(), bound)
    losses = np.array([float(v) for _, v, *_ in trace])
    slope = np.polyfit(np.arange(60), np.log(losses), 1)[0]
    assert slope < np.log(bound) < 0  # linear convergence, at least at the bound's rate
    print(f"Polyak: loss slope {slope:.3f} per step, theory bound {np.log(bound):.4f}")


@pytest.mark.parametrize("variant", ["smag", "hb"])
def test_momentum_variants_converge_linearly(variant):
    loss, _, _, _ = _least_squares(spread=1.0)

    def losses(beta):  # vmapped over the momentum: one compilation
        tx = js.optimizers.polyak_momentum(momentum=beta, max_learning_rate=10.0, variant=variant)

        def body(carry, _):
            w, state = carry
            value, grads = jax.value_and_grad(loss)(w)
            updates, state = tx.update(grads, state, w, value=value)
            return (w + updates, state), value

        return jax.lax.scan(body, (jnp.zeros(8), tx.init(jnp.zeros(8))), None, length=300)[1]

    for trajectory in np.asarray(jax.jit(jax.vmap(losses))(jnp.array([0.5, 0.9]))):
        assert trajectory[-1] < 1e-7 * trajectory[0]
        assert np.polyfit(np.arange(300), np.log(trajectory), 1)[0] < -0.03


def test_heavy_ball_polyak_beats_plain_polyak_and_momo_on_an_ill_conditioned_problem():
    # The paper's claim: the momentum-aware step keeps heavy ball's acceleration without its
    # oscillations. Measured here against SPS_max (optax.polyak_sgd) and MoMo (optax.contrib).
    loss, _, L, mu = _least_squares(spread=1.0)
    w0 = jnp.zeros(8)
    finals = {}
    for name, tx in {
        "alr_hb": js.optimizers.polyak_momentum(momentum=0.9, max_learning_rate=10.0, variant="hb"),
        "polyak_sgd": optax.polyak_sgd(max_learning_rate=10.0),
        "momo": optax.contrib.momo(learning_rate=10.0, beta=0.9),
    }.items():
        w, _ = _run(tx, loss, w0, 200)
        finals[name] = float(loss(w))
    print(f"loss after 200 steps (condition number {L / mu:.0f}):", finals)
    assert finals["alr_hb"] < 0.1 * finals["polyak_sgd"]
    assert finals["alr_hb"] < 0.1 * finals["momo"]


def test_pytree_params_and_optax_chain():
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    target = {"w": jnp.arange(6.0).reshape(3, 2), "b": jnp.array([1.0, -1.0])}

    def loss(p):
        return sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)

    tx = optax.chain(optax.clip_by_global_norm(100.0), js.optimizers.polyak_momentum(0.0, 0.5))
    params, _ = _run(tx, loss, params, 60)
    assert loss(params) < 1e-8


def test_jit_and_vmap_over_momentum_match_a_loop():
    loss, _, _, _ = _least_squares(spread=0.5)

    def train(beta):
        tx = js.optimizers.polyak_momentum(momentum=beta, max_learning_rate=5.0)

        def body(carry, _):
            w, state = carry
            value, grads = jax.value_and_grad(loss)(w)
            updates, state = tx.update(grads, state, w, value=value)
            return (optax.apply_updates(w, updates), state), value

        # 20 steps: further on, as the loss nears 0, its relative rounding grows by cancellation
        return jax.lax.scan(body, (jnp.zeros(8), tx.init(jnp.zeros(8))), None, length=20)[1]

    betas = jnp.array([0.0, 0.3, 0.8])
    batched, unbatched = jax.jit(jax.vmap(train))(betas), jax.jit(train)
    for i, beta in enumerate(betas):
        np.testing.assert_allclose(batched[i], unbatched(beta), rtol=1e-10)


def test_new_hyperparameters_do_not_recompile():
    loss, _, _, _ = _least_squares(spread=0.5)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(tx, w, state):
        value, grads = jax.value_and_grad(loss)(w)
        updates, state = tx.update(grads, state, w, value=value)
        return optax.apply_updates(w, updates), state

    w = jnp.zeros(8)
    for beta, f_star, cap in ((0.9, 0.0, 1.0), (0.5, 0.1, 3.0), (0.0, -1.0, 0.5)):
        tx = js.optimizers.polyak_momentum(f_star=f_star, momentum=beta, max_learning_rate=cap)
        step(tx, w, tx.init(w))


@pytest.mark.float32
def test_float32():
    X = jax.random.normal(jax.random.key(0), (30, 6), jnp.float32)
    y = X @ jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32)

    def loss(w):
        return 0.5 * jnp.mean((X @ w - y) ** 2)

    for variant in ("hb",):  # the heavier dtype path (one compile: CI time)
        tx = js.optimizers.polyak_momentum(momentum=0.5, max_learning_rate=10.0, variant=variant)
        w, trace = _run(tx, loss, jnp.zeros(6, jnp.float32), 100)
        assert w.dtype == jnp.float32 and trace[-1][4].learning_rate.dtype == jnp.float32
        assert trace[-1][3].dtype == jnp.float32
        assert loss(w) < 1e-6 * loss(jnp.zeros(6, jnp.float32))


def test_bad_input():
    with pytest.raises(ValueError, match="momentum"):
        js.optimizers.polyak_momentum(momentum=-0.1)
    with pytest.raises(ValueError, match="momentum"):
        js.optimizers.polyak_momentum(momentum=1.0)
    with pytest.raises(ValueError, match="max_learning_rate"):
        js.optimizers.polyak_momentum(max_learning_rate=0.0)
    with pytest.raises(ValueError, match="variant"):
        js.optimizers.polyak_momentum(variant="nesterov")
    tx = js.optimizers.polyak_momentum()
    state = tx.init(jnp.zeros(2))
    with pytest.raises(TypeError, match="value=loss"):
        tx.update(jnp.ones(2), state, jnp.zeros(2))

    # a traced momentum out of range is caught at run time
    @jax.jit
    def update(beta):
        tx = js.optimizers.polyak_momentum(momentum=beta)
        return tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), value=1.0)[0]

    update(0.5)
    with pytest.raises(Exception, match="momentum"):
        jax.block_until_ready(update(-0.5))


def test_optax_inject_hyperparams():
    # optax's way of changing hyperparameters during training: they live in the state
    loss, _, _, _ = _least_squares(spread=0.5)
    tx = optax.inject_hyperparams(js.optimizers.polyak_momentum, static_args=("variant",))(
        momentum=0.9, max_learning_rate=5.0, variant="hb"
    )

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(w, state):
        value, grads = jax.value_and_grad(loss)(w)
        updates, state = tx.update(grads, state, w, value=value)
        return optax.apply_updates(w, updates), state

    w, state = jnp.zeros(8), tx.init(jnp.zeros(8))
    for k in range(60):
        state.hyperparams["momentum"] = jnp.asarray(0.9 if k < 30 else 0.0)
        w, state = step(w, state)
    assert loss(w) < 1e-5 * loss(jnp.zeros(8))
