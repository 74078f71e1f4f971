"""The randomness of the tree's nodes: a counter-based hash of each node's key.

Every node of the tree has a key of two uint32 words. Hashing it with the Threefry-2x32 block
cipher (20 rounds, the generator behind `jax.random`) at counter `c` gives two fresh words:
counters 0 and 1 give the keys of the left and right child, counters 2, 3, ... the words turned
into the node's standard normals (by the inverse error function, as `jax.random.normal` does).

Why not `jax.random.split`/`normal`: a query touches one node per level, and only one of the two
child keys is needed on the way down. Written as straight-line uint32 arithmetic the hash fuses
with the rest of the level into one elementwise kernel, computes just the blocks that are
needed, and vectorises across queries; this halves the cost of a descent on CPU compared with
calling `jax.random` per node. The root key comes from the user's key through
`jax.random.bits`, so every key implementation works, and the same key gives the same path
under `jit`, `vmap` and on every machine.

Reference: Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC 2011).
"""

import math

import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA
FIRST_NORMAL_COUNTER = 2


def _rotl(x, r):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0, k1, x0, x1):
    """The Threefry-2x32 block cipher with 20 rounds on broadcastable uint32 arrays."""
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(_PARITY))
    x0, x1 = x0 + k0, x1 + k1
    for i in range(5):
        for r in _ROTATIONS[:4] if i % 2 == 0 else _ROTATIONS[4:]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def root_key(key):
    """The two-word root key of the tree, from any `jax.random` key."""
    return jr.bits(key, (2,), jnp.uint32)


def child_keys(keys, which):
    """Child keys of a batch of node keys `(B, 2)`: `which` (B,) is 0 (left) or 1 (right)."""
    y0, y1 = threefry2x32(keys[:, 0], keys[:, 1], which.astype(jnp.uint32), np.uint32(0))
    return lax.optimization_barrier(jnp.stack([y0, y1], axis=-1))


def both_child_keys(keys):
    """Both child keys `(left, right)` of a batch of node keys `(B, 2)`."""
    ctr = np.arange(2, dtype=np.uint32)
    y0, y1 = lax.optimization_barrier(threefry2x32(keys[:, 0:1], keys[:, 1:2], ctr, np.uint32(0)))
    return jnp.stack([y0[:, 0], y1[:, 0]], -1), jnp.stack([y0[:, 1], y1[:, 1]], -1)


def _normal_from_uniform(u01, compute, dtype):
    u = 2 * u01 - 1
    # Keep away from -1, where the inverse error function is infinite.
    u = jnp.maximum(u, np.nextafter(np.asarray(-1, compute), np.asarray(0, compute)))
    return (np.sqrt(np.asarray(2, compute)) * lax.erf_inv(u)).astype(dtype)


def _float32_open(words):
    mantissa = (words >> np.uint32(9)) | np.uint32(0x3F800000)
    return lax.bitcast_convert_type(mantissa, jnp.float32) - 1


def _float64_open(hi, lo):
    word = (hi.astype(jnp.uint64) << np.uint64(32)) | lo.astype(jnp.uint64)
    mantissa = (word >> np.uint64(12)) | np.uint64(0x3FF0000000000000)
    return lax.bitcast_convert_type(mantissa, jnp.float64) - 1


def normals(keys, count: int, shape, dtype, stacked: bool = False, child=None):
    """`count` arrays of standard normals of `shape` and `dtype` per node key `(B, 2)`.

    One hash call per node covers every block. In single precision both output words of a
    block are used (array `i` takes word `i // groups` of block group `i % groups`); in double
    precision a block gives one normal. The inverse error function runs once on all of them.

    With `child` (B,) of 0/1, the same hash call also yields that child's key (counter
    `child`), returned first: `(child_keys, normals)`.
    """
    size = int(math.prod(shape))
    batch = keys.shape[0]
    wide = np.dtype(dtype) == np.float64
    compute = np.float64 if wide else np.float32
    groups = count if wide else (count + 1) // 2
    ctr = np.arange(FIRST_NORMAL_COUNTER, FIRST_NORMAL_COUNTER + groups * size, dtype=np.uint32)
    if child is not None:
        ctr = jnp.concatenate(
            [child.astype(jnp.uint32)[:, None], jnp.broadcast_to(ctr, (batch, ctr.shape[0]))], 1
        )
    y0, y1 = lax.optimization_barrier(threefry2x32(keys[:, 0:1], keys[:, 1:2], ctr, np.uint32(0)))
    if child is not None:
        child_keys = jnp.stack([y0[:, 0], y1[:, 0]], axis=-1)
        y0, y1 = y0[:, 1:], y1[:, 1:]
    if wide:
        u = _float64_open(y0, y1).reshape((batch, count, size))
    else:
        words = jnp.stack([y0, y1], axis=1).reshape((batch, 2 * groups, size))[:, :count]
        u = _float32_open(words)
    z = _normal_from_uniform(lax.optimization_barrier(u), compute, dtype)
    z = lax.optimization_barrier(z)
    if stacked:
        z = z.reshape((batch, count, *shape))
    else:
        z = tuple(z[:, i].reshape((batch, *shape)) for i in range(count))
    return z if child is None else (child_keys, z)
