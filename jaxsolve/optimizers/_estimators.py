"""Gradient estimators that need no backpropagation: zeroth-order (function values only) and
forward-mode (one Jacobian-vector product per random direction).

Three estimators of the gradient of a scalar `fn(params, *args)` on pytree `params`:

- `TwoPoint`: the randomised two-point (central-difference) estimator along Gaussian or
  spherical directions, averaged over `num_directions` draws (Nesterov & Spokoiny 2017; the
  MeZO/ZO2 memory trick of regenerating each direction from the key).
- `Coordinate`: the coordinate-wise central difference (CGE), optionally on a sparse boolean
  mask (DeepZero).
- `ForwardGradient`: `(grad f . v) v` for Gaussian tangents `v`, by `jax.jvp` (Baydin et al.).

Memory. A random direction is as large as `params`. The estimators never hold more than one:
direction `i` is regenerated from `fold_in(key, i)` inside a `lax.fori_loop` that accumulates
the estimate, so the compiled temporary memory does not grow with `num_directions` (tested with
`memory_analysis`). This is what makes zeroth-order fine-tuning of large models fit in the memory
of inference (Malladi et al., "Fine-Tuning Language Models with Just Forward Passes", 2023).

Driving an optax optimiser. An estimate is a gradient pytree, so it goes straight into any
`optax.GradientTransformation`; see `estimate_gradient`.
"""

import abc
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from .._core import check_floating, check_option, hyperparameter, is_concrete


def _check_num_directions(num_directions: Any) -> None:
    if (
        not isinstance(num_directions, int | np.integer)
        or isinstance(num_directions, bool)
        or num_directions < 1
    ):
        raise ValueError(f"`num_directions` must be a positive int, got {num_directions!r}")


def _check_smoothing(smoothing: Any) -> None:
    if is_concrete(smoothing):
        value = float(smoothing)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"`smoothing` must be finite and > 0, got {value}")


def _gaussian_direction(key, diff):
    """A standard normal pytree shaped like `diff`.

    One draw for all leaves of a dtype, split into the leaves: each `jax.random.normal` costs
    seconds of compile time on CPU, so a draw per leaf would make a many-leaf model slow to
    compile."""
    leaves, treedef = jax.tree.flatten(diff)
    dtypes = sorted({str(jnp.result_type(x)) for x in leaves})
    noise = [None] * len(leaves)
    for index, dtype in enumerate(dtypes):
        positions = [i for i, x in enumerate(leaves) if str(jnp.result_type(x)) == dtype]
        sizes = [int(np.prod(jnp.shape(leaves[i]))) for i in positions]
        # one dtype (the usual case): exactly jax.random.normal(key, ...) on the flat vector
        group_key = key if len(dtypes) == 1 else jax.random.fold_in(key, index)
        draw = jax.random.normal(group_key, (sum(sizes),), dtype)
        offsets = np.cumsum([0] + sizes)
        for i, start, stop in zip(positions, offsets[:-1], offsets[1:]):
            noise[i] = draw[start:stop].reshape(jnp.shape(leaves[i]))
    return jax.tree.unflatten(treedef, noise)


def _tree_sum_squares(tree):
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def _axpy(scale, direction, tree):
    """tree + scale * direction, leaf by leaf in each leaf's dtype."""
    return jax.tree.map(lambda x, u: x + jnp.asarray(scale, x.dtype) * u, tree, direction)


def _split_params(params):
    """(floating-point array leaves, the rest): the estimate is taken over the first."""
    return eqx.partition(params, eqx.is_inexact_array)


def _as_flat(diff):
    """`(x, unflatten)`: the leaves of `diff` as one vector when they share a dtype (one fused
    perturbation per direction instead of one per leaf), else `diff` itself."""
    leaves = jax.tree.leaves(diff)
    if len(leaves) > 1 and len({jnp.result_type(x) for x in leaves}) == 1:
        return ravel_pytree(diff)
    return diff, lambda x: x


def _size(diff) -> int:
    return sum(int(np.prod(jnp.shape(x))) for x in jax.tree.leaves(diff))


