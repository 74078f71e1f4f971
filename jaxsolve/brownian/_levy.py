"""The Gaussian algebra of Brownian increments and their space-time(-time) Lévy areas.

On an interval `[s, t]` of length `h` the increment `W`, the space-time Lévy area `H` and the
space-time-time Lévy area `K` are stochastic integrals of the first three shifted Legendre
polynomials against `dW`:

    W = ∫ dW_r,   H = ∫ (1/2 - u) dW_r,   K = ∫ (u²/2 - u/2 + 1/12) dW_r,   u = (r - s)/h,

equivalently `H = (1/h) ∫ (W_{s,r} - u W_{s,t}) dr` and
`K = (1/h²) ∫ (W_{s,r} - u W_{s,t})(h/2 - (r - s)) dr`: independent, with variances `h`,
`h/12`, `h/720`. The weights being orthogonal polynomials, everything below is
finite-dimensional Gaussian linear algebra:

- Chen's relation (`combine`, `right_part`): the triple of `[s, u]` is a fixed linear map of
  the triples of `[s, t]` and `[t, u]`; simplest in "barred" coordinates `(W, h H, h² K)`.
- The bridge (`bisection_maps`, `split_at`): the exact conditional law of the triple of a
  sub-interval given the triple of its parent (Foster's bridge formulas; the maps below are
  derived from the covariances of the weight functions and checked numerically in the tests).

A triple is a tuple of `n` arrays (1: W; 2: W, H; 3: W, H, K) of the same shape `(B, ...)`, a
leading batch axis then the Brownian leaf's shape; lengths are arrays of shape `(B,)`.

Reference: Jelinčič, Foster, Kidger et al., "Single-seed generation of Brownian paths and
integrals for adaptive and high order SDE solvers" (2024); J. Foster, "Numerical approximations
for stochastic differential equations", DPhil thesis, Oxford (2020).
"""

import jax.numpy as jnp
import numpy as np

# Standard deviations of (W, H, K) over an interval of unit length.
STD = (1.0, float(1.0 / np.sqrt(12.0)), float(1.0 / np.sqrt(720.0)))  # python floats: weak types


def bc(v, x, cast=True):
    """Broadcast a per-batch quantity `v` of shape (B,) against `x` of shape (B, ...)."""
    v = jnp.asarray(v)
    if cast:
        v = v.astype(x.dtype)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def where(cond, x, y):
    """`jnp.where` on triples with a per-batch condition of shape (B,)."""
    return tuple(jnp.where(bc(cond, a, cast=False), a, b) for a, b in zip(x, y))


def zeros_like(x):
    return tuple(jnp.zeros_like(a) for a in x)


def to_bar(x, h):
    """Unbarred (W, H, K) on intervals of lengths `h` -> barred (W, h H, h² K)."""
    if len(x) == 1:
        return x
    hb = bc(h, x[0])
    out = (x[0], hb * x[1])
    return out + (hb * hb * x[2],) if len(x) == 3 else out


def from_bar(x, h):
    """Barred (W, h H, h² K) -> unbarred (W, H, K); zero where `h == 0`."""
    if len(x) == 1:
        return x
    h = jnp.asarray(h)
    positive = h > 0
    inv = bc(jnp.where(positive, 1 / jnp.where(positive, h, 1), 0), x[0])
    out = (x[0], inv * x[1])
    return out + (inv * inv * x[2],) if len(x) == 3 else out


def combine(x1, a, x2, b):
    """Chen's relation (barred): the triple of `[s, u]` from `x1` on `[s, t]` (length `a`) and
    `x2` on `[t, u]` (length `b`).

    Unbarred, with `h = a + b`: `W = W1 + W2`, `h H = a H1 + b H2 + (b W1 - a W2)/2`,
    `h² K = a² K1 + b² K2 + ab (H1 - H2)/2 + (b - a)(b W1 - a W2)/12`.
    """
    w1, w2 = x1[0], x2[0]
    out = (w1 + w2,)
    if len(x1) >= 2:
        a_, b_ = bc(a, w1), bc(b, w1)
        d = (b_ * w1 - a_ * w2) / 2
        out += (x1[1] + x2[1] + d,)
        if len(x1) == 3:
            out += (x1[2] + x2[2] + (b_ * x1[1] - a_ * x2[1]) / 2 + (b_ - a_) * d / 6,)
    return out


