"""First-order bilevel optimisation (penalty method / F2SA): the hypergradient estimate tends to
the implicit hypergradient of the `hyperparam_implicit` ridge problem like 1/penalty, with
gradients of f and g only (a function with no second derivative is accepted, where implicit
differentiation fails); the solver's fixed point against its closed form; the contract."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from jaxsolve.experiments._hyperparam import _optimality, _val_loss

from ..helpers import fitted_slope


def _ridge(seed=0, num_train=40, num_val=40, num_features=5):
    """The ridge problem of `hyperparam_implicit`, small: x = log of per-feature L2 weights,
    inner g = training objective, outer f = validation loss."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=num_features)
    X, Xv = rng.normal(size=(num_train, num_features)), rng.normal(size=(num_val, num_features))
    y = X @ w_true + 0.5 * rng.normal(size=num_train)
    yv = Xv @ w_true + 0.5 * rng.normal(size=num_val)
    args = tuple(jnp.asarray(a) for a in (X, y, Xv, yv))

    def inner(log_lam, w, args):
        X, y, _, _ = args
        return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * jnp.sum(jnp.exp(log_lam) * w**2)

    def outer(log_lam, w, args):
        return _val_loss(w, args[2], args[3])

    smoothness = float(np.linalg.eigvalsh(X.T @ X / num_train)[-1])
    return outer, inner, args, smoothness


def _implicit_hypergradient(log_lam, args):
    """d(validation loss)/d(log_lam) by js.implicit.custom_root on the training optimality
    condition (the experiment's `_optimality`), around an exact inner solve."""

    @js.implicit.custom_root(_optimality)
    def solve(w_init, log_lam, X, y):
        H = X.T @ X / X.shape[0] + jnp.diag(jnp.exp(log_lam))
        return jnp.linalg.solve(H, X.T @ y / X.shape[0])

    X, y, Xv, yv = args

    def objective(log_lam):
        return _val_loss(solve(jnp.zeros(X.shape[1]), log_lam, X, y), Xv, yv)

    return jax.grad(objective)(log_lam)


def _closed_form_hypergradient(log_lam, args):
    X, y, Xv, yv = (np.asarray(a) for a in args)
    lam = np.exp(np.asarray(log_lam))
    H = X.T @ X / len(y) + np.diag(lam)
    w = np.linalg.solve(H, X.T @ y / len(y))
    return -np.linalg.solve(H, Xv.T @ (Xv @ w - yv) / len(yv)) * lam * w


def _estimate(outer, inner, log_lam, args, penalty, inner_learning_rate, inner_steps=300):
    """One PenaltyBilevel step with no outer move: the hypergradient estimate at log_lam."""
    solver = js.optimizers.PenaltyBilevel(
        penalty=penalty,
        learning_rate=0.0,
        inner_learning_rate=inner_learning_rate,
        inner_steps=inner_steps,
    )
    state = solver.init(outer, inner, log_lam, jnp.zeros(args[0].shape[1]), args)
    return solver.step(outer, inner, args, state).hypergradient


def test_hypergradient_tends_to_the_implicit_one_like_one_over_penalty():
    outer, inner, args, smoothness = _ridge()
    log_lam = jnp.log(jnp.linspace(0.1, 0.5, 5))
    implicit = _implicit_hypergradient(log_lam, args)
    np.testing.assert_allclose(implicit, _closed_form_hypergradient(log_lam, args), rtol=1e-8)
    estimate = eqx.filter_jit(_estimate)  # one compile: the penalty is an array
    penalties = [10.0, 100.0, 1000.0]
    errors = []
    for penalty in penalties:
        est = estimate(outer, inner, log_lam, args, jnp.asarray(penalty), 1 / (smoothness + 0.5))
        errors.append(float(jnp.linalg.norm(est - implicit) / jnp.linalg.norm(implicit)))
    slope = fitted_slope(penalties, errors)
    print(f"relative hypergradient error vs penalty {penalties}: {errors}, slope {slope:.3f}")
    assert -1.1 < slope < -0.9
    assert errors[-1] < 2e-3