class AbstractGradientEstimator(eqx.Module):
    """The base class of gradient estimators: subclass it to write your own.

    A gradient estimator implements `estimate(fn, params, key, args) -> (value, grad)`, where
    `fn(params, *args)` is a scalar, `params` is a pytree whose floating-point array leaves are
    the variables (other leaves are held fixed and get `None` in `grad`, as with
    `eqx.filter_grad`), and `value == fn(params, *args)`. `num_evaluations(params)` says how many
    calls of `fn` (or JVPs) one estimate makes. `js.optimizers.estimate_gradient` validates the
    inputs and calls `estimate`.

    **Example** (an estimator that returns the exact gradient, by backprop):

    ```python
    class Exact(js.optimizers.AbstractGradientEstimator):
        def estimate(self, fn, params, key, args):
            return jax.value_and_grad(fn)(params, *args)

        def num_evaluations(self, params):
            return 1

    value, grad = js.optimizers.estimate_gradient(
        lambda x: jnp.sum(x**2), Exact(), jnp.ones(3), jax.random.key(0)
    )
    assert jnp.allclose(grad, 2.0)
    ```
    """

    @abc.abstractmethod
    def estimate(
        self, fn: Callable[..., Array], params: PyTree, key: Any, args: tuple
    ) -> tuple[Array, PyTree]:
        """Return `(fn(params, *args), estimated gradient)`."""

    @abc.abstractmethod
    def num_evaluations(self, params: PyTree) -> int:
        """How many evaluations of `fn` (or Jacobian-vector products) one estimate costs."""


class TwoPoint(AbstractGradientEstimator):
    """The randomised two-point (central-difference) zeroth-order gradient estimator.

    With directions `u_1, ..., u_q` (`q = num_directions`) and smoothing `mu`,

        g = (c / q) sum_i [f(x + mu u_i) - f(x - mu u_i)] / (2 mu) u_i,

    where `u_i ~ N(0, I)` and `c = 1` (`distribution="gaussian"`), or `u_i` is uniform on the
    unit sphere of the `d` variables and `c = d` (`"sphere"`). Both are unbiased estimates of the
    gradient of a smoothed `f`; for a quadratic `f` the central difference is exact along `u`,
    so `E[g] = grad f(x)` exactly, for any `mu`. For Gaussian directions the covariance of one
    draw is `|grad f|^2 I + grad f grad f^T` (total variance `(d + 1)|grad f|^2`), divided by
    `q` for the average.

    Each estimate costs `2 q + 1` evaluations of `f` (the `+ 1` is the returned value). Direction
    `i` is regenerated from `jax.random.fold_in(key, i)` inside a loop, never stored with the
    others: memory does not grow with `q` (the MeZO / ZO2 property).

    **Arguments:**

    - `num_directions`: `q`, a positive Python int (static: a new value compiles anew).
    - `smoothing`: `mu > 0`, an array field (a new value does not recompile).
    - `distribution`: `"gaussian"` or `"sphere"`.

    **Example:**

    ```python
    fn = lambda x, A: 0.5 * x @ A @ x
    A, x = jnp.diag(jnp.array([1.0, 2.0, 3.0])), jnp.ones(3)
    est = js.optimizers.TwoPoint(num_directions=64, smoothing=1e-3)
    value, grad = js.optimizers.estimate_gradient(fn, est, x, jax.random.key(0), A)
    print(value, grad)  # 3.0, a noisy estimate of [1, 2, 3]
    ```

    References: Nesterov & Spokoiny, "Random gradient-free minimization of convex functions",
    Found. Comput. Math. 2017; Duchi et al., "Optimal rates for zero-order convex optimization:
    the power of two function evaluations", IEEE Trans. Inf. Theory 2015; Malladi et al.,
    "Fine-Tuning Language Models with Just Forward Passes" (MeZO), NeurIPS 2023; Wang et al.,
    "ZO2: Scalable Zeroth-Order Fine-Tuning for Extremely Large Language Models with Limited GPU
    Memory", 2025.
    """

    num_directions: int = eqx.field(static=True, default=1)
    smoothing: Array = hyperparameter(1e-3)
    distribution: Literal["gaussian", "sphere"] = eqx.field(static=True, default="gaussian")

    def __check_init__(self):
        _check_num_directions(self.num_directions)
        _check_smoothing(self.smoothing)
        check_option("distribution", self.distribution, ("gaussian", "sphere"))

    def num_evaluations(self, params: PyTree) -> int:
        return 2 * self.num_directions + 1

    def estimate(self, fn, params, key, args):
        diff, static = _split_params(params)
        x, unflatten = _as_flat(diff)
        f = lambda x: fn(eqx.combine(unflatten(x), static), *args)
        value = f(x)
        mu = jnp.asarray(self.smoothing, value.dtype)
        dim = _size(diff)

        def direction(index):
            u = _gaussian_direction(jax.random.fold_in(key, index), x)
            if self.distribution == "sphere":
                norm = jnp.sqrt(_tree_sum_squares(u))
                u = jax.tree.map(lambda x: x / norm.astype(x.dtype), u)
            return u

        def accumulate(index, total):
            u = direction(index)
            slope = (f(_axpy(mu, u, x)) - f(_axpy(-mu, u, x))) / (2 * mu)
            if self.distribution == "sphere":
                slope = slope * dim
            return _axpy(slope, u, total)

        zeros = jax.tree.map(jnp.zeros_like, x)
        total = lax.fori_loop(0, self.num_directions, accumulate, zeros)
        return value, unflatten(jax.tree.map(lambda g: g / self.num_directions, total))


