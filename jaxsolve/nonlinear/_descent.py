"""Descent directions: the "which way" half of a line-search minimiser (the line search is the
"how far" half). Each is a small final module with a pure state:

- `SteepestDescent`: d = -g.
- `NonlinearCGDescent(method)`: d = -g + beta d_prev (Fletcher-Reeves, Polak-Ribiere+,
  Hestenes-Stiefel, Dai-Yuan), restarted when d is not a descent direction.
- `BFGSDescent`: d = -H g with the dense BFGS inverse-Hessian update.
- `LBFGSDescent(history_size)`: limited-memory BFGS over the last `history_size` pairs (the
  compact representation for small histories, the two-loop recursion for large ones).

Interface: `init(y, grad) -> state`, `direction(grad, state) -> (d, state)`, and
`update(s, grad_diff, grad, state) -> state` after an accepted step `s` with gradient change
`grad_diff`.
"""

import abc
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array

from .._core import check_option


class _LBFGSState(NamedTuple):
    history: Array  # [2, m, n]: S then Y, oldest pair first
    r_inv: Array  # [m, m]: inverse of the upper triangle of S'Y
    yy: Array  # [m, m]: Y'Y
    sy: Array  # [m]: diag(S'Y)
    gamma: Array  # s'y / y'y of the newest pair (1 before the first)


class AbstractDescent(eqx.Module):
    """A rule for the search direction of a line-search minimiser.

    **Example:**

    ```python
    H = jnp.diag(jnp.array([1.0, 10.0]))  # f(y) = y^T H y / 2
    descent = js.nonlinear.BFGSDescent()
    y = jnp.array([1.0, 1.0])
    grad = H @ y
    state = descent.init(y, grad)
    for _ in range(2):
        direction, state = descent.direction(grad, state)
        s = -(grad @ direction) / (direction @ H @ direction) * direction  # exact line search
        y = y + s
        state = descent.update(s, H @ y - grad, H @ y, state)
        grad = H @ y
    print(y)  # ~[0, 0]: BFGS is exact in 2 steps on a 2-D quadratic
    ```
    """

    @abc.abstractmethod
    def init(self, y: Array, grad: Array) -> Any:
        """The descent's state at the initial point."""

    @abc.abstractmethod
    def direction(self, grad: Array, state: Any) -> tuple[Array, Any]:
        """The search direction at a point with gradient `grad`."""

    @abc.abstractmethod
    def update(self, s: Array, grad_diff: Array, grad: Array, state: Any) -> Any:
        """Update after an accepted step `s` (gradient changed by `grad_diff`, now `grad`)."""


class SteepestDescent(AbstractDescent):
    """d = -grad.

    **Example:**

    ```python
    descent = js.nonlinear.SteepestDescent()  # stateless: d = -grad
    print(descent.direction(jnp.array([1.0, -2.0]), descent.init(jnp.zeros(2), None))[0])
    ```
    """

    def init(self, y, grad):
        return None

    def direction(self, grad, state):
        return -grad, state

    def update(self, s, grad_diff, grad, state):
        return state


_CG_METHODS = ("polak_ribiere", "fletcher_reeves", "hestenes_stiefel", "dai_yuan")


class NonlinearCGDescent(AbstractDescent):
    """Nonlinear conjugate-gradient directions d = -g + beta d_prev.

    `method`: `"polak_ribiere"` (PR+, default), `"fletcher_reeves"`, `"hestenes_stiefel"` or
    `"dai_yuan"`. Reference: Hager & Zhang, "A survey of nonlinear conjugate gradient methods",
    Pacific J. Optim. 2006.

    **Example:**

    ```python
    descent = js.nonlinear.NonlinearCGDescent(method="fletcher_reeves")
    grad = jnp.array([1.0, 10.0])
    direction, state = descent.direction(grad, descent.init(jnp.zeros(2), grad))
    print(direction)  # -grad at the start; AbstractDescent's example runs a whole loop
    ```
    """

    method: Literal["polak_ribiere", "fletcher_reeves", "hestenes_stiefel", "dai_yuan"] = eqx.field(
        static=True, default="polak_ribiere"
    )

    def __check_init__(self):
        check_option("method", self.method, _CG_METHODS)

    def init(self, y, grad):
        return (jnp.zeros_like(grad), jnp.zeros_like(grad), jnp.array(False))

    def direction(self, grad, state):
        grad_prev, d_prev, has_prev = state
        diff = grad - grad_prev
        tiny = jnp.finfo(grad.dtype).tiny

        def safe_div(a, b):
            return a / jnp.where(jnp.abs(b) > tiny, b, 1.0)

        if self.method == "fletcher_reeves":
            beta = safe_div(jnp.vdot(grad, grad), jnp.vdot(grad_prev, grad_prev))
        elif self.method == "polak_ribiere":
            beta = jnp.maximum(safe_div(jnp.vdot(grad, diff), jnp.vdot(grad_prev, grad_prev)), 0.0)
        elif self.method == "hestenes_stiefel":
            beta = safe_div(jnp.vdot(grad, diff), jnp.vdot(d_prev, diff))
        else:
            beta = safe_div(jnp.vdot(grad, grad), jnp.vdot(d_prev, diff))
        beta = jnp.where(has_prev, beta, 0.0)
        d = -grad + beta * d_prev
        # Restart with steepest descent whenever d is not a descent direction.
        d = jnp.where(jnp.vdot(d, grad) < 0, d, -grad)
        return d, (grad_prev, d, has_prev)

    def update(self, s, grad_diff, grad, state):
        _, d_prev, _ = state
        return (grad - grad_diff, d_prev, jnp.array(True))


