import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import jaxsolve as js
from jaxsolve._core import check_result


def test_results_exposed_and_comparable():
    assert js.RESULTS is js._core.RESULTS
    ok = js.RESULTS.successful
    assert bool(ok == js.RESULTS.successful)
    assert not bool(js.RESULTS.max_steps_reached == js.RESULTS.successful)
    for name in (
        "max_steps_reached",
        "nonfinite",
        "divergence",
        "linear_solve_failed",
        "singular",
        "dt_underflow",
    ):
        assert hasattr(js.RESULTS, name)


@eqx.filter_jit
def _finish(value, result, throw):
    return check_result(value, result, throw, "jaxsolve.testing.entry")


def test_throw_true_raises_with_code_and_entry_point():
    with pytest.raises(Exception, match=r"jaxsolve\.testing\.entry failed with result `singular`"):
        jax.block_until_ready(_finish(jnp.ones(3), js.RESULTS.singular, True))


def test_throw_true_passes_on_success():
    out = _finish(jnp.ones(3), js.RESULTS.successful, True)
    assert jnp.array_equal(out, jnp.ones(3))


def test_throw_false_returns_value_and_code():
    value = jnp.arange(3.0)
    out = _finish(value, js.RESULTS.max_steps_reached, False)
    assert jnp.array_equal(out, value)


def test_throw_under_vmap_reports_failing_lane():
    def entry(value, bad):
        result = js.RESULTS.where(bad, js.RESULTS.nonfinite, js.RESULTS.successful)
        return check_result(value, result, True, "jaxsolve.testing.vmapped")

    f = eqx.filter_jit(jax.vmap(entry))
    assert jnp.array_equal(f(jnp.ones(2), jnp.array([False, False])), jnp.ones(2))
    with pytest.raises(Exception, match="nonfinite"):
        jax.block_until_ready(f(jnp.ones(2), jnp.array([False, True])))
