"""SANIA: the Polyak step in the metric of a diagonal preconditioner (Abdukhakimov et al., 2023).

SANIA's first-order step is the closest point, in the norm `|.|_B` of a preconditioner `B`, to
the current parameters on the zero set of the loss's linearisation (the interpolation
equation `f(w_k) + <g_k, w - w_k> = f*`):

    w_{k+1} = w_k - (f(w_k) - f*) / <g_k, B_k^{-1} g_k> * B_k^{-1} g_k.

With `B = I` it is the stochastic Polyak step. With the diagonal preconditioners of the paper
built from squared gradients *without* the square root of AdaGrad and Adam (AdaGrad-SQR:
`B_k = diag(sum_j g_j^2)`, Adam-SQR: `B_k = diag(v_k)`, an exponential moving average of
`g^2`), the method is invariant to a rescaling of the parameters: with `w = D u` for a fixed diagonal `D`, the gradients become
`D g`, `B` becomes `D B D`, so `B^{-1} g` becomes `D^{-1} B^{-1} g` (exactly the change of
variables) and `<g, B^{-1} g>` does not change; the loss trajectory is the same. For a linear
model that is invariance to rescaling the features. (AdaGrad's and Adam's square roots break
it.) The step is also unchanged when `B` is multiplied by a constant, so the bias correction
of the moving averages does not matter. A Hutchinson estimate of the Hessian's diagonal is
invariant in expectation only: one sample `z * (D H D z)` is not `D^2 (z * H z)` unless `H` is
diagonal.
"""

from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._core import check_option, hyperparameter, is_concrete
from ._polyak import _check_in_unit_interval, _checked_traced, _polyak_step, _require_value

_PRECONDITIONERS = ("adagrad_sqr", "adam_sqr", "hutchinson", "identity")


class SaniaState(NamedTuple):
    """State of `sania`.

    - `diagonal`: the preconditioner's raw diagonal, shaped like the parameters (sum or
      average of squared gradients, or the Hutchinson Hessian-diagonal average).
    - `learning_rate`: the Polyak step `(f - f*) / <g, B^{-1} g>` of the last update.
    - `count`: updates made.
    - `key`: the key for Hutchinson's Rademacher vectors (unused otherwise).

    **Example:**

    ```python
    tx = js.optimizers.sania("adagrad_sqr")
    w = jnp.array([1.0, -2.0])
    state = tx.init(w)
    value, grads = jax.value_and_grad(lambda w: jnp.sum(w**2))(w)
    updates, state = tx.update(grads, state, w, value=value)
    assert jnp.allclose(state.diagonal, grads**2)  # AdaGrad-SQR: the sum of squared gradients
    # B^{-1} g = 1/g here, so <g, B^{-1} g> = 2 and the Polyak step is f / 2
    assert jnp.allclose(state.learning_rate, value / 2)
    ```
    """

    diagonal: Any
    learning_rate: jax.Array
    count: jax.Array
    key: jax.Array


def _rademacher(key: jax.Array, tree: Any) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [jax.random.rademacher(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)],
    )


