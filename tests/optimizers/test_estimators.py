"""Gradient estimators: unbiasedness and variance against their closed forms, the coordinate
estimator against explicit central differences, the ZO memory property, escaping a saddle."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

opt = js.optimizers


def _quadratic(dim=5, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(dim, dim))
    A = jnp.asarray(M @ M.T / dim + np.eye(dim))
    b, x = jnp.asarray(rng.normal(size=dim)), jnp.asarray(rng.normal(size=dim))
    fn = lambda x, A, b: 0.5 * x @ A @ x + b @ x
    return fn, x, (A, b), A @ x + b


def _samples(estimator, fn, x, args, num_keys, seed=1):
    keys = jax.random.split(jax.random.key(seed), num_keys)
    one = lambda key: opt.estimate_gradient(fn, estimator, x, key, *args)[1]
    return np.asarray(jax.jit(jax.vmap(one))(keys))


ESTIMATORS = {
    "two_point_gaussian": lambda q: opt.TwoPoint(num_directions=q, smoothing=0.1),
    "two_point_sphere": lambda q: opt.TwoPoint(
        num_directions=q, smoothing=0.1, distribution="sphere"
    ),
    "forward_gradient": lambda q: opt.ForwardGradient(num_directions=q),
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_unbiased_on_a_quadratic(name):
    # Central differences are exact along a direction for a quadratic, so even with a large
    # smoothing (0.1) the two-point estimate is unbiased; the forward gradient always is.
    fn, x, args, grad = _quadratic()
    num_keys = 4000
    samples = _samples(ESTIMATORS[name](1), fn, x, args, num_keys)
    mean = samples.mean(axis=0)
    standard_error = samples.std(axis=0, ddof=1) / np.sqrt(num_keys)
    assert np.all(np.abs(mean - np.asarray(grad)) <= 4 * standard_error), (mean, grad)
    # the test has power: a 25% bias would be caught
    assert np.any(np.abs(1.25 * mean - np.asarray(grad)) > 4 * standard_error)


@pytest.mark.parametrize("name", ["two_point_gaussian", "forward_gradient"])
def test_variance_is_the_closed_form_over_num_directions(name):
    # One Gaussian direction: Cov = |g|^2 I + g g^T, total variance (d + 1)|g|^2; the average of
    # q directions has 1/q of it.
    fn, x, args, grad = _quadratic()
    dim, num_keys = x.size, 2000
    expected_one = (dim + 1) * float(jnp.sum(grad**2))
    for q in (1, 8):
        samples = _samples(ESTIMATORS[name](q), fn, x, args, num_keys, seed=q)
        squared = np.sum((samples - np.asarray(grad)) ** 2, axis=1)  # unbiased: E = total var
        estimate, error = squared.mean(), squared.std(ddof=1) / np.sqrt(num_keys)
        assert abs(estimate - expected_one / q) <= 4 * error, (q, estimate, expected_one / q)


def test_coordinate_equals_central_differences_and_mask_restricts_exactly():
    fn = lambda p, c: jnp.sum(jnp.sin(p["w"]) * c) + jnp.prod(jnp.cos(p["b"])) + p["s"] ** 3
    params = {
        "w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3),
        "b": jnp.array([0.3, -0.2]),
        "s": jnp.asarray(0.7),
    }
    c = jnp.arange(6.0).reshape(2, 3)
    mu = 1e-4
    value, grad = opt.estimate_gradient(fn, opt.Coordinate(smoothing=mu), params, None, c)
    assert value == fn(params, c)
    for name, leaf in params.items():
        expected = np.zeros(leaf.shape)
        for index in np.ndindex(leaf.shape):
            e = jnp.zeros(leaf.shape).at[index].set(1.0)
            up = fn({**params, name: leaf + mu * e}, c)
            down = fn({**params, name: leaf - mu * e}, c)
            expected[index] = (up - down) / (2 * mu)
        np.testing.assert_allclose(grad[name], expected, rtol=1e-12, atol=1e-12)
    exact = jax.grad(fn)(params, c)
    for name in params:
        np.testing.assert_allclose(grad[name], exact[name], rtol=1e-6, atol=1e-7)

    mask = {"w": jnp.array([[True, False, True], [False, False, True]]), "b": False, "s": True}
    est = opt.Coordinate(smoothing=mu, mask=mask)
    assert est.num_evaluations(params) == 2 * 4 + 1
    _, masked = opt.estimate_gradient(fn, est, params, None, c)
    np.testing.assert_array_equal(masked["w"], jnp.where(mask["w"], grad["w"], 0.0))
    np.testing.assert_array_equal(masked["b"], jnp.zeros(2))
    np.testing.assert_array_equal(masked["s"], grad["s"])
    # a traced mask (the estimator passed into jit) visits every coordinate: same numbers
    _, traced = jax.jit(lambda est: opt.estimate_gradient(fn, est, params, None, c))(est)
    for name in params:
        np.testing.assert_array_equal(traced[name], masked[name])


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_zo_memory_does_not_grow_with_num_directions():
    dim = 50_000
    fn = lambda x: jnp.sum(jnp.sin(x) * x)
    x, key = jnp.ones(dim), jax.random.key(0)

    def ours(estimator):
        return lambda x, key: opt.estimate_gradient(fn, estimator, x, key)

    def materialised(x, key):  # all 32 directions drawn at once, as a vmap would
        u = jax.random.normal(key, (32, dim), x.dtype)
        slopes = jax.vmap(lambda u: (fn(x + 1e-3 * u) - fn(x - 1e-3 * u)) / 2e-3)(u)
        return fn(x), slopes @ u / 32

    vector = dim * x.dtype.itemsize
    naive = _temp_bytes(materialised, x, key)
    for make in (lambda q: opt.TwoPoint(num_directions=q), opt.ForwardGradient):
        small, large = _temp_bytes(ours(make(2)), x, key), _temp_bytes(ours(make(64)), x, key)
        # a few parameter-sized buffers (x +- mu u, u, the running sum), whatever q is
        assert large <= small + vector // 10 and large <= 8 * vector, (small, large)
        assert naive > 10 * large  # the measurement can tell the difference


def test_two_point_descent_escapes_a_strict_saddle_where_gradient_descent_does_not():
    # f has a strict saddle at 0 and minima f = -1 at (0, +-sqrt 2). Started on the saddle's
    # stable manifold (y = 0), exact gradient descent converges to the saddle; the randomness of
    # two-point ZO descent pushes y off the manifold and the negative curvature does the rest
    # (Vlatakis-Gkaragkounis, Flokas & Piliouras, "Efficiently avoiding saddle points with
    # zero order methods: no gradients required", NeurIPS 2019).
    fn = lambda z: z[0] ** 2 - z[1] ** 2 + z[1] ** 4 / 4
    z0, learning_rate, num_steps = jnp.array([1.0, 0.0]), 0.05, 300
    est = opt.TwoPoint(num_directions=1, smoothing=1e-3)

    def zo_descent(key):
        def step(z, key):
            return z - learning_rate * opt.estimate_gradient(fn, est, z, key)[1], None

        return jax.lax.scan(step, z0, jax.random.split(key, num_steps))[0]

    def gradient_descent(z):
        return jax.lax.fori_loop(0, num_steps, lambda i, z: z - learning_rate * jax.grad(fn)(z), z)

    z_gd = gradient_descent(z0)
    assert z_gd[1] == 0.0 and abs(fn(z_gd)) < 1e-10  # stuck at the saddle
    finals = jax.jit(jax.vmap(zo_descent))(jax.random.split(jax.random.key(0), 20))
    values = jax.vmap(fn)(finals)
    assert np.all(np.asarray(values) < -0.99), values


def test_jit_vmap_pytrees_modules_and_no_recompile():
    mlp = eqx.nn.MLP(3, 1, 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    fn = lambda model, x: jnp.sum(jax.vmap(model)(x) ** 2)
    data = jnp.ones((5, 3))
    key = jax.random.key(1)
    for est in (opt.TwoPoint(num_directions=3),):
        value, grad = opt.estimate_gradient(fn, est, mlp, key, data)
        assert jnp.allclose(value, fn(mlp, data))
        assert grad.activation is None  # non-array leaves are held fixed, like filter_grad
        assert grad.layers[0].weight.shape == mlp.layers[0].weight.shape

    # vmap over keys = a loop over keys; the same key gives the same estimate
    fn2, x, args, _ = _quadratic()
    est = opt.TwoPoint(num_directions=2)
    keys = jax.random.split(jax.random.key(3), 4)
    batched = jax.vmap(lambda k: opt.estimate_gradient(fn2, est, x, k, *args)[1])(keys)
    for k, row in zip(keys[:2], batched[:2]):
        np.testing.assert_allclose(row, opt.estimate_gradient(fn2, est, x, k, *args)[1], rtol=1e-12)
    jitted = jax.jit(lambda k: opt.estimate_gradient(fn2, est, x, k, *args))(keys[0])
    np.testing.assert_allclose(jitted[1], batched[0], rtol=1e-12)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def estimate(est, x, key):
        return opt.estimate_gradient(fn2, est, x, key, *args)

    a = estimate(opt.TwoPoint(num_directions=2, smoothing=1e-3), x, keys[0])
    b = estimate(opt.TwoPoint(num_directions=2, smoothing=1e-2), x, keys[0])  # no new trace
    assert a[1].shape == b[1].shape


@pytest.mark.float32
def test_float32():
    fn = lambda p: jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum(jnp.sin(p["b"]))
    params = {"w": jnp.zeros(4, jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    exact = jax.grad(fn)(params)
    key = jax.random.key(0)
    for est in (
        opt.TwoPoint(num_directions=2, smoothing=1e-2),
        opt.TwoPoint(num_directions=2, distribution="sphere"),
        opt.ForwardGradient(num_directions=2),
        opt.Coordinate(smoothing=1e-2),
    ):
        value, grad = jax.jit(lambda p, k: opt.estimate_gradient(fn, est, p, k))(params, key)
        assert value.dtype == jnp.float32
        assert all(
            g.dtype == jnp.float32 and jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grad)
        )
    for name in params:
        np.testing.assert_allclose(grad[name], exact[name], rtol=1e-3, atol=1e-3)


def test_bad_input():
    fn = lambda x: jnp.sum(x**2)
    x, key = jnp.ones(3), jax.random.key(0)
    with pytest.raises(ValueError, match="num_directions"):
        opt.TwoPoint(num_directions=0)
    with pytest.raises(ValueError, match="smoothing"):
        opt.TwoPoint(smoothing=-1.0)
    with pytest.raises(ValueError, match="distribution"):
        opt.TwoPoint(distribution="uniform")
    with pytest.raises(ValueError, match="num_directions"):
        opt.ForwardGradient(num_directions=1.5)
    with pytest.raises(TypeError, match="boolean"):
        opt.Coordinate(mask=jnp.ones(3))
    with pytest.raises(TypeError, match="estimator"):
        opt.estimate_gradient(fn, "two_point", x, key)
    with pytest.raises(ValueError, match="scalar"):
        opt.estimate_gradient(lambda x: x**2, opt.TwoPoint(), x, key)
    with pytest.raises(ValueError, match="key"):
        opt.estimate_gradient(fn, opt.TwoPoint(), x, None)
    with pytest.raises(TypeError, match="floating"):
        opt.estimate_gradient(fn, opt.TwoPoint(), jnp.ones(3, jnp.complex64), key)
    with pytest.raises(ValueError, match="floating-point array leaf"):
        opt.estimate_gradient(lambda x: jnp.sum(x), opt.TwoPoint(), jnp.arange(3), key)
    with pytest.raises(ValueError, match="mask"):
        est = opt.Coordinate(mask={"a": True, "b": True})
        opt.estimate_gradient(lambda p: p["a"] ** 2, est, {"a": jnp.ones(())}, None)
