"""Any optax gradient transformation as a minimiser."""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._core import as_hyperparameter
from ._base import AbstractMinimiser, hyperparameter
from ._minimisers import minimiser_terminate
from ._termination import GrowthMonitor


class OptaxState(NamedTuple):
    f: Array
    grad: Array
    opt_state: Any
    y_diff: Array
    f_diff: Array
    f_initial: Array
    grad_scale: Array
    monitor: GrowthMonitor


def _as_hyperparameters(value):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"`hyperparams` must be None or a dict, got {type(value).__name__}")
    return {name: as_hyperparameter(v) for name, v in value.items()}


class OptaxMinimizer(AbstractMinimiser):
    """Minimise with an optax `GradientTransformation`: y <- y + updates(grad f(y)).

    Stops on the tests of the other minimisers: `max|grad f(y)| <= atol + rtol max|grad f(y0)|`
    and a small last step in y and f; reports `RESULTS.nonfinite` and `RESULTS.divergence`
    (a learning rate too large for the problem) like them.

    **Recompilation.** The transformation is a static field: optax keeps its hyperparameters in
    Python closures, so a *new optax object* (e.g. `optax.adam(0.2)` after `optax.adam(0.1)`)
    is a new static value and recompiles a jitted caller, and so does a new
    `optax.inject_hyperparams(optax.adam)(learning_rate=0.2)`: `inject_hyperparams` stores the
    hyperparameters in the optimiser state, but their initial values still come from the
    closure. To change a hyperparameter without recompiling, build the injected transformation
    once and pass the values in `hyperparams`: they are array fields of this module and
    overwrite the injected state's hyperparameters at `init`.

    **Arguments:**

    - `optax_transformation`: an optax `GradientTransformation`.
    - `rtol`, `atol`: the stopping tolerances.
    - `hyperparams`: None, or a dict of values for an `optax.inject_hyperparams`
      transformation (e.g. `{"learning_rate": 0.1}`), traced like any array field.

    **Example:**

    ```python
    import optax

    fn = lambda y, c: jnp.sum((y - c) ** 2)
    solver = js.nonlinear.OptaxMinimizer(optax.adam(0.1), rtol=1e-4, atol=1e-4)
    print(js.nonlinear.minimize(fn, solver, jnp.zeros(2), 1.0, max_steps=1000).value)  # ~[1, 1]

    # A learning rate in `hyperparams` is an array: a new value does not recompile.
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
    run = jax.jit(lambda lr: js.nonlinear.minimize(
        fn, js.nonlinear.OptaxMinimizer(adam, hyperparams={"learning_rate": lr}), jnp.zeros(2), 1.0,
        max_steps=1000, throw=False).value)
    print(run(0.1), run(0.05))
    ```
    """

    optax_transformation: Any = eqx.field(static=True)
    rtol: Array = hyperparameter(1e-6)
    atol: Array = hyperparameter(1e-6)
    hyperparams: dict | None = eqx.field(default=None, converter=_as_hyperparameters)

    def __check_init__(self):
        tx = self.optax_transformation
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(
                f"`optax_transformation` must be an optax GradientTransformation, got {type(tx).__name__}"
            )

    def _init_opt_state(self, y):
        opt_state = self.optax_transformation.init(y)
        if self.hyperparams is None:
            return opt_state
        injected = getattr(opt_state, "hyperparams", None)
        if not isinstance(injected, dict):
            raise TypeError(
                "`hyperparams` needs an `optax.inject_hyperparams(...)` transformation (whose "
                f"state has a `hyperparams` dict); got state {type(opt_state).__name__}"
            )
        unknown = set(self.hyperparams) - set(injected)
        if unknown:
            raise ValueError(
                f"`hyperparams` names {sorted(unknown)}, which the transformation does not "
                f"inject; it injects {sorted(injected)}"
            )
        new = dict(injected)
        for name, value in self.hyperparams.items():
            new[name] = jnp.asarray(value, jnp.result_type(injected[name]))
        return opt_state._replace(hyperparams=new)

    def init(self, fn, y, args, options):
        f, grad = jax.value_and_grad(fn)(y, args)
        grad_scale = jnp.max(jnp.abs(grad))
        return OptaxState(
            f=f,
            grad=grad,
            opt_state=self._init_opt_state(y),
            y_diff=jnp.full_like(y, jnp.inf),
            f_diff=jnp.asarray(jnp.inf, f.dtype),
            f_initial=f,
            grad_scale=grad_scale,
            monitor=GrowthMonitor.start(jnp.abs(f) + grad_scale),
        )

    def step(self, fn, y, args, options, state):
        import optax

        # optax mixes its int32 step counts with floats (bias corrections, schedules); let it do so
        # even when the user runs with strict dtype promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = self.optax_transformation.update(state.grad, state.opt_state, y)
            y_new = optax.apply_updates(y, updates).astype(y.dtype)
        f, grad = jax.value_and_grad(fn)(y_new, args)
        return y_new, state._replace(
            f=f,
            grad=grad,
            opt_state=opt_state,
            y_diff=y_new - y,
            f_diff=f - state.f,
            monitor=state.monitor.update(jnp.abs(f - state.f_initial)),
        )

    def terminate(self, fn, y, args, options, state):
        return minimiser_terminate(self, y, state.f, state.grad, state, memoryless=False)
