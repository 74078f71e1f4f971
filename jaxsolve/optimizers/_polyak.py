"""Polyak step sizes with momentum (Wang, Johansson & Zhang, 2023).

The Polyak step `(f(x) - f*) / |g|^2` is the step that minimises the convexity bound on the
distance to a minimiser, `|x - a g - x*|^2 <= |x - x*|^2 - 2a (f - f*) + a^2 |g|^2`. The paper
redoes that derivation for the two forms of momentum, which gives a step size that knows about
the momentum instead of a Polyak step bolted onto it:

- moving-average gradient (ALR-SMAG): `d_k = beta d_{k-1} + g_k`, `x_{k+1} = x_k - a_k d_k` with
  `a_k = min((f - f*) / |d_k|^2, a_max)`;
- heavy ball (ALR-HB): `x_{k+1} = x_k - a_k g_k + beta (x_k - x_{k-1})` with
  `a_k = min((f - f* + beta <g_k, x_k - x_{k-1}>)_+ / |g_k|^2, a_max)`: the same bound, now
  for `|x_k + beta (x_k - x_{k-1}) - a g - x*|^2`, where convexity bounds
  `<g, x_k - x*>` by `f - f*`.

At `momentum=0` both are the stochastic Polyak step SPS_max of Loizou et al. (2021), which is
`optax.polyak_sgd`; the tests check that equality bit for bit.

The transformation is a final equinox module whose hyperparameters are array fields: the
`optax.GradientTransformationExtraArgs` returned holds its bound methods, so it is a pytree
whose leaves are those arrays, and a jitted training step that takes it as an argument does
not recompile for a new momentum or `f_star`.
"""

from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._core import check_option, hyperparameter, is_concrete


class PolyakMomentumState(NamedTuple):
    """State of `polyak_momentum`.

    - `momentum`: `d_{k}` (the moving-average gradient, `variant="smag"`) or the last update
      `x_k - x_{k-1}` (`variant="hb"`), shaped like the parameters.
    - `learning_rate`: the step size `a_k` used by the last update (0 before the first).
    - `count`: the number of updates made.

    **Example:**

    ```python
    tx = js.optimizers.polyak_momentum(momentum=0.5, max_learning_rate=10.0)
    w = jnp.array([1.0, -2.0])
    state = tx.init(w)
    value, grads = jax.value_and_grad(lambda w: jnp.sum(w**2))(w)
    updates, state = tx.update(grads, state, w, value=value)
    # the Polyak step (f - f*) / |g|^2 of the first update, g = 2 w
    assert jnp.allclose(state.learning_rate, value / jnp.sum(grads**2))
    ```
    """

    momentum: Any
    learning_rate: jax.Array
    count: jax.Array


def _require_value(value: Any, name: str) -> None:
    if value is None:
        raise TypeError(
            f"{name}'s update needs the loss at the current parameters: call "
            f"`tx.update(grads, state, params, value=loss)` (a Polyak step is (f - f*) / |g|^2)"
        )


def _check_in_unit_interval(name: str, value: Any) -> None:
    if is_concrete(value):
        number = float(value)
        if not 0.0 <= number < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1), got {number}")


def _checked_traced(value: Any, name: str, ok: Any) -> Any:
    """`value`, with a run-time error attached when it is traced and not `ok` (a value in
    [0, 1) is what every caller checks). The check rides on the scalar itself: carried on the
    gradients, its host callback would gather sharded gradients onto one device."""
    if is_concrete(value):
        return value
    return eqx.error_if(value, ~ok, f"`{name}` must be in [0, 1)")


def _polyak_step(gap: jax.Array, sq_norm: jax.Array, max_learning_rate, eps) -> jax.Array:
    """`min(gap / (sq_norm + eps), max_learning_rate)`, or 0 where the denominator is zero."""
    denominator = sq_norm + jnp.asarray(eps).astype(sq_norm.dtype)
    safe = jnp.where(denominator > 0, denominator, jnp.ones_like(denominator))
    step = jnp.minimum(gap / safe, max_learning_rate.astype(sq_norm.dtype))
    return jnp.where(denominator > 0, step, jnp.zeros_like(step))


