"""The Gaussian algebra of Brownian increments and their space-time(-time) Lévy areas.

On an interval of length `h` the increment `W`, the space-time Lévy area `H` and the
space-time-time Lévy area `K` are the stochastic integrals of the first three shifted Legendre
polynomials against `dW`:

    W = ∫ dW_r,   H = ∫ (1/2 - u) dW_r,   K = ∫ (u²/2 - u/2 + 1/12) dW_r,   u = (r - s)/h,

which gives `H = (1/h) ∫ (W_{s,r} - u W_{s,t}) dr`, `K = (1/h²) ∫ (W_{s,r} - u W_{s,t})(h/2 - (r-s)) dr`,
mutually independent with variances `h`, `h/12`, `h/720`. Because the three weight functions
are orthogonal polynomials, everything below is finite-dimensional Gaussian linear algebra:

- Chen's relation (`combine`): the triple of `[s, u]` is a fixed linear map of the triples of
  `[s, t]` and `[t, u]`. It is simplest in "barred" coordinates `(W, h H, h² K)`.
- The bridge (`bisection_maps`, `split_at`): the exact conditional law of the triple of a
  sub-interval given the triple of its parent (Foster's bridge formulas, derived here from the
  covariances of the weight functions).

Arrays here have a leading batch axis `B`, then a coordinate axis of size `n` (1: W; 2: W, H;
3: W, H, K), then the Brownian leaf's own shape. Lengths are arrays of shape `(B,)`.

Reference: Jelinčič, Foster, Kidger et al., "Single-seed generation of Brownian paths and
integrals for adaptive and high order SDE solvers" (2024); J. Foster, "Numerical approximations
for stochastic differential equations", DPhil thesis (2020).
"""

import jax.numpy as jnp
import numpy as np

# Standard deviations of (W, H, K) over an interval of unit length.
STD = (1.0, 1.0 / np.sqrt(12.0), 1.0 / np.sqrt(720.0))


def _bc(v, x, cast=True):
    """Broadcast a per-batch quantity `v` of shape (B,) against `x` of shape (B, ...)."""
    v = jnp.asarray(v)
    if cast:
        v = v.astype(x.dtype)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def to_bar(x, h):
    """Unbarred (W, H, K) on intervals of lengths `h` -> barred (W, h H, h² K)."""
    n = x.shape[1]
    if n == 1:
        return x
    hb = _bc(h, x[:, 0])
    parts = [x[:, 0], hb * x[:, 1]]
    if n == 3:
        parts.append(hb * hb * x[:, 2])
    return jnp.stack(parts, axis=1)


def from_bar(x, h):
    """Barred (W, h H, h² K) -> unbarred (W, H, K); zero where `h == 0`."""
    n = x.shape[1]
    if n == 1:
        return x
    h = jnp.asarray(h)
    positive = h > 0
    inv = jnp.where(positive, 1 / jnp.where(positive, h, 1), 0)
    inv = _bc(inv, x[:, 0])
    parts = [x[:, 0], inv * x[:, 1]]
    if n == 3:
        parts.append(inv * inv * x[:, 2])
    return jnp.stack(parts, axis=1)


def combine(x1, a, x2, b):
    """Chen's relation in barred coordinates: the triple of `[s, u]` from `[s, t]`, `[t, u]`.

    `x1` (length `a`) is the left piece and `x2` (length `b`) the right piece. For the unbarred
    triples this reads `h H = a H1 + b H2 + (b W1 - a W2)/2` and
    `h² K = a² K1 + b² K2 + ab (H1 - H2)/2 + (b - a)(b W1 - a W2)/12` with `h = a + b`.
    """
    n = x1.shape[1]
    w1, w2 = x1[:, 0], x2[:, 0]
    parts = [w1 + w2]
    if n >= 2:
        a_, b_ = _bc(a, w1), _bc(b, w1)
        d = (b_ * w1 - a_ * w2) / 2
        parts.append(x1[:, 1] + x2[:, 1] + d)
        if n == 3:
            parts.append(
                x1[:, 2] + x2[:, 2] + (b_ * x1[:, 1] - a_ * x2[:, 1]) / 2 + (b_ - a_) * d / 6
            )
    return jnp.stack(parts, axis=1)


def right_part(parent, x1, a, b):
    """Invert Chen's relation: the right piece (length `b`) from the parent and the left piece."""
    n = parent.shape[1]
    w1 = x1[:, 0]
    w2 = parent[:, 0] - w1
    parts = [w2]
    if n >= 2:
        a_, b_ = _bc(a, w1), _bc(b, w1)
        d = (b_ * w1 - a_ * w2) / 2
        hb2 = parent[:, 1] - x1[:, 1] - d
        parts.append(hb2)
        if n == 3:
            parts.append(
                parent[:, 2] - x1[:, 2] - (b_ * x1[:, 1] - a_ * hb2) / 2 - (b_ - a_) * d / 6
            )
    return jnp.stack(parts, axis=1)


# ---------------------------------------------------------------------------------------------
# The bridge: conditional law of the left piece given the parent, parent of unit length.
# ---------------------------------------------------------------------------------------------


