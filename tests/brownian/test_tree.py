"""Statistical and structural tests of `jaxsolve.brownian.VirtualBrownianTree`.

Statistics use fixed keys; tolerances come from the sample size (standard errors times 5, KS
p-values above 1e-3), so a wrong law fails and a right one passes with overwhelming odds.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats

import jaxsolve as js
from jaxsolve.brownian import _levy

NUM = 4000  # paths for the statistical tests
STD = {"W": 1.0, "H": 1 / np.sqrt(12), "K": 1 / np.sqrt(720)}
T0, T1, TOL = 0.0, 2.0, 2.0**-6
S, U, T = 0.137, 0.9011, 1.7  # generic (non-dyadic) query times, in different leaves


def _tree(key, levy="space-time-time", shape=(2,), dtype=None, tol=TOL):
    return js.brownian.VirtualBrownianTree(T0, T1, tol, shape, key, levy_area=levy, dtype=dtype)


@functools.cache
def _samples():
    """(W, H, K) over [S, U], [U, T], [S, T] for NUM independent paths, as numpy arrays."""

    def one(key):
        bm = _tree(key)
        return bm.increment(S, U), bm.increment(U, T), bm.increment(S, T)

    out = jax.jit(jax.vmap(one))(jr.split(jr.key(1234), NUM))
    return jax.tree.map(np.asarray, out)


def _standardised(inc, name):
    return getattr(inc, name) / (STD[name] * np.sqrt(inc.dt[0]))


@pytest.mark.float32
@pytest.mark.parametrize("name", ["W", "H", "K"])
def test_marginals(name):
    for inc in _samples():
        z = _standardised(inc, name)
        for j in range(z.shape[1]):
            assert scipy.stats.kstest(z[:, j], "norm").pvalue > 1e-3
            # Sample variance of NUM standard normals: standard error sqrt(2/NUM).
            assert abs(z[:, j].var() - 1) < 5 * np.sqrt(2 / NUM)
            assert abs(z[:, j].mean()) < 5 / np.sqrt(NUM)


def _corr_bound():
    return 5 / np.sqrt(NUM)


@pytest.mark.float32
def test_cross_correlations_zero():
    # W, H, K of one interval, and different coordinates, are independent.
    for inc in _samples():
        cols = [getattr(inc, n)[:, j] for n in "WHK" for j in range(2)]
        corr = np.corrcoef(np.stack(cols))
        off = corr - np.diag(np.diag(corr))
        assert np.abs(off).max() < _corr_bound()


def test_adjacent_intervals_independent():
    left, right, _ = _samples()
    a = np.concatenate([getattr(left, n) for n in "WHK"], axis=1)
    b = np.concatenate([getattr(right, n) for n in "WHK"], axis=1)
    corr = np.corrcoef(a.T, b.T)[: a.shape[1], a.shape[1] :]
    assert np.abs(corr).max() < _corr_bound()


def test_chen_relation_one_path():
    # The increment over [S, T] is Chen's combination of [S, U] and [U, T] on each path.
    left, right, whole = _samples()
    a, b = left.dt[:, None], right.dt[:, None]
    h = a + b
    w = left.W + right.W
    hh = (a * left.H + b * right.H + (b * left.W - a * right.W) / 2) / h
    kk = (
        a**2 * left.K
        + b**2 * right.K
        + a * b * (left.H - right.H) / 2
        + (b - a) * (b * left.W - a * right.W) / 12
    ) / h**2
    np.testing.assert_allclose(w, whole.W, atol=1e-12)
    np.testing.assert_allclose(hh, whole.H, atol=1e-12)
    np.testing.assert_allclose(kk, whole.K, atol=1e-12)


def test_bridge_law_given_endpoints():
    # Given (W, H, K) of [S, T], the triple of [S, U] has mean G(alpha) @ parent and the
    # conditional covariance of Foster's bridge. Check by regressing on the parent.
    left, _, whole = _samples()
    h = whole.dt[0]
    alpha = left.dt[0] / h
    scale = np.array([1.0, 1.0, 1.0])
    parent = np.stack([whole.W[:, 0], whole.H[:, 0], whole.K[:, 0]], 1) / np.sqrt(h)
    child = np.stack([left.W[:, 0], left.H[:, 0], left.K[:, 0]], 1) / np.sqrt(h)
    coef, *_ = np.linalg.lstsq(parent, child, rcond=None)
    g = np.array(_levy.conditional_mean_matrix(alpha, 3))
    residual = child - parent @ coef
    m1, _ = (np.array(m) for m in _levy.chen_matrices(alpha, 3))
    cov_left = alpha * np.diag(np.array(_levy.STD) ** 2)
    cond_cov = cov_left - g @ m1 @ cov_left
    for i in range(3):
        # Standard error of a regression coefficient: resid std / (sqrt(NUM) * regressor std).
        se = np.sqrt(cond_cov[i, i]) / (np.sqrt(NUM) * np.array(_levy.STD) * scale)
        assert np.all(np.abs(coef[:, i] - g[i, :]) < 5 * se + 1e-12)
    emp = np.cov(residual.T)
    se_cov = np.sqrt((np.outer(np.diag(cond_cov), np.diag(cond_cov)) + cond_cov**2) / NUM)
    assert np.all(np.abs(emp - cond_cov) < 5 * se_cov)


def test_bridge_law_dyadic_and_leaf_times():
    # Queries on tree nodes (dyadic) and deep inside leaves have the exact variance too.
    def one(key):
        bm = _tree(key, levy="space-time", shape=())
        return bm.increments(jnp.array([0.0, 0.5, 0.5 + TOL / 3, 1.0 + TOL, 2.0]))

    out = jax.jit(jax.vmap(one))(jr.split(jr.key(7), NUM))
    for i in range(4):
        h = float(out.dt[0, i])
        for name in "WH":
            z = np.asarray(getattr(out, name)[:, i]) / (STD[name] * np.sqrt(h))
            assert abs(z.var() - 1) < 5 * np.sqrt(2 / NUM)
            assert scipy.stats.kstest(z, "norm").pvalue > 1e-3


def test_increments_equal_increment():
    bm = _tree(jr.key(3))
    # Aligned with the tree (stops early), generic times, repeats, two times in one leaf, t1.
    ts = jnp.concatenate(
        [
            jnp.linspace(T0, 1.0, 5),
            jnp.array([1.0 + 1e-9, 1.3, 1.3, 1.3 + TOL / 10, 1.77, 2.0]),
        ]
    )
    batch = bm.increments(ts)
    assert batch.W.shape == (ts.shape[0] - 1, 2)
    for i in range(ts.shape[0] - 1):
        one = bm.increment(ts[i], ts[i + 1])
        for name in ["dt", "W", "H", "K"]:
            np.testing.assert_allclose(
                getattr(one, name), getattr(batch, name)[i], rtol=1e-10, atol=1e-13
            )


@pytest.mark.float32
def test_levy_none_has_no_areas():
    bm = _tree(jr.key(3), levy="none")
    inc = bm.increment(0.2, 0.9)
    assert inc.H is None and inc.K is None and inc.W.shape == (2,)
    assert bm.levy_area == "none" and bm.shape == (2,)


def test_evaluate_and_determinism():
    bm = _tree(jr.key(5))
    plain = bm.increment(0.3, 1.2)
    jitted = jax.jit(lambda b: b.increment(0.3, 1.2))(bm)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), plain, jitted))
    # Query order does not matter: the path is a function of the key alone.
    again = _tree(jr.key(5))
    again.increment(1.5, 1.9)
    np.testing.assert_array_equal(again.increment(0.3, 1.2).W, plain.W)
    w = bm.evaluate(1.2) - bm.evaluate(0.3)
    np.testing.assert_allclose(w, plain.W, atol=1e-12)
    np.testing.assert_array_equal(bm.evaluate(T0), jnp.zeros(2))


def test_vmap_over_times_matches_loop():
    bm = _tree(jr.key(6))
    ss = jnp.array([0.1, 0.7, 1.3])
    ts = ss + jnp.array([0.05, 0.4, 0.6])
    out = jax.vmap(bm.increment)(ss, ts)
    for i in range(3):
        one = bm.increment(ss[i], ts[i])
        np.testing.assert_allclose(out.W[i], one.W, atol=1e-13)
        np.testing.assert_allclose(out.K[i], one.K, atol=1e-13)


@pytest.mark.float32
def test_no_retrace_for_new_key_or_times():
    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def f(bm, s, t):
        return bm.increment(s, t).W

    f(_tree(jr.key(0), levy="none"), 0.1, 0.2)
    f(_tree(jr.key(1), levy="none"), 0.3, 1.2)


def test_same_leaf_queries_are_continuous_but_not_independent():
    # Two queries inside one leaf share the leaf's randomness: the increment between them is
    # a deterministic, continuous function of the query times (zero for equal times), with a
    # variance below Brownian motion's. Documented behaviour.
    def one(key):
        bm = _tree(key, levy="none", shape=())
        base = 1.0 + TOL * 0.2
        ts = jnp.array([base, base + TOL * 0.4, base + TOL * 0.4 + 1e-12])
        return bm.increments(ts).W

    w = np.asarray(jax.jit(jax.vmap(one))(jr.split(jr.key(8), NUM)))
    var_ratio = w[:, 0].var() / (TOL * 0.4)
    assert var_ratio < 1 - 5 * np.sqrt(2 / NUM)
    assert np.abs(w[:, 1]).max() < 1e-5


def test_pytree_shape_and_dtypes():
    shape = {
        "a": jax.ShapeDtypeStruct((3,), jnp.float32),
        "b": jax.ShapeDtypeStruct((2, 2), jnp.float64),
    }
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, shape, jr.key(0), levy_area="space-time")
    incs = bm.increments(jnp.array([0.0, 0.25, 0.75]))
    assert incs.W["a"].shape == (2, 3) and incs.W["a"].dtype == jnp.float32
    assert incs.H["b"].shape == (2, 2, 2) and incs.H["b"].dtype == jnp.float64
    assert incs.K is None
    np.testing.assert_allclose(incs.dt, [0.25, 0.5])
    # The leaves are independent Brownian motions, not copies of one another.
    assert not np.allclose(np.asarray(incs.W["a"][0, :2], np.float64), incs.W["b"][0, 0])


@pytest.mark.float32
def test_float32():
    def one(key):
        bm = js.brownian.VirtualBrownianTree(
            0.0, 1.0, 1e-3, (), key, levy_area="space-time", dtype=jnp.float32
        )
        return bm.increment(jnp.float32(0.1), jnp.float32(0.35))

    out = jax.jit(jax.vmap(one))(jr.split(jr.key(9), NUM))
    assert out.W.dtype == jnp.float32 and out.H.dtype == jnp.float32
    assert out.dt.dtype == jnp.float32
    for name in "WH":
        z = np.asarray(getattr(out, name), np.float64) / (STD[name] * np.sqrt(0.25))
        assert abs(z.var() - 1) < 5 * np.sqrt(2 / NUM)


def test_gradients_flow_through_dt_not_times():
    bm = _tree(jr.key(2), levy="none", shape=())

    def f(theta):
        inc = bm.increment(0.1, 0.5 + theta)
        return inc.dt + 0.0 * inc.W + theta * inc.W

    g = jax.grad(f)(0.2)
    np.testing.assert_allclose(g, 1 + bm.increment(0.1, 0.7).W, rtol=1e-12)


@pytest.mark.float32
def test_errors():
    key = jr.key(0)
    with pytest.raises(ValueError, match="levy_area"):
        js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-3, (2,), key, levy_area="space")
    with pytest.raises(ValueError, match="tol"):
        js.brownian.VirtualBrownianTree(0.0, 1.0, 0.0, (2,), key)
    with pytest.raises(ValueError, match="t1"):
        js.brownian.VirtualBrownianTree(1.0, 1.0, 1e-3, (2,), key)
    with pytest.raises(TypeError, match="shape"):
        js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-3, "abc", key)
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda t1: js.brownian.VirtualBrownianTree(0.0, t1, 1e-3, (2,), key))(1.0)
    with pytest.raises(ValueError, match="too small"):
        js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-9, (2,), key, dtype=jnp.float32)
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-3, (2,), key)
    with pytest.raises(ValueError, match=r"\[t0, t1\]"):
        bm.increment(0.5, 1.5)
    with pytest.raises(ValueError, match=r"\[t0, t1\]"):
        bm.evaluate(-0.1)
    with pytest.raises(ValueError, match="non-decreasing"):
        bm.increments(jnp.array([0.0, 0.5, 0.4]))
    with pytest.raises(ValueError, match="1-D"):
        bm.increments(jnp.zeros((2, 2)))
    # Under jit the checks run at run time.
    with pytest.raises(Exception, match="outside"):
        jax.jit(lambda t: bm.increment(0.0, t).W)(2.0).block_until_ready()


def test_memory_does_not_grow_with_the_number_of_queries():
    """The tree stores its key and interval only: a loop of 10^6 queries compiles to the same
    temporary memory as a loop of 100 (the state is regenerated, never cached)."""

    def queries(n):
        bm = js.brownian.VirtualBrownianTree(
            0.0, 1.0, 1e-6, (4,), jr.key(0), levy_area="space-time"
        )

        def body(i, total):
            s = i / n
            increment = bm.increment(s, s + 1.0 / n)
            return total + increment.W + increment.H

        return jax.lax.fori_loop(0, n, body, jnp.zeros(4))

    def temp_bytes(n):
        compiled = jax.jit(queries, static_argnums=0).lower(n).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(10**6) == temp_bytes(100)