class BFGSDescent(AbstractDescent):
    """d = -H g, with H the BFGS approximation of the inverse Hessian (dense, n x n).

    The first update rescales the identity by s'y / y'y (Nocedal & Wright, eq. 6.20); an update
    with non-positive curvature s'y is skipped.

    **Example:**

    ```python
    descent = js.nonlinear.BFGSDescent()
    grad = jnp.array([1.0, 10.0])
    direction, state = descent.direction(grad, descent.init(jnp.zeros(2), grad))
    print(direction)  # -grad at the start; AbstractDescent's example runs a whole loop
    ```
    """

    def init(self, y, grad):
        return (jnp.eye(y.size, dtype=y.dtype), jnp.array(False))

    def direction(self, grad, state):
        inv_hessian, _ = state
        return -(inv_hessian @ grad), state

    def update(self, s, grad_diff, grad, state):
        inv_hessian, started = state
        sy = jnp.vdot(s, grad_diff)
        yy = jnp.vdot(grad_diff, grad_diff)
        good = sy > jnp.finfo(s.dtype).eps * jnp.sqrt(yy * jnp.vdot(s, s))
        scale = jnp.where(good & ~started, sy / jnp.where(yy > 0, yy, 1.0), 1.0)
        inv_hessian = inv_hessian * scale
        rho = 1.0 / jnp.where(good, sy, 1.0)
        hy = inv_hessian @ grad_diff
        # (I - rho s y') H (I - rho y s') + rho s s', expanded to rank-two updates.
        yhy = jnp.vdot(grad_diff, hy)
        new = (
            inv_hessian
            - rho * (jnp.outer(s, hy) + jnp.outer(hy, s))
            + (rho * rho * yhy + rho) * jnp.outer(s, s)
        )
        return (jnp.where(good, new, inv_hessian), started | good)


class LBFGSDescent(AbstractDescent):
    """The L-BFGS direction over the last `history_size` (s, y) pairs, with the initial inverse
    Hessian gamma I, gamma = s'y / y'y of the newest pair; a pair with s'y <= 0 (to roundoff)
    is skipped.

    Two exact forms of the same direction, chosen from the size of the stored history:

    - up to 64 KiB (e.g. history 10 at n <= 400 in float64), the compact representation of
      Byrd, Nocedal & Schnabel (1994, Theorem 2.2): with S, Y the stored pairs (oldest first),
      R the upper triangle of S'Y and D its diagonal,
      `H g = gamma g + S R^-T ((D + gamma Y'Y) R^-1 S'g - gamma Y'g) - gamma Y R^-1 S'g`.
      R^-1 and Y'Y are kept up to date (dropping the oldest pair keeps the trailing block of
      R^-1, appending one adds a column), so a direction is two matrix-vector products with
      the stacked history and a few m x m ones: a handful of kernels whatever `history_size`
      is. Small problems on CPU are bound by kernel launches, not flops, and there the two
      loops' 2 m dependent steps of several kernels each cost more than the arithmetic;
    - above it, Nocedal's two-loop recursion, which reads the history twice per step where
      the compact form reads it about five times (its update adds a product with the history
      and shifts it): large problems are bound by memory traffic.

    The two forms agree to roundoff (tested against a reference two-loop recursion).

    **Example:**

    ```python
    descent = js.nonlinear.LBFGSDescent(history_size=5)
    grad = jnp.array([1.0, 10.0])
    direction, state = descent.direction(grad, descent.init(jnp.zeros(2), grad))
    print(direction)  # -grad at the start; AbstractDescent's example runs a whole loop
    ```

    References: Nocedal, "Updating quasi-Newton matrices with limited storage", Math. Comp.
    1980; Byrd, Nocedal & Schnabel, "Representations of quasi-Newton matrices and their use in
    limited memory methods", Math. Programming 1994.
    """

    history_size: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        if not isinstance(self.history_size, int) or self.history_size < 1:
            raise ValueError(f"`history_size` must be a positive int, got {self.history_size!r}")

    def _compact(self, x):
        return 2 * self.history_size * x.size * x.dtype.itemsize <= _COMPACT_HISTORY_BYTES

    def init(self, y, grad):
        if self._compact(y):
            return _compact_init(self.history_size, y)
        return _two_loop_init(self.history_size, y)

    def direction(self, grad, state):
        if self._compact(grad):
            return _compact_direction(self.history_size, grad, state), state
        return _two_loop_direction(self.history_size, grad, state), state

    def update(self, s, grad_diff, grad, state):
        sy = jnp.vdot(s, grad_diff)
        yy = jnp.vdot(grad_diff, grad_diff)
        good = sy > jnp.finfo(s.dtype).eps * jnp.sqrt(jnp.vdot(s, s) * yy)
        if self._compact(s):
            return _compact_update(self.history_size, s, grad_diff, sy, yy, good, state)
        return _two_loop_update(self.history_size, s, grad_diff, sy, good, state)