def test_only_first_order_oracles():
    # The lower-level objective is built from a function whose derivative has no derivative:
    # any Hessian(-vector) product raises. The penalty estimate goes through; implicit
    # differentiation (custom_root) cannot.
    @jax.custom_jvp
    def no_second_derivative(x):
        return x

    @no_second_derivative.defjvp
    def _(primals, tangents):
        raise AssertionError("a second-order derivative was requested")

    @jax.custom_vjp
    def square(w):
        return 0.5 * jnp.sum(w**2)

    square.defvjp(lambda w: (square(w), w), lambda w, ct: (ct * no_second_derivative(w),))

    def inner(x, w, args):  # g = |w - x|^2 / 2, y*(x) = x
        return square(w - x)

    def outer(x, w, args):  # f = |w - 1|^2 / 2, F(x) = |x - 1|^2 / 2, dF/dx = x - 1
        return 0.5 * jnp.sum((w - 1.0) ** 2)

    x = jnp.array([0.0, 2.0])
    est = _estimate(outer, inner, x, (jnp.zeros((1, 2)),), 1000.0, 0.5, inner_steps=50)
    np.testing.assert_allclose(est, x - 1.0, atol=2e-3)
    with pytest.raises(AssertionError, match="second-order"):
        jax.jacrev(jax.grad(lambda w: inner(x, w, None)))(x)


def test_penalty_hypergradient_closed_form():
    # f = y^2/2, g = (y - x)^2/2: y_lam = lam x/(1 + lam), z = x, estimate = lam x/(1 + lam)
    f = lambda x, y, a: 0.5 * y**2
    g = lambda x, y, a: 0.5 * (y - x) ** 2
    x, lam = jnp.array(2.0), 50.0
    est = js.optimizers.penalty_hypergradient(f, g, x, lam * x / (1 + lam), x, None, lam)
    np.testing.assert_allclose(est, lam * x / (1 + lam), rtol=1e-14)


def _toy():
    # f = (y - 1)^2/2 + x^2/2, g = (y - x)^2/2: F(x) = (x - 1)^2/2 + x^2/2, x* = 1/2. The
    # penalty method's fixed point solves x - lam (1 - x)/(1 + lam) = 0: x = lam/(1 + 2 lam).
    f = lambda x, y, a: jnp.sum(0.5 * (y - 1.0) ** 2 + 0.5 * x**2)
    g = lambda x, y, a: jnp.sum(0.5 * (y - x) ** 2)
    return f, g


def test_solver_reaches_the_penalty_fixed_point_and_the_bilevel_solution():
    f, g = _toy()
    errors = []
    for penalty in (10.0, 100.0, 1000.0):
        sol = js.optimizers.penalty_bilevel(
            f,
            g,
            jnp.zeros(3),
            jnp.zeros(3),
            penalty=penalty,
            learning_rate=0.5,
            inner_learning_rate=0.5,
            inner_steps=60,
            num_steps=60,
        )
        assert sol.result == js.RESULTS.successful and int(sol.stats["num_steps"]) == 60
        np.testing.assert_allclose(sol.value, penalty / (1 + 2 * penalty), rtol=1e-8)
        np.testing.assert_allclose(sol.inner_value, sol.value, rtol=1e-8)
        errors.append(float(jnp.max(jnp.abs(sol.value - 0.5))))
    assert -1.05 < fitted_slope([10.0, 100.0, 1000.0], errors) < -0.95


