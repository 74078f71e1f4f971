"""Shared pieces of the matrix-preconditioned optimisers (private).

- Adam's moment arithmetic, per leaf, written so that it runs under strict dtype promotion and
  gives the same bits as `optax.scale_by_adam` (SOAP with a fixed identity basis is Adam, bit for
  bit; Shampoo grafts onto Adam; the Muon family falls back to Adam for non-matrix leaves).
- Hyperparameters may arrive as Python floats or, under `optax.inject_hyperparams`, as arrays:
  `cast` brings an array to the leaf's dtype and leaves Python numbers weakly typed.
- Inverse matrix roots by `eigh`, and the blocking of a matrix into tiles of bounded size.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def cast(hyper: Any, dtype) -> Any:
    """An array hyperparameter in `dtype`; a Python number stays weakly typed (as optax does)."""
    if isinstance(hyper, jax.Array):
        return hyper.astype(dtype)
    return hyper


def is_matrix(leaf) -> bool:
    """The leaves that the matrix optimisers precondition: two-dimensional arrays."""
    return jnp.ndim(leaf) == 2


def ema(value, average, decay):
    """`(1 - decay) * value + decay * average`, in the order that optax writes it."""
    decay = cast(decay, value.dtype)
    return (1 - decay) * value + decay * average


def debias(moment, decay, count):
    """`moment / (1 - decay**count)`: Adam's bias correction, with the same operations as
    `optax.tree.bias_correction` (`decay**count` in the hyperparameter's precision, then cast)
    so that the results agree bit for bit."""
    decay = cast(decay, moment.dtype)
    # `decay**count` mixes a float with the int32 count (jnp.power's own rule: repeated
    # squaring for a known integer, a float power otherwise), which strict promotion forbids.
    with jax.numpy_dtype_promotion("standard"):
        correction = 1 - decay**count
    return moment / correction.astype(moment.dtype)


def adam_direction(grad, mu, nu, b1, b2, eps, count, nesterov=False):
    """One leaf of `optax.scale_by_adam` (eps_root 0): the new moments and
    `mu_hat / (sqrt(nu_hat) + eps)`. `count` is the step number after incrementing (int32);
    `nesterov` uses optax's look-ahead first moment (NAdam)."""
    mu = ema(grad, mu, b1)
    nu = ema(grad**2, nu, b2)
    if nesterov:
        beta = cast(b1, grad.dtype)
        mu_hat = beta * debias(mu, b1, increment(count)) + (1 - beta) * debias(grad, b1, count)
    else:
        mu_hat = debias(mu, b1, count)
    direction = mu_hat / (jnp.sqrt(debias(nu, b2, count) + 0.0) + cast(eps, grad.dtype))
    return direction, mu, nu


def increment(count):
    """`count + 1`, saturating at the int32 maximum (as `optax.safe_increment`)."""
    return jnp.where(count < jnp.iinfo(jnp.int32).max, count + 1, count)


def symmetric_inverse_root(matrix, exponent: int, eps):
    """`(matrix + eps I)^(-1/exponent)` of a symmetric positive semi-definite matrix, by `eigh`.

    Eigenvalues below zero (round-off) are clipped to zero first. So that round-off in the
    numerical null space of a singular statistic is not magnified by `eps^(-1/exponent)`, the
    eigenvalues are also floored at the dtype's machine epsilon times the largest one (in
    float64 this is far below any `eps` that matters).
    """
    eigenvalues, eigenvectors = jnp.linalg.eigh(matrix)
    largest = jnp.max(jnp.abs(eigenvalues))
    floor = jnp.finfo(matrix.dtype).eps * largest
    eigenvalues = jnp.maximum(eigenvalues, floor) + cast(eps, matrix.dtype)
    scales = eigenvalues ** (-1.0 / exponent)
    return (eigenvectors * scales[None, :]) @ eigenvectors.T


def block_bounds(size: int, block_size: int) -> list[tuple[int, int]]:
    """`[start, stop)` pairs cutting `range(size)` into consecutive blocks of at most
    `block_size` (the last one may be shorter)."""
    return [(start, min(start + block_size, size)) for start in range(0, size, block_size)]


def eigenbasis(matrix):
    """Eigenvectors of a symmetric matrix, columns ordered by decreasing eigenvalue."""
    _, eigenvectors = jnp.linalg.eigh(matrix)
    return eigenvectors[:, ::-1]


class PreconditionedAdamState(NamedTuple):
    """State of `scale_by_soap` and `scale_by_shampoo`: the step count, Adam's first and second
    moments, and per leaf (in `jax.tree.leaves` order) that optimiser's preconditioner state
    (`None` for the leaves it does not precondition)."""

    count: jax.Array
    mu: Any
    nu: Any
    preconditioners: tuple


def preconditioned_adam(
    init_leaf: Callable[[jax.Array], Any], update_leaf: Callable[..., tuple]
) -> optax.GradientTransformation:
    """The optax plumbing shared by SOAP and Shampoo: Adam moments plus a per-leaf
    preconditioner, each leaf updated on its own.

    `init_leaf(param) -> preconditioner` (None where there is none);
    `update_leaf(grad, mu, nu, preconditioner, count) -> (direction, mu, nu, preconditioner)`,
    with `count` the step number after increment.
    """

    def init_fn(params):
        return PreconditionedAdamState(
            count=jnp.zeros((), jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
            preconditioners=tuple(init_leaf(leaf) for leaf in jax.tree.leaves(params)),
        )

    def update_fn(updates, state, params=None):
        del params
        count = increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        mus, nus = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
        out = [
            update_leaf(grad, mu, nu, pre, count)
            for grad, mu, nu, pre in zip(leaves, mus, nus, state.preconditioners, strict=True)
        ]
        directions, new_mus, new_nus, new_pres = zip(*out, strict=True) if out else ((),) * 4
        new_state = PreconditionedAdamState(
            count=count,
            mu=treedef.unflatten(new_mus),
            nu=treedef.unflatten(new_nus),
            preconditioners=tuple(new_pres),
        )
        return treedef.unflatten(directions), new_state

    return optax.GradientTransformation(init_fn, update_fn)