def right_part(parent, x1, a, b):
    """Invert Chen's relation: the right piece (length `b`) from the parent and the left piece
    (length `a`), all barred."""
    w1 = x1[0]
    w2 = parent[0] - w1
    out = (w2,)
    if len(parent) >= 2:
        a_, b_ = bc(a, w1), bc(b, w1)
        d = (b_ * w1 - a_ * w2) / 2
        hb2 = parent[1] - x1[1] - d
        out += (hb2,)
        if len(parent) == 3:
            out += (parent[2] - x1[2] - (b_ * x1[1] - a_ * hb2) / 2 - (b_ - a_) * d / 6,)
    return out


# ---------------------------------------------------------------------------------------------
# The bridge: the law of the left piece given the parent, for a parent of unit length.
# ---------------------------------------------------------------------------------------------


def chen_matrices(alpha, n):
    """Unbarred Chen maps, `parent = M1 @ left + M2 @ right`, for a unit parent split at `alpha`.

    Each piece is unbarred relative to its own length (`alpha`, `1 - alpha`). Entries are
    expressions in `alpha` (a float or an array), as nested lists.
    """
    a, b = alpha, 1 - alpha
    m1 = [[1.0, 0.0, 0.0], [b / 2, a, 0.0], [b * (b - a) / 12, a * b / 2, a * a]]
    m2 = [[1.0, 0.0, 0.0], [-a / 2, b, 0.0], [a * (a - b) / 12, -a * b / 2, b * b]]
    return [r[:n] for r in m1[:n]], [r[:n] for r in m2[:n]]


def conditional_mean_matrix(alpha, n):
    """`G` with `E[left | parent] = G @ parent` (unbarred, unit parent split at `alpha`).

    `G = Σ_left M1ᵀ Σ_parent⁻¹`, with `Σ = diag(1, 1/12, 1/720)` times the lengths.
    """
    a, b = alpha, 1 - alpha
    g = [
        [a, 6 * a * b, 60 * a * b * (1 - 2 * a)],
        [0.0, a * a, 30 * a * a * b],
        [0.0, 0.0, a * a * a],
    ]
    return [r[:n] for r in g[:n]]


def bisection_maps(n):
    """Constant maps for a midpoint split: `children = P @ parent + sqrt(h) N @ normals`.

    Float64 numpy arrays `P` and `N` of shape (2n, n): rows `:n` give the left child, rows `n:`
    the right child, each unbarred relative to its own length `h/2`; `normals` are `n`
    independent standard normals. The left child is the conditional mean plus a Cholesky factor
    of the conditional covariance `Σ1 - G M1 Σ1`; the right child follows by Chen's relation.
    """
    m1, m2 = (np.array(m, np.float64) for m in chen_matrices(0.5, n))
    g = np.array(conditional_mean_matrix(0.5, n), np.float64)
    cov_left = 0.5 * np.diag(np.array(STD[:n]) ** 2)
    cond_cov = cov_left - g @ m1 @ cov_left
    chol = np.linalg.cholesky((cond_cov + cond_cov.T) / 2)
    m2_inv = np.linalg.inv(m2)
    right_mean = m2_inv @ (np.eye(n) - m1 @ g)
    right_noise = -m2_inv @ m1 @ chol
    return np.concatenate([g, right_mean]), np.concatenate([chol, right_noise])


def apply_constant(m, x):
    """Constant `m @ x` for a numpy matrix `m` (k, n) and a triple `x`: a k-tuple.

    Written as explicit multiply-adds (skipping zeros) so XLA fuses it into elementwise code.
    """
    out = []
    for row in np.asarray(m):
        acc = None
        for coeff, xi in zip(row, x):
            if abs(coeff) < 1e-15:
                continue
            term = xi if coeff == 1.0 else float(coeff) * xi
            acc = term if acc is None else acc + term
        out.append(jnp.zeros_like(x[0]) if acc is None else acc)
    return tuple(out)


def _matvec(m, x):
    """Per-batch `m @ x`, `m` a nested list of per-batch arrays (B,) or floats."""
    out = []
    for row in m:
        acc = None
        for coeff, xi in zip(row, x):
            if isinstance(coeff, float):
                if coeff == 0.0:
                    continue
                term = coeff * xi
            else:
                term = bc(coeff, xi) * xi
            acc = term if acc is None else acc + term
        out.append(acc)
    return tuple(out)


def leaf_normals_needed(n):
    """How many normals `split_at` consumes for `n` coordinates."""
    return n if n <= 2 else 2 * n


def _mul(x, y):
    """Product of two matrix entries (python floats or per-batch arrays)."""
    return x * y


