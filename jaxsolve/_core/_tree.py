"""Pytree helpers that `optax.tree_utils`, `jax.tree` and equinox do not already provide.

For linear algebra on pytrees use `optax.tree_utils` (`tree_vdot`, `tree_l2_norm`,
`tree_add_scale`, `tree_scale`, `tree_sub`, `tree_zeros_like`, `tree_where`).
"""

from typing import Any

import jax
import jax.numpy as jnp


def tree_all_finite(x: Any) -> jax.Array:
    """True when every element of every leaf is finite (a scalar bool array; True when `x` has
    no leaves). One reduction per leaf, then one over the leaves."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
