import jax
import jax.numpy as jnp
import pytest

from jaxsolve._core import (
    check_floating,
    check_increasing,
    check_option,
    check_positive,
    check_same_structure,
    check_scalar,
    check_shape,
)


def test_messages_name_argument_expected_and_got():
    with pytest.raises(
        ValueError,
        match=r"`y0` must have the shape of the vector field's output \(2,\), got \(3,\)",
    ):
        check_shape("y0", (3,), (2,), "the vector field's output")
    with pytest.raises(
        ValueError, match=r"`levy_area` must be one of 'none', 'space-time'; got 'area'"
    ):
        check_option("levy_area", "area", ("none", "space-time"))
    with pytest.raises(ValueError, match="`tol` must be finite and > 0, got -1.0"):
        check_positive("tol", -1.0)
    with pytest.raises(ValueError, match="`t1` must be greater than `t0`"):
        check_increasing("t0", 1.0, "t1", 0.5)
    with pytest.raises(ValueError, match="`fn` must be a scalar"):
        check_scalar("fn", jnp.ones(2))
    with pytest.raises(TypeError, match="complex input is not supported"):
        check_floating("b", jnp.ones(2, dtype=jnp.complex64))
    with pytest.raises(TypeError, match="floating-point dtype"):
        check_floating("b", jnp.ones(2, dtype=jnp.int32))
    with pytest.raises(ValueError, match="pytree structure"):
        check_same_structure("y0", {"a": 1.0}, (1.0,), "the initial state")


def test_valid_inputs_pass_and_tracers_are_skipped():
    check_shape("y0", (2,), (2,), "x")
    check_option("kind", "lax", ("lax",))
    check_positive("tol", 1e-3)
    check_positive("beta", 0.0, allow_zero=True)
    check_floating("y", {"a": jnp.ones(2), "b": jnp.zeros(())})
    jax.jit(lambda t: check_positive("tol", t) or t)(1.0)
