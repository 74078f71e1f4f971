"""The one hyperparameter convention (DESIGN.md section 2).

A float hyperparameter of a solver, sampler, schedule or controller is an equinox field stored
as a (weakly typed) array. Equinox's filtered transformations and plain `jax.jit` then trace it
like any other array leaf: a module built with a new value has the same static structure, so the
jitted caller does not recompile. A Python float stored as-is would be static under
`eqx.filter_jit` (a new value, a new compile), which is the fault this convention exists to
avoid.
"""

from typing import Any

import equinox as eqx
import jax.numpy as jnp


def as_hyperparameter(value: Any) -> Any:
    """`value` as a JAX array, unless it is `None` or already an array (or tracer).

    Python ints and floats become weakly typed arrays, so they adopt the dtype of whatever they
    multiply (float32 stays float32).
    """
    if value is None or isinstance(value, jnp.ndarray):
        return value
    if isinstance(value, bool):
        raise TypeError(f"a float hyperparameter cannot be a bool, got {value!r}")
    return jnp.asarray(value)


def hyperparameter(default: Any = None, **kwargs: Any) -> Any:
    """A float hyperparameter field: `eqx.field(default=..., converter=as_hyperparameter)`.

    **Example:**

    `Damped(0.5)` and `Damped(0.7)` passed to one jitted function share its compilation:

    ```python
    from jaxsolve._core import hyperparameter

    class Damped(eqx.Module):
        beta: jax.Array = hyperparameter(0.9)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def damp(module, x):
        return module.beta * x

    assert damp(Damped(0.5), jnp.ones(())) == 0.5
    assert jnp.allclose(damp(Damped(0.7), jnp.ones(())), 0.7)  # no new trace
    ```
    """
    return eqx.field(default=default, converter=as_hyperparameter, **kwargs)