class Sania(eqx.Module):
    """The transformation behind `sania` (use that function; see its docstring)."""

    f_star: jax.Array = hyperparameter(0.0)
    b2: jax.Array = hyperparameter(0.999)
    eps: jax.Array = hyperparameter(0.0)
    scaling: jax.Array = hyperparameter(1.0)
    preconditioner: str = eqx.field(static=True, default="adagrad_sqr")
    key: jax.Array | None = None

    def init(self, params: Any) -> SaniaState:
        leaves = jax.tree.leaves(params)
        dtype = jnp.result_type(*leaves) if leaves else jnp.float32
        key = self.key if self.key is not None else jax.random.key(0)
        return SaniaState(
            diagonal=jax.tree.map(jnp.zeros_like, params),
            learning_rate=jnp.zeros((), dtype),
            count=jnp.zeros((), jnp.int32),
            key=key,
        )

    def _diagonal(self, grads, state, params, value_fn):
        """The new raw diagonal of B, and the new key."""
        first = state.count == 0
        key = state.key
        if self.preconditioner == "adagrad_sqr":
            new = jax.tree.map(lambda b, g: b + g * g, state.diagonal, grads)
        elif self.preconditioner == "adam_sqr":
            # the first average is g^2 itself: a constant factor does not change the step
            new = jax.tree.map(
                lambda b, g: (
                    jnp.where(first, g * g, self.b2.astype(g.dtype) * b)
                    + jnp.where(first, 0, 1 - self.b2.astype(g.dtype)) * g * g
                ),
                state.diagonal,
                grads,
            )
        elif self.preconditioner == "hutchinson":
            if value_fn is None or params is None:
                raise TypeError(
                    "sania(preconditioner='hutchinson') needs Hessian-vector products: call "
                    "`tx.update(grads, state, params, value=loss, value_fn=fn)` with "
                    "fn(params) -> the same loss"
                )
            key, subkey = jax.random.split(key)
            z = _rademacher(subkey, params)
            _, hz = jax.jvp(jax.grad(value_fn), (params,), (z,))
            sample = jax.tree.map(lambda zi, hzi: zi * hzi, z, hz)
            new = jax.tree.map(
                lambda b, s: (
                    jnp.where(first, s, self.b2.astype(s.dtype) * b)
                    + jnp.where(first, 0, 1 - self.b2.astype(s.dtype)) * s
                ),
                state.diagonal,
                sample,
            )
        else:
            new = jax.tree.map(jnp.ones_like, grads)
        return new, key

    def update(
        self,
        updates: Any,
        state: SaniaState,
        params: Any = None,
        *,
        value: Any = None,
        value_fn: Any = None,
        **extra_args: Any,
    ) -> tuple[Any, SaniaState]:
        del extra_args
        _require_value(value, "sania")
        grads = updates
        b2 = _checked_traced(self.b2, "b2", (self.b2 >= 0) & (self.b2 < 1))
        this = self if b2 is self.b2 else eqx.tree_at(lambda s: s.b2, self, b2)
        diagonal, key = this._diagonal(grads, state, params, value_fn)

        def precondition(b, g):
            # |B| for Hutchinson's (possibly indefinite) estimate, floored at eps; coordinates
            # where B is zero (no gradient seen yet) do not move.
            b = jnp.maximum(jnp.abs(b), self.eps.astype(b.dtype))
            return jnp.where(b > 0, g / jnp.where(b > 0, b, 1), 0)

        direction = jax.tree.map(precondition, diagonal, grads)
        sq_dtype = jnp.result_type(*jax.tree.leaves(grads))
        gap = jnp.asarray(value).astype(sq_dtype) - self.f_star.astype(sq_dtype)
        metric = optax.tree.vdot(grads, direction)
        step = self.scaling.astype(sq_dtype) * _polyak_step(
            gap, metric, jnp.asarray(jnp.inf, sq_dtype), jnp.zeros((), sq_dtype)
        )
        new_updates = optax.tree.scale(-step, direction)
        return new_updates, SaniaState(diagonal, step, state.count + 1, key)