class Coordinate(AbstractGradientEstimator):
    """The coordinate-wise gradient estimator (CGE): one central difference per coordinate.

        g_j = [f(x + mu e_j) - f(x - mu e_j)] / (2 mu)   for each coordinate j in the mask,
        g_j = 0                                            elsewhere.

    Deterministic (the key is not used) and exact for quadratics up to rounding; it costs
    `2 m + 1` evaluations, `m` the number of coordinates in the mask (all of them by default).
    DeepZero shows that CGE on a sparse mask (sparse CGE) trains deep networks by zeroth-order
    optimisation at a query cost that the sparsity controls.

    **Arguments:**

    - `smoothing`: `mu > 0`, an array field (a new value does not recompile).
    - `mask`: `None` (every coordinate) or a pytree with the structure of `params` whose leaves
      are bools or boolean arrays broadcastable to the matching leaf of `params`
      (`{"w": True, "b": False}` selects whole leaves; a boolean array selects entries).

    When the mask is a concrete array (the usual case: built outside `jit`), the loop visits only
    the selected coordinates; when it is traced (passed into `jit` as an argument), it visits
    every coordinate and skips the unselected ones with `lax.cond` (same result, more loop steps).

    **Example:**

    ```python
    fn = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(jnp.sin(p["b"]))
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.zeros(3)}
    est = js.optimizers.Coordinate(smoothing=1e-4, mask={"w": jnp.array([True, False]), "b": True})
    value, grad = js.optimizers.estimate_gradient(fn, est, params, None)
    print(grad["w"], grad["b"])  # [2, 0], [1, 1, 1] (up to O(mu^2))
    ```

    Reference: Chen et al., "DeepZero: Scaling up Zeroth-Order Optimization for Deep Model
    Training", ICLR 2024 (sparse CGE); Kiefer & Wolfowitz, "Stochastic estimation of the
    maximum of a regression function", 1952 (coordinate differences).
    """

    smoothing: Array = hyperparameter(1e-3)
    mask: PyTree | None = None

    def __check_init__(self):
        _check_smoothing(self.smoothing)
        if self.mask is not None:
            for leaf in jax.tree.leaves(self.mask):
                if not jnp.issubdtype(jnp.result_type(leaf), jnp.bool_):
                    raise TypeError(
                        f"`mask` must have boolean leaves, got a leaf of dtype "
                        f"{jnp.result_type(leaf)}"
                    )

    def _leaf_masks(self, params):
        """The mask as one boolean array per floating leaf of `params` (None: all coordinates)."""
        diff, _ = _split_params(params)
        if self.mask is None:
            return None
        try:
            masks = jax.tree.map(
                lambda m, x: None if x is None else jnp.broadcast_to(m, jnp.shape(x)),
                self.mask,
                diff,
                is_leaf=lambda x: x is None,
            )
        except ValueError as error:
            raise ValueError(
                "`mask` must have the pytree structure of `params` "
                f"({jax.tree.structure(params)}), with leaves broadcastable to its leaves; "
                f"got {jax.tree.structure(self.mask)} ({error})"
            ) from None
        return masks

    def num_evaluations(self, params: PyTree) -> int:
        diff, _ = _split_params(params)
        if self.mask is None:
            return 2 * _size(diff) + 1
        masks = jax.tree.leaves(self._leaf_masks(params))
        if not all(is_concrete(m) for m in masks):
            raise ValueError("`num_evaluations` needs a concrete (non-traced) `mask`")
        return 2 * sum(int(np.count_nonzero(np.asarray(m))) for m in masks) + 1

    def estimate(self, fn, params, key, args):
        del key
        diff, static = _split_params(params)
        masks = self._leaf_masks(params)
        f = lambda d: fn(eqx.combine(d, static), *args)
        value = f(diff)
        mu = jnp.asarray(self.smoothing, value.dtype)
        leaves, treedef = jax.tree.flatten(diff)
        if masks is None:
            mask_leaves = [None] * len(leaves)
        else:
            mask_leaves = _align(jax.tree.leaves(masks), leaves)
        grads = [
            _coordinate_leaf(f, leaves, treedef, position, mask, mu)
            for position, mask in enumerate(mask_leaves)
        ]
        return value, jax.tree.unflatten(treedef, grads)