class PolyakMomentum(eqx.Module):
    """The transformation behind `polyak_momentum` (use that function; see its docstring)."""

    f_star: jax.Array = hyperparameter(0.0)
    momentum: jax.Array = hyperparameter(0.9)
    max_learning_rate: jax.Array = hyperparameter(1.0)
    eps: jax.Array = hyperparameter(0.0)
    variant: str = eqx.field(static=True, default="smag")

    def init(self, params: Any) -> PolyakMomentumState:
        leaves = jax.tree.leaves(params)
        dtype = jnp.result_type(*leaves) if leaves else jnp.float32
        return PolyakMomentumState(
            momentum=jax.tree.map(jnp.zeros_like, params),
            learning_rate=jnp.zeros((), dtype),
            count=jnp.zeros((), jnp.int32),
        )

    def update(
        self,
        updates: Any,
        state: PolyakMomentumState,
        params: Any = None,
        *,
        value: Any = None,
        **extra_args: Any,
    ) -> tuple[Any, PolyakMomentumState]:
        del params, extra_args
        _require_value(value, "polyak_momentum")
        grads = updates
        beta = self.momentum
        beta = _checked_traced(beta, "momentum", (beta >= 0) & (beta < 1))
        sq_dtype = jnp.result_type(*jax.tree.leaves(grads))
        gap = jnp.asarray(value).astype(sq_dtype) - self.f_star.astype(sq_dtype)
        if self.variant == "smag":
            direction = jax.tree.map(
                lambda d, g: beta.astype(g.dtype) * d + g, state.momentum, grads
            )
            step = _polyak_step(
                gap, optax.tree.norm(direction, squared=True), self.max_learning_rate, self.eps
            )
            new_updates = optax.tree.scale(-step, direction)
            memory = direction
        else:
            previous = state.momentum
            gap = jnp.maximum(gap + beta.astype(sq_dtype) * optax.tree.vdot(grads, previous), 0)
            step = _polyak_step(
                gap, optax.tree.norm(grads, squared=True), self.max_learning_rate, self.eps
            )
            new_updates = jax.tree.map(
                lambda g, u: -step.astype(g.dtype) * g + beta.astype(u.dtype) * u, grads, previous
            )
            memory = new_updates
        new_state = PolyakMomentumState(
            memory, step.astype(state.learning_rate.dtype), state.count + 1
        )
        return new_updates, new_state


def polyak_momentum(
    f_star: float = 0.0,
    momentum: float = 0.9,
    max_learning_rate: float = 1.0,
    *,
    eps: float = 0.0,
    variant: Literal["smag", "hb"] = "smag",
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with momentum and a generalised Polyak step size (ALR-SMAG / ALR-HB).

    The step size is chosen, like Polyak's, to minimise the convexity bound on the distance to
    a minimiser, but for the momentum iteration itself (Wang, Johansson & Zhang, 2023):

    - `variant="smag"` (moving-average gradient, the paper's ALR-SMAG, its stochastic
      method): `d_k = momentum d_{k-1} + g_k`, update `-a_k d_k` with
      `a_k = min((f(x_k) - f_star) / (|d_k|^2 + eps), max_learning_rate)`;
    - `variant="hb"` (heavy ball, ALR-HB): update `-a_k g_k + momentum u_{k-1}` (where
      `u_{k-1} = x_k - x_{k-1}` is the previous update) with
      `a_k = min((f - f_star + momentum <g_k, u_{k-1}>)_+ / (|g_k|^2 + eps), max_learning_rate)`.

    With `momentum=0` both are SPS_max (`optax.polyak_sgd(max_learning_rate, f_min=f_star)`),
    equal to it bit for bit. The step used is kept in `state.learning_rate`.

    **Arguments:**

    - `f_star`: the minimum of the loss, or a lower bound (0 for models that interpolate the
      data, the default).
    - `momentum`: in [0, 1).
    - `max_learning_rate`: the cap `a_max` on the step size (> 0).
    - `eps`: added to the squared norm in the denominator (>= 0).
    - `variant`: `"smag"` or `"hb"`, as above.

    **Returns:** an `optax.GradientTransformationExtraArgs`; its `update` must be called with
    the loss: `tx.update(grads, state, params, value=loss)`. It is a pytree whose leaves are
    the hyperparameters (arrays), so passing it into a jitted step does not recompile when one
    changes.

    **Example:**

    ```python
    import optax

    X = jax.random.normal(jax.random.key(0), (20, 5))
    y = X @ jnp.arange(5.0)  # interpolation: the minimum is 0
    loss = lambda w: 0.5 * jnp.mean((X @ w - y) ** 2)
    tx = js.optimizers.polyak_momentum(f_star=0.0, momentum=0.5)

    @jax.jit
    def step(w, state):
        value, grads = jax.value_and_grad(loss)(w)
        updates, state = tx.update(grads, state, w, value=value)
        return optax.apply_updates(w, updates), state

    w = jnp.zeros(5)
    state = tx.init(w)
    for _ in range(100):
        w, state = step(w, state)
    assert loss(w) < 1e-6 * loss(jnp.zeros(5))
    ```

    **Reference:** X. Wang, M. Johansson, T. Zhang, "Generalized Polyak Step Size for First
    Order Optimization with Momentum", ICML 2023 (arXiv:2305.12939); N. Loizou, S. Vaswani,
    I. Laradji, S. Lacoste-Julien, "Stochastic Polyak Step-size for SGD", AISTATS 2021.
    """
    check_option("variant", variant, ("smag", "hb"))
    _check_in_unit_interval("momentum", momentum)
    for name, number, allow_zero in (
        ("max_learning_rate", max_learning_rate, False),
        ("eps", eps, True),
    ):
        if is_concrete(number):
            number = float(number)
            if not (number > 0 or (allow_zero and number == 0)) or number != number:
                bound = ">= 0" if allow_zero else "> 0"
                raise ValueError(f"`{name}` must be {bound}, got {number}")
    if is_concrete(f_star) and not np.isfinite(float(f_star)):
        raise ValueError(f"`f_star` must be finite, got {f_star}")
    module = PolyakMomentum(f_star, momentum, max_learning_rate, eps, variant)
    return optax.GradientTransformationExtraArgs(module.init, module.update)
