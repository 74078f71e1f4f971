"""`sample_solution` (result codes, stats, state) and the checks that hold under `jit`."""

import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
from jaxsolve.diffusion._sample import INVALID_GRID
from tests.helpers import run_on_8_devices, standard_gaussian_case

D = js.diffusion
DATA, X_T = standard_gaussian_case()
SCHED = DATA.schedule
MODEL = DATA.model("eps")
TS = D.timesteps(SCHED, 5)

BAD_GRIDS = {
    "above-domain": [1.5, 0.5, 0.1],  # VP schedules live on [0, 1]
    "below-domain": [0.5, 0.1, -0.1],
    "increasing": [0.2, 0.5, 0.1],
    "duplicate": [0.5, 0.5, 0.1],
    "nan": [0.5, float("nan"), 0.1],
}


def test_solution_matches_sample_and_reports_stats_and_state():
    sampler = D.DPMSolverPP(order=2)
    sol = D.sample_solution(sampler, MODEL, X_T, TS)
    np.testing.assert_array_equal(sol.value, D.sample(sampler, MODEL, X_T, TS))
    assert sol.result == js.RESULTS.successful
    assert int(sol.stats["num_steps"]) == 5
    assert int(sol.stats["num_model_evaluations"]) == 5
    # The final state holds the sample and the multistep history: the last data prediction,
    # made at the start of the last step.
    np.testing.assert_array_equal(sampler.output(sol.state), sol.value)

    @jax.jit
    def first_steps(x_T):
        state = sampler.init(MODEL, x_T, TS, None)
        return jax.lax.fori_loop(0, 4, lambda i, s: sampler.step(MODEL, TS, i, s), state).x

    np.testing.assert_allclose(sol.state.history[0], MODEL.x0(first_steps(X_T), TS[-2]), rtol=1e-12)
    heun = D.sample_solution(D.HeunEDM(), MODEL, X_T, TS[:3])
    assert int(heun.stats["num_model_evaluations"]) == 4
    # Under jit the solution is the same (value, code and stats).
    jitted = eqx.filter_jit(D.sample_solution)(sampler, MODEL, X_T, TS)
    np.testing.assert_allclose(jitted.value, sol.value, rtol=1e-13, atol=1e-13)
    assert jitted.result == js.RESULTS.successful
    assert int(jitted.stats["num_steps"]) == 5


def test_nonfinite_sample_gives_its_code_or_raises():
    # Blows up late in sampling, and only where x > 0 (a zero start stays zero and finite).
    model = D.Model(lambda x, t: x * jnp.where(t < 0.3, jnp.exp(800.0 * jnp.sign(x)), 0.0), SCHED)
    sol = D.sample_solution(D.DDIM(), model, X_T, TS, throw=False)
    assert sol.result == js.RESULTS.nonfinite
    assert not np.all(np.isfinite(sol.value))
    # vmapped over a batch of starting points, the code is per lane.
    lanes = jnp.stack([X_T, jnp.zeros_like(X_T)])
    codes = jax.vmap(lambda x: D.sample_solution(D.DDIM(), model, x, TS, throw=False).result)(lanes)
    np.testing.assert_array_equal(codes == js.RESULTS.nonfinite, [True, False])
    with pytest.raises(Exception, match="nonfinite"):
        jax.block_until_ready(jax.jit(lambda x: D.sample(D.DDIM(), model, x, TS))(X_T))


@pytest.mark.parametrize("grid", list(BAD_GRIDS.values()), ids=list(BAD_GRIDS))
def test_invalid_traced_grid_raises_under_jit(grid):
    run = jax.jit(lambda ts: D.sample(D.DDIM(), MODEL, X_T, ts))
    with pytest.raises(Exception, match="strictly decreasing"):
        jax.block_until_ready(run(jnp.asarray(grid)))
    # The same grid passed concretely is rejected in Python, before tracing.
    with pytest.raises(ValueError, match="ts"):
        D.sample(D.DDIM(), MODEL, X_T, jnp.asarray(grid))


