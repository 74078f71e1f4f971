"""Any optax gradient transformation as a minimiser."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._core import RESULTS
from ._base import AbstractMinimiser, hyperparameter


class OptaxMinimizer(AbstractMinimiser):
    """Minimise with an optax `GradientTransformation`: y <- y + updates(grad f(y)).

    Stops when `max|grad f(y)| <= atol + rtol |f(y)|`. The transformation is a static field
    (optax keeps its hyperparameters in closures, so a new optax object recompiles; wrap it in
    `optax.inject_hyperparams` to make them state instead).

    **Arguments:** `optax_transformation`, `rtol`, `atol`.

    **Example:** `minimize(f, OptaxMinimizer(optax.adam(1e-2), rtol=1e-5, atol=1e-5), y0)`.
    """

    optax_transformation: Any = eqx.field(static=True)
    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)

    def __check_init__(self):
        tx = self.optax_transformation
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(
                f"`optax_transformation` must be an optax GradientTransformation, got {type(tx).__name__}"
            )

    def init(self, fn, y, args, options):
        f, grad = jax.value_and_grad(fn)(y, args)
        return (f, grad, self.optax_transformation.init(y))

    def step(self, fn, y, args, options, state):
        import optax

        _, grad, opt_state = state
        # optax mixes its int32 step counts with floats (bias corrections, schedules); let it do so
        # even when the user runs with strict dtype promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = self.optax_transformation.update(grad, opt_state, y)
            y = optax.apply_updates(y, updates)
        f, grad = jax.value_and_grad(fn)(y, args)
        return y, (f, grad, opt_state)

    def terminate(self, fn, y, args, options, state):
        f, grad, _ = state
        tol = self.atol.astype(y.dtype) + self.rtol.astype(y.dtype) * jnp.abs(f)
        return jnp.max(jnp.abs(grad)) <= tol, RESULTS.successful
