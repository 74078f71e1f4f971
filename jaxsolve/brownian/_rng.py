"""The randomness of the tree's nodes: a counter-based hash of each node's key.

Every node of the tree has a key of two uint32 words. Hashing it with the Threefry-2x32 block
cipher (20 rounds, the generator behind `jax.random`) at counter `c` gives two fresh words:
counters 0 and 1 give the keys of the left and right child, counters 2, 3, ... one block per
standard normal of the node (by the inverse error function, as `jax.random.normal` does).

Why not `jax.random.split`/`normal`: a query touches one node per level, and only one of the two
child keys is needed on the way down. Written as straight-line uint32 arithmetic the hash fuses
with the inverse error function into one elementwise kernel, computes just the blocks that are
needed, and vectorises across queries (2M normals: ~4.5 ms on the shared CPU box, against ~17 ms
for `jax.random.normal`); `normals` then makes sure that kernel runs once per node (see
`_materialize`). The root key comes from the user's key through
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
    return lax.bitwise_or(
        lax.shift_left(x, np.uint32(r)), lax.shift_right_logical(x, np.uint32(32 - r))
    )


def threefry2x32(k0, k1, x0, x1):
    """The Threefry-2x32 block cipher with 20 rounds on broadcastable uint32 arrays."""
    # `lax` on arrays of one shape, not `jnp` operators: each `jnp` operator is a small jitted
    # function of its own, and the ~100 of a call made up most of the tree's trace time.
    k0, k1, x0, x1 = (x.astype(jnp.uint32) for x in jnp.broadcast_arrays(k0, k1, x0, x1))
    ks = (k0, k1, lax.bitwise_xor(lax.bitwise_xor(k0, k1), np.uint32(_PARITY)))
    x0, x1 = lax.add(x0, k0), lax.add(x1, k1)
    for i in range(5):
        for r in _ROTATIONS[:4] if i % 2 == 0 else _ROTATIONS[4:]:
            x0 = lax.add(x0, x1)
            x1 = lax.bitwise_xor(_rotl(x1, r), x0)
        x0 = lax.add(x0, ks[(i + 1) % 3])
        x1 = lax.add(lax.add(x1, ks[(i + 2) % 3]), np.uint32(i + 1))
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


_CHUNK = 8


def _materialize(z, chunk):
    """`z` (B, M), unchanged, through a product with an identity matrix of size `chunk`.

    XLA on CPU fuses elementwise producers into every consumer and drops optimization
    barriers before fusion, so without this the hash and the inverse error function would be
    recomputed inside each expression that reads a normal (the bisection's mean and noise,
    the gathers of the shared levels, several levels deep): up to ten times over. A matrix
    product's operand is computed into a buffer once; with `chunk >= 2` XLA keeps the product,
    and multiplying by exact ones and zeros leaves every value bit-for-bit unchanged.
    """
    batch, m = z.shape
    eye = np.eye(chunk, dtype=z.dtype)
    # HIGHEST: on accelerators a default-precision float32 product may round to TF32.
    out = jnp.einsum(
        "bkc,cd->bkd", z.reshape((batch, m // chunk, chunk)), eye, precision=lax.Precision.HIGHEST
    )
    return out.reshape((batch, m))


def normals(keys, count: int, shape, dtype, stacked: bool = False, child=None):
    """`count` arrays of standard normals of `shape` and `dtype` per node key `(B, 2)`.

    One hash block per normal, at counters `2, 3, ...`: in single precision its first word
    gives the uniform, in double precision both words do. The second word is left unused in
    single precision on purpose: gathering both words of a block into one array is a
    concatenation, which XLA on CPU fuses with the hash and the inverse error function into a
    loop that runs about ten times slower than hashing twice as many blocks.

    With `child` (B,) of 0/1, that child's key (counter `child`) is returned first:
    `(child_keys, normals)`.
    """
    size = int(math.prod(shape))
    batch = keys.shape[0]
    wide = np.dtype(dtype) == np.float64
    compute = np.float64 if wide else np.float32
    total = count * size
    # Chunks of `chunk` normals go through an identity matrix product (see `_materialize`); a
    # count that does not divide draws a few extra normals, dropped afterwards.
    chunk = 2 if total == 1 else min(total, _CHUNK)
    drawn = -(-total // chunk) * chunk
    ctr = np.arange(FIRST_NORMAL_COUNTER, FIRST_NORMAL_COUNTER + drawn, dtype=np.uint32)
    y0, y1 = threefry2x32(keys[:, 0:1], keys[:, 1:2], ctr, np.uint32(0))
    u = _float64_open(y0, y1) if wide else _float32_open(y0)
    z = _materialize(_normal_from_uniform(u, compute, dtype), chunk)[:, :total]
    if stacked:
        z = z.reshape((batch, count, *shape))
    else:
        z = tuple(z[:, i * size : (i + 1) * size].reshape((batch, *shape)) for i in range(count))
    if child is None:
        return z
    return child_keys(keys, child), z