def test_invalid_traced_grid_code_with_throw_false():
    run = jax.jit(lambda ts: D.sample_solution(D.DDIM(), MODEL, X_T, ts, throw=False))
    bad = run(jnp.asarray(BAD_GRIDS["above-domain"]))
    assert bad.result == INVALID_GRID and bad.result != js.RESULTS.successful
    assert np.all(np.isnan(bad.value))  # never garbage marked as success
    good = run(jnp.asarray([0.9, 0.5, 0.1]))
    assert good.result == js.RESULTS.successful
    np.testing.assert_allclose(
        good.value, D.sample(D.DDIM(), MODEL, X_T, jnp.asarray([0.9, 0.5, 0.1])), rtol=1e-13
    )
    # Per-sample grids under vmap: only the bad lane is flagged.
    grids = jnp.asarray([[0.9, 0.5, 0.1], [0.2, 0.5, 0.1]])
    codes = jax.vmap(lambda ts: run(ts).result)(grids)
    np.testing.assert_array_equal(codes == js.RESULTS.successful, [True, False])


def test_invert_checks_traced_grid():
    run = jax.jit(lambda ts: D.invert(D.DDIM(), MODEL, X_T, ts))
    with pytest.raises(Exception, match="strictly decreasing"):
        jax.block_until_ready(run(jnp.asarray(BAD_GRIDS["increasing"])))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_wrong_output_shape_is_a_clear_error(jit):
    # A network that reduces over the batch: broadcasting would silently hide it.
    bad = D.Model(lambda x, t: jnp.mean(x, axis=0, keepdims=True), SCHED)
    run = lambda x: D.sample(D.DDIM(), bad, x, TS)  # noqa: E731
    with pytest.raises(ValueError, match=r"shaped like `x` \(4, 3\).*got shape \(1, 3\)"):
        (jax.jit(run) if jit else run)(X_T)

    # With guidance, each branch is checked: the unconditional output (1, 3) would broadcast
    # against the conditional one (4, 3) into a sample of the right shape.
    def cond_fn(x, t, cond):
        return x * cond["weight"] if cond is not None else jnp.mean(x, axis=0, keepdims=True)

    guidance = D.Guidance({"weight": jnp.asarray(0.5)}, None, scale=2.0)
    guided = lambda x: D.sample(D.DDIM(), D.Model(cond_fn, SCHED), x, TS, guidance=guidance)  # noqa: E731
    with pytest.raises(ValueError, match=r"with `uncond`.*got shape \(1, 3\)"):
        (jax.jit(guided) if jit else guided)(X_T)


# Run in a fresh process: 8 host devices, and float32 (x64 off) with strict promotion.
_SHARDING_SCRIPT = textwrap.dedent(
    """
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jaxsolve as js

    jax.config.update("jax_numpy_dtype_promotion", "strict")
    D = js.diffusion
    assert len(jax.devices()) == 8 and not jax.config.jax_enable_x64
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), P("batch"))
    sched = D.VPLinear()
    model = D.Model(lambda x, t: jnp.tanh(x) * (1.0 + t), sched)
    x_T = jax.device_put(jnp.ones((64, 16), jnp.float32), sharding)
    ts = D.timesteps(sched, 4)
    out = jax.jit(lambda x, ts: D.sample(D.DPMSolverPP(), model, x, ts))(x_T, ts)
    assert out.sharding.is_equivalent_to(sharding, out.ndim), out.sharding
    assert out.dtype == jnp.float32
    # float32 end to end with traced hyperparameters and the solution's code.
    run = eqx.filter_jit(
        lambda s, m, x, key: D.sample_solution(s, m, x, ts, key=key, throw=False)
    )
    sol = run(D.DDIM(0.5), D.Model(model.fn, D.VPLinear(beta_min=0.2)), x_T, jax.random.key(0))
    assert sol.value.dtype == jnp.float32 and bool(sol.result == js.RESULTS.successful)
    assert sol.value.sharding.is_equivalent_to(sharding, 2), sol.value.sharding
    # A traced `eta` without a key: its run-time check (eta must be 0) must not gather x_T.
    out = jax.jit(lambda eta, x: D.sample(D.DDIM(eta), model, x, ts))(jnp.float32(0.0), x_T)
    assert out.sharding.is_equivalent_to(sharding, 2), out.sharding
    print("OK")
    """
)


def test_sharded_batch_stays_sharded():
    run_on_8_devices(_SHARDING_SCRIPT, timeout=300)
