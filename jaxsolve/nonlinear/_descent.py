"""Descent directions: the "which way" half of a line-search minimiser (the line search is the
"how far" half). Each is a small final module with a pure state:

- `SteepestDescent`: d = -g.
- `NonlinearCGDescent(method)`: d = -g + beta d_prev (Fletcher-Reeves, Polak-Ribiere+,
  Hestenes-Stiefel, Dai-Yuan), restarted when d is not a descent direction.
- `BFGSDescent`: d = -H g with the dense BFGS inverse-Hessian update.
- `LBFGSDescent(history_size)`: the two-loop recursion over the last `history_size` pairs.

Interface: `init(y, grad) -> state`, `direction(grad, state) -> (d, state)`, and
`update(s, grad_diff, grad, state) -> state` after an accepted step `s` with gradient change
`grad_diff`.
"""

import abc
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array

from .._core import check_option


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
    """The L-BFGS two-loop recursion over the last `history_size` (s, y) pairs, with the initial
    inverse Hessian gamma I, gamma = s'y / y'y of the newest pair.

    **Example:**

    ```python
    descent = js.nonlinear.LBFGSDescent(history_size=5)
    grad = jnp.array([1.0, 10.0])
    direction, state = descent.direction(grad, descent.init(jnp.zeros(2), grad))
    print(direction)  # -grad at the start; AbstractDescent's example runs a whole loop
    ```

    Reference: Nocedal, "Updating quasi-Newton matrices with limited storage", Math. Comp. 1980.
    """

    history_size: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        if not isinstance(self.history_size, int) or self.history_size < 1:
            raise ValueError(f"`history_size` must be a positive int, got {self.history_size!r}")

    def init(self, y, grad):
        m = self.history_size
        zeros = jnp.zeros((m, y.size), y.dtype)
        return (zeros, zeros, jnp.zeros((m,), y.dtype), jnp.array(0, jnp.int32))

    def direction(self, grad, state):
        s_hist, y_hist, rho, count = state
        m = self.history_size
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
        r = gamma * q

        def second_loop(r, i):
            k = (newest - (m - 1 - i)) % m
            beta = rho[k] * jnp.vdot(y_hist[k], r)
            return r + s_hist[k] * (alphas[m - 1 - i] - beta), None

        r, _ = lax.scan(second_loop, r, jnp.arange(m, dtype=jnp.int32))
        return -r, state

    def update(self, s, grad_diff, grad, state):
        s_hist, y_hist, rho, count = state
        sy = jnp.vdot(s, grad_diff)
        good = sy > jnp.finfo(s.dtype).eps * jnp.sqrt(
            jnp.vdot(s, s) * jnp.vdot(grad_diff, grad_diff)
        )
        k = count % self.history_size
        # Only row k changes: select on that row rather than on the whole history.
        return (
            s_hist.at[k].set(jnp.where(good, s, s_hist[k])),
            y_hist.at[k].set(jnp.where(good, grad_diff, y_hist[k])),
            rho.at[k].set(jnp.where(good, 1.0 / jnp.where(good, sy, 1.0), rho[k])),
            jnp.where(good, count + 1, count),
        )