def _align(mask_leaves, leaves):
    """One mask (or None) per floating leaf, in the order of `jax.tree.leaves(diff)`."""
    if len(mask_leaves) != len(leaves):
        raise ValueError(
            f"`mask` selects {len(mask_leaves)} leaves but `params` has {len(leaves)} "
            "floating-point leaves"
        )
    return mask_leaves


def _coordinate_leaf(f, leaves, treedef, position, mask, mu):
    """The central differences of `f` along the coordinates of leaf `position` in `mask`."""
    leaf = leaves[position]
    shape, dtype = jnp.shape(leaf), jnp.result_type(leaf)
    flat = jnp.ravel(leaf)

    def difference(index):
        def shifted(delta):
            moved = flat.at[index].add(jnp.asarray(delta, dtype)).reshape(shape)
            new_leaves = leaves[:position] + [moved] + leaves[position + 1 :]
            return f(jax.tree.unflatten(treedef, new_leaves))

        return ((shifted(mu) - shifted(-mu)) / (2 * mu)).astype(dtype)

    zeros = jnp.zeros_like(flat)
    if mask is None or is_concrete(mask):
        indices = np.arange(flat.size) if mask is None else np.flatnonzero(np.asarray(mask))
        if indices.size == 0:
            return jnp.zeros(shape, dtype)
        indices = jnp.asarray(indices)

        def body(j, grad):
            index = indices[j]
            return grad.at[index].set(difference(index))

        return lax.fori_loop(0, int(indices.size), body, zeros).reshape(shape)

    flat_mask = jnp.ravel(mask)

    def traced_body(index, grad):
        value = lax.cond(flat_mask[index], difference, lambda i: jnp.zeros((), dtype), index)
        return grad.at[index].set(value)

    return lax.fori_loop(0, flat.size, traced_body, zeros).reshape(shape)


class ForwardGradient(AbstractGradientEstimator):
    """The forward gradient: `(grad f . v) v` for Gaussian tangents `v`, by `jax.jvp`.

        g = (1 / q) sum_i (grad f(x) . v_i) v_i,   v_i ~ N(0, I),

    an unbiased estimate of `grad f(x)` (for every `f`, not only quadratics) with covariance
    `(|grad f|^2 I + grad f grad f^T) / q`. Each directional derivative is one forward-mode
    Jacobian-vector product (`jax.jvp`): no backward pass, no stored activations. The returned
    value is the primal output of the JVPs (no extra evaluation). Tangents are regenerated from
    `fold_in(key, i)` inside a loop, one at a time.

    **Arguments:**

    - `num_directions`: `q`, a positive Python int (static).

    **Example:**

    ```python
    est = js.optimizers.ForwardGradient(num_directions=8)
    value, grad = js.optimizers.estimate_gradient(
        lambda x: jnp.sum(jnp.sin(x)), est, jnp.zeros(4), jax.random.key(0)
    )
    print(value, grad)  # 0.0, a noisy estimate of [1, 1, 1, 1]
    ```

    Reference: Baydin, Pearlmutter, Syme, Wood & Torr, "Gradients without Backpropagation",
    2022 (arXiv:2202.08587).
    """

    num_directions: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        _check_num_directions(self.num_directions)

    def num_evaluations(self, params: PyTree) -> int:
        return self.num_directions

    def estimate(self, fn, params, key, args):
        diff, static = _split_params(params)
        x, unflatten = _as_flat(diff)
        f = lambda x: fn(eqx.combine(unflatten(x), static), *args)
        out = jax.eval_shape(f, x)

        def accumulate(index, carry):
            total, _ = carry
            v = _gaussian_direction(jax.random.fold_in(key, index), x)
            value, slope = jax.jvp(f, (x,), (v,))
            return _axpy(slope, v, total), value

        zeros = jax.tree.map(jnp.zeros_like, x)
        init = (zeros, jnp.zeros(out.shape, out.dtype))
        total, value = lax.fori_loop(0, self.num_directions, accumulate, init)
        return value, unflatten(jax.tree.map(lambda g: g / self.num_directions, total))