def test_pytrees_jit_vmap_and_no_recompile():
    f = lambda x, y, a: 0.5 * jnp.sum((y["w"] - 1.0) ** 2) + 0.5 * jnp.sum(x["a"] ** 2)
    g = lambda x, y, a: 0.5 * jnp.sum((y["w"] - a * x["a"]) ** 2)
    x0, y0 = {"a": jnp.zeros(2)}, {"w": jnp.zeros(2)}

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def solve(penalty, learning_rate, scale):
        return js.optimizers.penalty_bilevel(
            f,
            g,
            x0,
            y0,
            scale,
            penalty=penalty,
            learning_rate=learning_rate,
            inner_learning_rate=0.3,
            inner_steps=30,
            num_steps=40,
        ).value["a"]

    penalties = jnp.array([10.0, 100.0])
    half, one = jnp.ones_like(penalties[0]) / 2, jnp.ones_like(penalties[0])
    batched = jax.vmap(solve, in_axes=(0, None, None))(penalties, half, one)
    for i, penalty in enumerate((10.0, 100.0)):
        # lam = penalty: the fixed point of the toy problem, per lane
        np.testing.assert_allclose(batched[i], penalty / (1 + 2 * penalty), rtol=1e-6)
    solve(penalties[1], 0.8 * half, one)  # new values of the three floats: no new trace


@pytest.mark.float32
def test_float32():
    f, g = _toy()
    sol = js.optimizers.penalty_bilevel(
        f,
        g,
        jnp.zeros(2, jnp.float32),
        jnp.zeros(2, jnp.float32),
        penalty=100.0,
        learning_rate=0.5,
        inner_learning_rate=0.5,
        inner_steps=60,
        num_steps=60,
    )
    assert sol.value.dtype == jnp.float32 and sol.inner_value.dtype == jnp.float32
    np.testing.assert_allclose(sol.value, 100.0 / 201.0, rtol=1e-5)


def test_failures_and_bad_input():
    f, g = _toy()
    diverging = {"learning_rate": 10.0, "inner_learning_rate": 3.0, "num_steps": 200}
    sol = js.optimizers.penalty_bilevel(f, g, jnp.ones(2), jnp.ones(2), throw=False, **diverging)
    assert sol.result == js.RESULTS.nonfinite
    with pytest.raises(RuntimeError, match="nonfinite"):
        js.optimizers.penalty_bilevel(f, g, jnp.ones(2), jnp.ones(2), **diverging)
    with pytest.raises(ValueError, match="penalty"):
        js.optimizers.penalty_bilevel(f, g, 0.0, 0.0, penalty=-1.0)
    with pytest.raises(ValueError, match="inner_steps"):
        js.optimizers.penalty_bilevel(f, g, 0.0, 0.0, inner_steps=0)
    with pytest.raises(ValueError, match="scalar"):
        js.optimizers.penalty_bilevel(lambda x, y, a: y * jnp.ones(2), g, 0.0, 0.0)
    with pytest.raises(TypeError, match="floating"):
        js.optimizers.penalty_bilevel(f, g, jnp.zeros(2, jnp.int32), 0.0)


def test_stochastic_steps_in_a_users_jitted_loop():
    # F2SA's setting: each step sees a fresh sample of the lower-level problem. Here
    # g = (y - x - noise)^2/2 with zero-mean noise, f = (y - 1)^2/2 + x^2/2: the bilevel
    # solution is still x* = 1/2 (penalty method: lam/(1 + 2 lam)). The user drives
    # PenaltyBilevel.step in lax.scan, passing the sample as `args`.
    f, _ = _toy()
    g = lambda x, y, noise: jnp.sum(0.5 * (y - x - noise) ** 2)
    solver = js.optimizers.PenaltyBilevel(
        penalty=100.0, learning_rate=0.05, inner_learning_rate=0.5, inner_steps=5
    )
    noise = 0.3 * jax.random.normal(jax.random.key(0), (2000, 4))

    @jax.jit
    def run(noise):
        state = solver.init(f, g, jnp.zeros(4), jnp.zeros(4), noise[0])

        def body(state, sample):
            state = solver.step(f, g, sample, state)
            return state, state.x

        return jax.lax.scan(body, state, noise)[1]

    xs = run(noise)
    tail = xs[1000:]  # after the transient, the iterates fluctuate around the fixed point
    fixed_point = 100.0 / 201.0
    assert abs(float(jnp.mean(tail)) - fixed_point) < 0.02
    assert float(jnp.std(tail)) < 0.1
