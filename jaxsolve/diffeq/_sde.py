"""Euler–Maruyama and Milstein: the two Itô methods."""

from typing import ClassVar

import jax

from ._solver import AbstractSolver, DenseInfo, StepOutput
from ._term import SDETerm


class EulerMaruyama(AbstractSolver):
    r"""The Euler–Maruyama method for Itô SDEs:
    `y1 = y0 + f(t0, y0) h + g(t0, y0) W`.

    Strong order 1/2 (1 for additive noise); no error estimate. Uses only `W`.

    **Example:**

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (8,), jax.random.key(0))
    term = js.diffeq.SDETerm(lambda t, y, a: -y, lambda t, y, a: 0.2 * y, bm)
    sol = js.diffeq.solve(term, js.diffeq.EulerMaruyama(), 0.0, 1.0, jnp.ones(8), dt0=1e-2)
    # Itô geometric Brownian motion: y(1) = exp(-1 - 0.2²/2 + 0.2 W(1)); strong order 1/2
    exact = jnp.exp(-1.0 - 0.02 + 0.2 * bm.evaluate(1.0))
    assert jnp.allclose(sol.ys[-1], exact, rtol=2e-2)
    ```

    Reference: Kloeden & Platen, "Numerical Solution of Stochastic Differential Equations",
    1992, §10.2.
    """

    term_types: ClassVar[tuple[type, ...]] = (SDETerm,)
    levy_area: ClassVar[str] = "none"
    order: ClassVar[int | None] = 1
    adaptive: ClassVar[bool] = False

    def strong_order(self, terms) -> float | None:
        return 1.0 if terms.noise == "additive" else 0.5

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        h = t1 - t0
        drift = terms.drift(t0, y0, args)
        noise = terms.prod(terms.diffusion(t0, y0, args), increment.W)
        y1 = jax.tree.map(lambda y, f, g: y + h.astype(y.dtype) * f + g, y0, drift, noise)
        return StepOutput(y1, None, DenseInfo(y0, y1), None)


class Milstein(AbstractSolver):
    r"""The Milstein method for Itô SDEs with diagonal (or additive) noise:

    `y1 = y0 + f h + g W + ½ (∂g/∂y · g) (W² − h)`,

    with `∂g/∂y · g` computed by one Jacobian-vector product (for diagonal noise `g_i` may
    depend only on `y_i`). Strong order 1; no error estimate. Uses only `W`.

    **Example** (Itô geometric Brownian motion, whose exact solution is
    `exp((mu - sigma²/2) t + sigma W(t))`; Milstein's error is far below Euler–Maruyama's):

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (4,), jax.random.key(0))
    term = js.diffeq.SDETerm(lambda t, y, a: 0.1 * y, lambda t, y, a: 0.5 * y, bm)
    exact = jnp.exp((0.1 - 0.125) + 0.5 * bm.evaluate(1.0))

    def error(solver):
        sol = js.diffeq.solve(term, solver, 0.0, 1.0, jnp.ones(4), dt0=0.01)
        return jnp.max(jnp.abs(sol.ys[-1] - exact))

    assert error(js.diffeq.Milstein()) < 0.5 * error(js.diffeq.EulerMaruyama())
    ```

    Reference: G. N. Milstein, "Approximate integration of stochastic differential equations",
    Theory Probab. Appl., 1974; Kloeden & Platen (1992), §10.3.
    """

    term_types: ClassVar[tuple[type, ...]] = (SDETerm,)
    levy_area: ClassVar[str] = "none"
    order: ClassVar[int | None] = 1
    adaptive: ClassVar[bool] = False
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "additive")

    def strong_order(self, terms) -> float | None:
        return 1.0

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        h = t1 - t0
        w = increment.W
        drift = terms.drift(t0, y0, args)
        g0, dg_g = jax.jvp(
            lambda y: terms.diffusion(t0, y, args), (y0,), (terms.diffusion(t0, y0, args),)
        )

        def leaf(y, f, g, gg, dw):
            hh = h.astype(y.dtype)
            return y + hh * f + g * dw + 0.5 * gg * (dw * dw - hh)

        y1 = jax.tree.map(leaf, y0, drift, g0, dg_g, w)
        return StepOutput(y1, None, DenseInfo(y0, y1), None)