def sania(
    preconditioner: Literal["adagrad_sqr", "adam_sqr", "hutchinson", "identity"] = "adagrad_sqr",
    f_star: float = 0.0,
    *,
    b2: float = 0.999,
    eps: float = 0.0,
    scaling: float = 1.0,
    key: jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SANIA: a Polyak step size in the metric of a diagonal preconditioner.

    Each update is `-a_k B_k^{-1} g_k` with `a_k = scaling (f(w_k) - f_star) / <g_k, B_k^{-1} g_k>`:
    the step onto the zero set of the linearised loss that is shortest in the norm of `B_k`
    (Abdukhakimov et al., 2023). No learning rate to tune, and with the squared-gradient
    preconditioners the iterates are invariant to rescaling the parameters (for a linear
    model: the features) by a diagonal matrix.

    `B_k = diag(b_k)` floored at `eps`, where `b_k` is, for `preconditioner=`

    - `"adagrad_sqr"`: `sum_{j<=k} g_j^2` (AdaGrad without its square root);
    - `"adam_sqr"`: the moving average `b2 b_{k-1} + (1 - b2) g_k^2` (Adam's second moment
      without the square root);
    - `"hutchinson"`: the absolute value of the moving average (factor `b2`) of `z * (H z)`,
      Hutchinson's estimate of the Hessian's diagonal with a Rademacher `z` drawn from `key`;
      `update` then needs `value_fn=` (the loss as a function of the parameters) for the
      Hessian-vector product;
    - `"identity"`: 1 (the plain stochastic Polyak step, without a cap).

    Coordinates whose `b_k` is 0 do not move.

    **Arguments:**

    - `preconditioner`: one of the above.
    - `f_star`: the minimum of the loss, or a lower bound (0 for interpolating models).
    - `b2`: the moving-average factor, in [0, 1) (`"adam_sqr"`, `"hutchinson"`).
    - `eps`: a floor on `b_k` (>= 0). Any `eps > 0` breaks exact scale invariance. With
      `"adagrad_sqr"` the first step is `-(f - f_star) / (d g_i)` per coordinate: a coordinate
      with a tiny gradient moves far. On problems that are not interpolating (`f_star` below
      the true minimum) or whose gradients have near-zero coordinates this can diverge (a
      (64, 16) least-squares fit with a non-zero optimum does); a small `eps` or `scaling < 1`
      tames it.
    - `scaling`: a factor on the Polyak step (> 0; 1 is the method as published).
    - `key`: a `jax.random` key for `"hutchinson"` (required there).

    **Returns:** an `optax.GradientTransformationExtraArgs` whose `update` takes the loss:
    `tx.update(grads, state, params, value=loss)` (and `value_fn=` for `"hutchinson"`). The
    Polyak step used is kept in `state.learning_rate`.

    **Example** (the same loss trajectory when one feature is scaled by 1000):

    ```python
    import optax

    X = jax.random.normal(jax.random.key(0), (20, 4))
    y = X @ jnp.array([1.0, -2.0, 0.5, 3.0])

    def run(X):
        loss = lambda w: 0.5 * jnp.mean((X @ w - y) ** 2)
        tx, w = js.optimizers.sania("adagrad_sqr"), jnp.zeros(4)
        state, losses = tx.init(w), []
        for _ in range(20):
            value, grads = jax.value_and_grad(loss)(w)
            updates, state = tx.update(grads, state, w, value=value)
            w, losses = optax.apply_updates(w, updates), losses + [value]
        return jnp.stack(losses)

    scaled = X * jnp.array([1.0, 1000.0, 1.0, 0.01])
    assert jnp.allclose(run(X), run(scaled), rtol=1e-3)
    ```

    **Reference:** F. Abdukhakimov, C. Xiang, D. Kamzolov, R. Gower, M. Takáč, "SANIA:
    Polyak-type Optimization Framework Leads to Scale Invariant Stochastic Algorithms",
    arXiv:2312.17369, 2023.
    """
    check_option("preconditioner", preconditioner, _PRECONDITIONERS)
    _check_in_unit_interval("b2", b2)
    for name, number, allow_zero in (("eps", eps, True), ("scaling", scaling, False)):
        if is_concrete(number):
            number = float(number)
            if not (number > 0 or (allow_zero and number == 0)) or not np.isfinite(number):
                bound = ">= 0" if allow_zero else "> 0"
                raise ValueError(f"`{name}` must be finite and {bound}, got {number}")
    if is_concrete(f_star) and not np.isfinite(float(f_star)):
        raise ValueError(f"`f_star` must be finite, got {f_star}")
    if preconditioner == "hutchinson" and key is None:
        raise ValueError("sania(preconditioner='hutchinson') needs `key=` (a jax.random key)")
    module = Sania(f_star, b2, eps, scaling, preconditioner, key)
    return optax.GradientTransformationExtraArgs(module.init, module.update)
