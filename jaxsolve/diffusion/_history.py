"""Fixed-shape history buffers for multistep samplers (newest first)."""

import jax.numpy as jnp


def init_history(x, lam0, size: int):
    """`size` zero slots for past model outputs, and past log-SNRs placed at lam0 - 1,
    lam0 - 2, ...: fake but distinct, so that the unused higher-order branches of the first
    steps (discarded by `jnp.where`) stay finite in values and gradients."""
    values = jnp.zeros((size, *x.shape), x.dtype)
    lams = lam0 - jnp.arange(1, size + 1, dtype=x.dtype)
    return values, lams


def push(values, lams, value, lam):
    """Insert the newest entry in front and drop the oldest."""
    if values.shape[0] == 0:
        return values, lams
    values = jnp.concatenate([value[None], values[:-1]], axis=0)
    lams = jnp.concatenate([jnp.reshape(lam, (1,)).astype(lams.dtype), lams[:-1]], axis=0)
    return values, lams


def select_order(k, candidates):
    """`candidates[k - 1]` for a traced order k (all candidates are cheap combinations)."""
    out = candidates[0]
    for order, cand in enumerate(candidates[1:], start=2):
        out = jnp.where(k >= order, cand, out)
    return out