def split_at(parent, h, alpha, normals):
    """Exact conditional sample of the pieces `[0, alpha h]`, `[alpha h, h]` of a parent.

    For `W` (and `W, H`) the left piece is the conditional mean plus the closed-form Cholesky
    factor of the conditional covariance times `n` normals; with `x = alpha (1 - alpha)`:
    `W`: `sqrt(x)`; `W, H`: `[[sqrt(x) r, 0], [-alpha² sqrt(x)/(2r), sqrt(3)/6 (1-alpha) sqrt(x)/r]]`
    with `r = sqrt(1 - 3x) >= 1/2`, bounded at both ends. For `W, H, K` it is Matheron's rule:
    both pieces drawn unconditionally (`2n` normals), then corrected by the conditional mean of
    their mismatch with the parent. Exact for every `alpha` in [0, 1].

    **Arguments:** `parent`, unbarred triple of intervals of lengths `h` (B,); `alpha` (B,);
    `normals`, a tuple of `leaf_normals_needed(n)` arrays shaped like the parent's.

    **Returns:** `(left, right)`, barred triples (lengths `alpha h` and `h - alpha h`).
    """
    n = len(parent)
    dtype = parent[0].dtype
    alpha = jnp.clip(alpha, 0, 1)
    a = alpha.astype(dtype)
    g = conditional_mean_matrix(a, n)
    h = jnp.asarray(h)
    sqrt_h = bc(jnp.sqrt(h.astype(dtype)), parent[0])
    mean = _matvec(g, parent)
    if n <= 2:
        x = a * (1 - a)
        sqrt_x = jnp.sqrt(x)
        if n == 1:
            chol = [[sqrt_x]]
        else:
            r = jnp.sqrt(1 - 3 * x)
            chol = [
                [sqrt_x * r, 0.0],
                [-a * a * sqrt_x / (2 * r), float(np.sqrt(3.0) / 6) * (1 - a) * sqrt_x / r],
            ]
        if isinstance(normals, tuple):
            noise = _matvec(chol, normals[:n])
        else:
            # Normals stacked as (B, n, ...): a batched matrix product, which XLA does not
            # fuse with (and so does not recompute) the normals' inverse error function.
            batch = normals.shape[0]
            mat = jnp.stack(
                [jnp.stack([jnp.broadcast_to(jnp.asarray(c, dtype), (batch,)) for c in row], -1)
                 for row in chol], -2,
            )  # fmt: skip
            noise = jnp.einsum("bij,bj...->ib...", mat, normals[:, :n])
        left = tuple(m + sqrt_h * noise[i] for i, m in enumerate(mean))
    else:
        # left = mean + sqrt(h) (Q1 n1 + Q2 n2) with Q1 = (I - G M1) diag(sqrt(a) std) and
        # Q2 = -G M2 diag(sqrt(1 - a) std): the conditional correction applied to two
        # unconditional pieces, as one batched matrix product on the 2n normals.
        m1, m2 = chen_matrices(a, n)
        sa, sb = jnp.sqrt(a), jnp.sqrt(1 - a)

        def entry(i, j):
            if j < n:
                gm = sum(_mul(g[i][k], m1[k][j]) for k in range(n))
                return ((1.0 if i == j else 0.0) - gm) * sa * STD[j]
            jj = j - n
            return -sum(_mul(g[i][k], m2[k][jj]) for k in range(n)) * sb * STD[jj]

        batch = parent[0].shape[0]
        q = jnp.stack(
            [jnp.stack([jnp.broadcast_to(entry(i, j), (batch,)) for j in range(2 * n)], -1)
             for i in range(n)], -2,
        )  # fmt: skip
        if isinstance(normals, tuple):
            normals = jnp.stack(normals, axis=1)
        noise = jnp.einsum("bij,bj...->ib...", q, normals)
        left = tuple(mean[i] + sqrt_h * noise[i] for i in range(n))
    left_len = alpha * h
    right_len = h - left_len
    left_bar = to_bar(left, left_len)
    parent_bar = to_bar(parent, h)
    zero = zeros_like(parent)
    # At the ends the answer is known exactly; avoid rounding residue there.
    left_bar = where(alpha <= 0, zero, where(alpha >= 1, parent_bar, left_bar))
    right_bar = right_part(parent_bar, left_bar, left_len, right_len)
    right_bar = where(alpha >= 1, zero, where(alpha <= 0, parent_bar, right_bar))
    return left_bar, right_bar