def chen_matrices(alpha, n, xp=np):
    """Unbarred Chen maps `parent = M1 @ left + M2 @ right` for a unit parent split at `alpha`.

    Each piece is unbarred relative to its own length (`alpha`, `1 - alpha`). Works with numpy
    (constants) or jax.numpy (a batch of `alpha`, giving arrays of shape (B, n, n)).
    """
    a = xp.asarray(alpha)
    b = 1 - a
    zero, one = xp.zeros_like(a), xp.ones_like(a)
    m1 = [
        [one, zero, zero],
        [b / 2, a, zero],
        [b * (b - a) / 12, a * b / 2, a * a],
    ]
    m2 = [
        [one, zero, zero],
        [-a / 2, b, zero],
        [a * (a - b) / 12, -a * b / 2, b * b],
    ]

    def build(rows):
        return xp.stack([xp.stack(r[:n], axis=-1) for r in rows[:n]], axis=-2)

    return build(m1), build(m2)


def conditional_mean_matrix(alpha, n, xp=np):
    """`G` with `E[left | parent] = G @ parent` (unbarred, unit parent, split at `alpha`)."""
    a = xp.asarray(alpha)
    b = 1 - a
    zero = xp.zeros_like(a)
    rows = [
        [a, 6 * a * b, 60 * a * b * (1 - 2 * a)],
        [zero, a * a, 30 * a * a * b],
        [zero, zero, a * a * a],
    ]
    return xp.stack([xp.stack(r[:n], axis=-1) for r in rows[:n]], axis=-2)


def bisection_maps(n):
    """Constant maps for a midpoint split: `children = P @ parent + sqrt(h) * N @ normals`.

    Returns float64 numpy arrays `P` of shape (2n, n) and `N` of shape (2n, n): rows `:n` give
    the left child, rows `n:` the right child, each unbarred relative to its own length `h/2`;
    `normals` are `n` independent standard normals. Exact in law: the left child is the
    conditional mean plus a Cholesky factor of the conditional covariance, the right child
    follows from Chen's relation.
    """
    half = np.float64(0.5)
    m1, m2 = chen_matrices(half, n)
    g = conditional_mean_matrix(half, n)
    d = np.diag(np.array(STD[:n]) ** 2)
    cov_left = half * d
    cond_cov = cov_left - g @ m1 @ cov_left  # Σ1 - Σ1 M1ᵀ Σp⁻¹ M1 Σ1, with Σp = D.
    chol = np.linalg.cholesky((cond_cov + cond_cov.T) / 2)
    m2_inv = np.linalg.inv(m2)
    right_mean = m2_inv @ (np.eye(n) - m1 @ g)
    right_noise = -m2_inv @ m1 @ chol
    return np.concatenate([g, right_mean]), np.concatenate([chol, right_noise])


def split_at(parent, h, alpha, normals):
    """Exact conditional sample of the pieces `[0, alpha h]`, `[alpha h, h]` of a parent.

    Matheron's rule: draw both pieces unconditionally (`2n` normals), then correct them by the
    conditional mean of the mismatch in the parent. Exact for every `alpha` in [0, 1], with no
    square root of a near-singular covariance at the ends.

    **Arguments:** `parent` unbarred, shape (B, n, ...), of intervals of lengths `h` (B,);
    `alpha` (B,) in [0, 1]; `normals` of shape (B, 2n, ...).

    **Returns:** `(left, right)` in barred coordinates (lengths `alpha h`, `(1 - alpha) h`).
    """
    n = parent.shape[1]
    dtype = parent.dtype
    alpha = jnp.clip(alpha, 0, 1)
    a = alpha.astype(dtype)
    b = 1 - a
    m1, m2 = chen_matrices(a, n, jnp)
    g = conditional_mean_matrix(a, n, jnp)
    std = jnp.asarray(STD[:n], dtype)
    sqrt_h = _bc(jnp.sqrt(jnp.asarray(h).astype(dtype)), parent)
    # Unconditional pieces of a unit parent, unbarred relative to their own lengths.
    z1 = _bc(jnp.sqrt(a), parent) * _bc_vec(std, parent) * normals[:, :n]
    z2 = _bc(jnp.sqrt(b), parent) * _bc_vec(std, parent) * normals[:, n:]
    # Where the parent has zero length, sqrt_h is zero: guard the division.
    safe = jnp.where(sqrt_h > 0, sqrt_h, 1)
    mismatch = parent / safe - _matvec(m1, z1) - _matvec(m2, z2)
    left = sqrt_h * (z1 + _matvec(g, mismatch))
    h = jnp.asarray(h)
    left_len = alpha * h
    right_len = h - left_len
    left_bar = to_bar(left, left_len)
    # At the ends the answer is known exactly; avoid rounding residue there.
    parent_bar = to_bar(parent, h)
    at_start = _bc(alpha <= 0, left_bar, cast=False)
    at_end = _bc(alpha >= 1, left_bar, cast=False)
    left_bar = jnp.where(at_start, 0, jnp.where(at_end, parent_bar, left_bar))
    right_bar = right_part(parent_bar, left_bar, left_len, right_len)
    right_bar = jnp.where(at_end, 0, jnp.where(at_start, parent_bar, right_bar))
    return left_bar, right_bar


def _bc_vec(v, x):
    """Broadcast a per-coordinate vector `v` (n,) against `x` of shape (B, n, ...)."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _matvec(m, x):
    """Per-batch `m @ x` over the coordinate axis: m (B, n, n), x (B, n, ...)."""
    return jnp.einsum("bij,bj...->bi...", m, x)


def apply_constant(m, x):
    """Constant `m @ x` over the coordinate axis: m (k, n) numpy, x (B, n, ...)."""
    m = jnp.asarray(m, x.dtype)
    return jnp.einsum("ij,bj...->bi...", m, x)