# The compact form's history (2 m n entries) up to which it is used: measured crossover on CPU
# between n = 300 and n = 1000 at history 10 in float64 (see the class docstring).
_COMPACT_HISTORY_BYTES = 64 * 1024


def _compact_init(m, y):
    # Empty slots are zero pairs with zero rows and columns in R^-1 and Y'Y, so they drop out
    # of the direction.
    dtype = y.dtype
    return _LBFGSState(
        history=jnp.zeros((2, m, y.size), dtype),
        r_inv=jnp.zeros((m, m), dtype),
        yy=jnp.zeros((m, m), dtype),
        sy=jnp.zeros((m,), dtype),
        gamma=jnp.ones((), dtype),
    )


def _compact_direction(m, grad, state):
    stacked = state.history.reshape(2 * m, grad.size)
    sg_yg = stacked @ grad
    sg, yg = sg_yg[:m], sg_yg[m:]
    gamma = state.gamma
    u = state.r_inv @ sg
    top = state.r_inv.T @ (state.sy * u + gamma * (state.yy @ u) - gamma * yg)
    coef = jnp.concatenate([top, -gamma * u])
    return -(gamma * grad + coef @ stacked)


def _compact_update(m, s, grad_diff, sy, yy, good, state):
    safe_sy = jnp.where(good, sy, 1.0)
    # Drop the oldest pair, append (s, y).
    pair = jnp.stack([s, grad_diff])[:, None, :]
    history = jnp.concatenate([state.history[:, 1:], pair], axis=1)
    # New last column of S'Y (its last entry is s'y) and of Y'Y (last entry y'y).
    col = history.reshape(2 * m, -1) @ grad_diff
    s_col, y_col = col[:m], col[m:]
    # R^-1 of the kept pairs is the trailing block of the old R^-1; the new column of
    # [[R, c], [0, d]]^-1 is (-R^-1 c / d, 1 / d).
    trail = state.r_inv[1:, 1:]
    new_col = jnp.concatenate([-(trail @ s_col[:-1]) / safe_sy, (1.0 / safe_sy)[None]])
    zero_row = jnp.zeros((1, m - 1), trail.dtype)
    r_inv = jnp.concatenate([jnp.concatenate([trail, zero_row]), new_col[:, None]], axis=1)
    yy_mat = jnp.concatenate(
        [jnp.concatenate([state.yy[1:, 1:], y_col[None, :-1]]), y_col[:, None]], axis=1
    )
    new = _LBFGSState(
        history=history,
        r_inv=r_inv,
        yy=yy_mat,
        sy=jnp.concatenate([state.sy[1:], sy[None]]),
        gamma=sy / jnp.where(good, yy, 1.0),
    )
    return jax.tree.map(lambda a, b: jnp.where(good, a, b), new, state)


def _two_loop_init(m, y):
    # (S, Y, rho = 1 / s'y, number of pairs stored so far): a ring buffer, rho == 0 in slots
    # not yet filled.
    zeros = jnp.zeros((m, y.size), y.dtype)
    return (zeros, zeros, jnp.zeros((m,), y.dtype), jnp.array(0, jnp.int32))


def _two_loop_direction(m, grad, state):
    s_hist, y_hist, rho, count = state
    newest = (count - 1) % m

    # Newest to oldest; slots not yet filled have rho == 0 and drop out.
    def first_loop(q, i):
        k = (newest - i) % m
        alpha = rho[k] * jnp.vdot(s_hist[k], q)
        return q - alpha * y_hist[k], alpha

    q, alphas = lax.scan(first_loop, grad, jnp.arange(m, dtype=jnp.int32))
    sy = jnp.vdot(s_hist[newest], y_hist[newest])
    yy = jnp.vdot(y_hist[newest], y_hist[newest])
    gamma = jnp.where((count > 0) & (yy > 0), sy / jnp.where(yy > 0, yy, 1.0), 1.0)

    def second_loop(r, i):
        k = (newest - (m - 1 - i)) % m
        beta = rho[k] * jnp.vdot(y_hist[k], r)
        return r + s_hist[k] * (alphas[m - 1 - i] - beta), None

    r, _ = lax.scan(second_loop, gamma * q, jnp.arange(m, dtype=jnp.int32))
    return -r


def _two_loop_update(m, s, grad_diff, sy, good, state):
    s_hist, y_hist, rho, count = state
    k = count % m
    # Only row k changes: select on that row rather than on the whole history.
    return (
        s_hist.at[k].set(jnp.where(good, s, s_hist[k])),
        y_hist.at[k].set(jnp.where(good, grad_diff, y_hist[k])),
        rho.at[k].set(jnp.where(good, 1.0 / jnp.where(good, sy, 1.0), rho[k])),
        jnp.where(good, count + 1, count),
    )