def estimate_gradient(
    fn: Callable[..., Array],
    estimator: AbstractGradientEstimator,
    params: PyTree,
    key: Any,
    *args: Any,
) -> tuple[Array, PyTree]:
    """Estimate the gradient of the scalar `fn(params, *args)` with respect to `params`.

    **Arguments:**

    - `fn`: `fn(params, *args) -> scalar` (a floating-point array of shape ()).
    - `estimator`: `TwoPoint(...)`, `Coordinate(...)`, `ForwardGradient(...)` or your own
      `AbstractGradientEstimator`.
    - `params`: a pytree; its floating-point array leaves are the variables (other leaves, such
      as an equinox module's activation functions, are held fixed and get `None`).
    - `key`: a `jax.random` key (`None` is accepted by the deterministic `Coordinate`). The same
      key gives the same estimate; `jax.vmap` over keys gives independent estimates.
    - `*args`: anything else `fn` takes (any pytree).

    **Returns:** `(value, grad)`: `value == fn(params, *args)` and `grad` with the structure of
    `params`.

    Works under `jit`, `vmap` (over keys, params or args) and `grad` of the value. To drive an
    optax optimiser, use the estimate as the gradient inside your jitted step; nothing else is
    needed:

    ```python
    import optax

    fn = lambda p, target: jnp.sum((p["w"] - target) ** 2)
    params, target = {"w": jnp.zeros(5)}, jnp.arange(5.0)
    est, tx = js.optimizers.TwoPoint(num_directions=4), optax.adam(0.1)

    @jax.jit
    def step(params, opt_state, key):
        value, g = js.optimizers.estimate_gradient(fn, est, params, key, target)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = tx.init(params)
    for key in jax.random.split(jax.random.key(0), 200):
        params, opt_state, value = step(params, opt_state, key)
    assert value < 0.5
    ```

    The estimator is a pytree whose float hyperparameters are arrays: pass it to a jitted step
    as an argument and a new `smoothing` does not recompile.
    """
    if not isinstance(estimator, AbstractGradientEstimator):
        raise TypeError(
            "`estimator` must be a js.optimizers.AbstractGradientEstimator (TwoPoint, "
            f"Coordinate, ForwardGradient), got {type(estimator).__name__}"
        )
    if not callable(fn):
        raise TypeError(f"`fn` must be callable, got {type(fn).__name__}")
    diff, _ = _split_params(params)
    if not jax.tree.leaves(diff):
        raise ValueError("`params` must contain at least one floating-point array leaf")
    check_floating("params", diff)
    if key is None and not isinstance(estimator, Coordinate):
        raise ValueError(f"`key` must be a jax.random key for {type(estimator).__name__}, got None")
    out = eqx.filter_eval_shape(fn, params, *args)
    if not (
        isinstance(out, jax.ShapeDtypeStruct)
        and out.shape == ()
        and jnp.issubdtype(out.dtype, jnp.floating)
    ):
        got = jax.tree.map(lambda s: f"{s.dtype}{list(s.shape)}", out)
        raise ValueError(f"`fn` must return a floating-point scalar (shape ()), got {got}")
    return estimator.estimate(fn, params, key, args)
