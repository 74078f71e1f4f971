"""The tree's counter-based hash: Threefry-2x32 (20 rounds) against the known-answer vectors of
Salmon et al.'s Random123 distribution, and broadcasting over node batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.brownian import _rng

KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key, counter, expected", KNOWN_ANSWERS)
def test_threefry_known_answers(key, counter, expected):
    u = np.uint32
    out = jax.jit(_rng.threefry2x32)(u(key[0]), u(key[1]), u(counter[0]), u(counter[1]))
    assert tuple(int(x) for x in out) == expected


def test_threefry_broadcasts_like_elementwise_calls():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**32, size=(3, 1, 2), dtype=np.uint32)
    ctr = np.arange(5, dtype=np.uint32)
    y0, y1 = _rng.threefry2x32(keys[..., 0], keys[..., 1], ctr, np.uint32(7))
    assert y0.shape == y1.shape == (3, 5) and y0.dtype == jnp.uint32
    for b in range(3):
        for c in range(5):
            e0, e1 = _rng.threefry2x32(keys[b, 0, 0], keys[b, 0, 1], ctr[c], np.uint32(7))
            assert (int(y0[b, c]), int(y1[b, c])) == (int(e0), int(e1))
