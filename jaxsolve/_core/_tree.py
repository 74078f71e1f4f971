"""Small pytree helpers used across families (linear algebra on pytrees of arrays)."""

from typing import Any

import jax
import jax.numpy as jnp


def tree_add_scaled(x: Any, scale: Any, y: Any) -> Any:
    """x + scale * y, leafwise."""
    return jax.tree.map(lambda a, b: a + scale * b, x, y)


def tree_scale(scale: Any, x: Any) -> Any:
    """scale * x, leafwise."""
    return jax.tree.map(lambda a: scale * a, x)


def tree_sub(x: Any, y: Any) -> Any:
    """x - y, leafwise."""
    return jax.tree.map(lambda a, b: a - b, x, y)


def tree_dot(x: Any, y: Any) -> jax.Array:
    """The Euclidean inner product of two pytrees of the same structure."""
    leaves = [jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True)]
    return sum(leaves[1:], leaves[0]) if leaves else jnp.array(0.0)


def tree_norm(x: Any) -> jax.Array:
    """The Euclidean norm of a pytree."""
    return jnp.sqrt(tree_dot(x, x).real)


def tree_max_abs(x: Any) -> jax.Array:
    """The max-norm of a pytree."""
    leaves = [jnp.max(jnp.abs(a)) for a in jax.tree.leaves(x) if jnp.size(a) > 0]
    return jnp.max(jnp.stack(leaves)) if leaves else jnp.array(0.0)


def tree_zeros_like(x: Any) -> Any:
    return jax.tree.map(jnp.zeros_like, x)


def tree_all_finite(x: Any) -> jax.Array:
    """True when every element of every leaf is finite."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def tree_where(pred: Any, x: Any, y: Any) -> Any:
    """Leafwise `jnp.where(pred, x, y)` with a scalar `pred`."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), x, y)
