"""Stochastic Runge–Kutta methods that use the space-time Lévy area H, as tableau data.

With `I = ∫_{t0}^{t1} W_{t0,r} dr = h (W/2 + H)` the methods below match the Itô–Taylor
expansion to strong order 1.5 for additive noise using only `W` and `H` per step (no iterated
integrals `∫W dW` are needed).

Two forms:

- additive (`AdditiveSRKTableau`): the diffusion is evaluated once, stages are
  `z_j = y0 + h Σ_l a_jl f_l + g (aw_j W + ah_j H)`, and
  `y1 = y0 + h Σ_j b_j f_j + g (bw W + bh H)`;
- general (`GeneralSRKTableau`): drift and diffusion at every stage,
  `z_j = y0 + Σ_{l<j} (a_jl h f_l + aw_jl g_l W + ah_jl g_l H)`, and the same with `b`.

The error estimate is the same combination with the `*_error` weights (the difference to an
embedded lower-order method).
"""

from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np

from ._solver import AbstractSolver, DenseInfo, StepOutput
from ._term import SDETerm


class AdditiveSRKTableau(NamedTuple):
    """A stochastic Runge–Kutta method for additive noise, as data (see the module docstring).

    Stages `z_j = y0 + h Σ_l a_jl f_l + g (aw_j W + ah_j H)` with `f_l` the drift at stage `l`
    and `g` the diffusion (evaluated once); `y1 = y0 + h Σ_j b_j f_j + g (bw W + bh H)`;
    `b_error` gives the embedded error estimate `h Σ_j b_error_j f_j`, or is `None`.

    **Example** (the stochastic midpoint method, which evaluates the drift at the mean of the
    path over the step, `y0 + g (W/2 + H)`; a user solver built from it):

    ```python
    midpoint = js.diffeq.AdditiveSRKTableau(
        c=(0.5,), a=(), b=(1.0,), b_error=None, aw=(0.5,), ah=(1.0,)
    )

    class StochasticMidpoint(js.diffeq.AbstractSRK):
        tableau = midpoint
        noise_types = ("additive",)
        order = 1
        adaptive = False

        def strong_order(self, terms):
            return 1.0

    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (2,), jax.random.key(0),
                                         levy_area="space-time")
    term = js.diffeq.SDETerm(lambda t, y, a: -y, lambda t, y, a: jnp.full(2, 0.3), bm,
                             noise="additive")
    mine = js.diffeq.solve(term, StochasticMidpoint(), 0.0, 1.0, jnp.ones(2), dt0=0.1)
    sea = js.diffeq.solve(term, js.diffeq.SEA(), 0.0, 1.0, jnp.ones(2), dt0=0.1)
    assert jnp.allclose(mine.ys, sea.ys, rtol=1e-5)  # the same method as SEA
    ```
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...] | None
    aw: tuple[float, ...]
    ah: tuple[float, ...]
    bw: float = 1.0
    bh: float = 0.0


class GeneralSRKTableau(NamedTuple):
    """A stochastic Runge–Kutta method for any noise, as data (see the module docstring).

    Drift `f_l` and diffusion `g_l` at every stage:
    `z_j = y0 + Σ_{l<j} (a_jl h f_l + aw_jl g_l W + ah_jl g_l H)` and
    `y1 = y0 + Σ_j (b_j h f_j + bw_j g_j W + bh_j g_j H)`; the `*_error` weights give the
    embedded error estimate, or are all `None`.

    **Example** (the Stratonovich Heun method written as a tableau, checked against `Heun`):

    ```python
    heun = js.diffeq.GeneralSRKTableau(
        c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), b_error=None,
        aw=((1.0,),), bw=(0.5, 0.5), bw_error=None, ah=((0.0,),), bh=(0.0, 0.0), bh_error=None,
    )

    class MyHeun(js.diffeq.AbstractSRK):
        tableau = heun
        order = 2
        adaptive = False

        def strong_order(self, terms):
            return 1.0

    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (2,), jax.random.key(0),
                                         levy_area="space-time")
    term = js.diffeq.SDETerm(lambda t, y, a: -y, lambda t, y, a: 0.3 * jnp.sin(y), bm)
    mine = js.diffeq.solve(term, MyHeun(), 0.0, 1.0, jnp.ones(2), dt0=0.1)
    ref = js.diffeq.solve(term, js.diffeq.Heun(), 0.0, 1.0, jnp.ones(2), dt0=0.1)
    assert jnp.allclose(mine.ys, ref.ys, rtol=1e-5)
    ```
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...] | None
    aw: tuple[tuple[float, ...], ...]
    bw: tuple[float, ...]
    bw_error: tuple[float, ...] | None
    ah: tuple[tuple[float, ...], ...]
    bh: tuple[float, ...]
    bh_error: tuple[float, ...] | None


def _lincomb(base, pairs):
    """base + Σ c * x over (c, x) pairs with c != 0 (`base` may be None)."""
    pairs = [(float(c), x) for c, x in pairs if c != 0]
    if not pairs:
        return base
    xs = [x for _, x in pairs]

    def leaf(*leaves):
        if base is None:
            acc, rest = None, leaves
        else:
            acc, rest = leaves[0], leaves[1:]
        for (c, _), x in zip(pairs, rest, strict=True):
            acc = c * x if acc is None else acc + c * x
        return acc

    if base is None:
        return jax.tree.map(leaf, *xs)
    return jax.tree.map(leaf, base, *xs)


class AbstractSRK(AbstractSolver):
    """A stochastic Runge–Kutta method given by its class variable `tableau` (Stratonovich).

    Subclasses set `tableau` (an `AdditiveSRKTableau` or a `GeneralSRKTableau`), `order`,
    `adaptive` (whether the tableau has error weights), optionally `noise_types`, and implement
    `strong_order`. Reads `W` and the space-time Lévy area `H`.

    **Example:** the examples of `AdditiveSRKTableau` and `GeneralSRKTableau` each define a
    solver; every built-in stochastic Runge–Kutta method is one:

    ```python
    for solver in (js.diffeq.ShARK(), js.diffeq.SRA1(), js.diffeq.SEA(), js.diffeq.SPaRK()):
        assert isinstance(solver, js.diffeq.AbstractSRK)
        assert solver.levy_area == "space-time"
    ```
    """

    tableau: ClassVar[Any]
    term_types: ClassVar[tuple[type, ...]] = (SDETerm,)
    levy_area: ClassVar[str] = "space-time"

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        tab = self.tableau
        h = t1 - t0

        def hf(t, z):
            return jax.tree.map(lambda f: h.astype(f.dtype) * f, terms.drift(t, z, args))

        if isinstance(tab, AdditiveSRKTableau):
            g = terms.diffusion(t0, y0, args)
            gw = terms.prod(g, increment.W)
            gh = terms.prod(g, increment.H)
            fs = []
            for j, cj in enumerate(tab.c):
                row = tab.a[j - 1] if j > 0 else ()
                z = _lincomb(y0, [*zip(row, fs, strict=False), (tab.aw[j], gw), (tab.ah[j], gh)])
                fs.append(hf(t0 + cj * h, z))
            y1 = _lincomb(y0, [*zip(tab.b, fs, strict=True), (tab.bw, gw), (tab.bh, gh)])
            y_error = None
            if tab.b_error is not None:
                y_error = _lincomb(None, list(zip(tab.b_error, fs, strict=True)))
            return StepOutput(y1, y_error, DenseInfo(y0, y1), None)

        fs, gws, ghs = [], [], []
        for j, cj in enumerate(tab.c):
            pairs = []
            if j > 0:
                pairs += list(zip(tab.a[j - 1], fs, strict=False))
                pairs += list(zip(tab.aw[j - 1], gws, strict=False))
                pairs += list(zip(tab.ah[j - 1], ghs, strict=False))
            z = _lincomb(y0, pairs)
            tj = t0 + cj * h
            fs.append(hf(tj, z))
            g = terms.diffusion(tj, z, args)
            gws.append(terms.prod(g, increment.W))
            ghs.append(terms.prod(g, increment.H))
        y1 = _lincomb(
            y0,
            [
                *zip(tab.b, fs, strict=True),
                *zip(tab.bw, gws, strict=True),
                *zip(tab.bh, ghs, strict=True),
            ],
        )
        y_error = None
        if tab.b_error is not None:
            y_error = _lincomb(
                None,
                [
                    *zip(tab.b_error, fs, strict=True),
                    *zip(tab.bw_error, gws, strict=True),
                    *zip(tab.bh_error, ghs, strict=True),
                ],
            )
        return StepOutput(y1, y_error, DenseInfo(y0, y1), None)


class _AdditiveOnly(AbstractSRK):
    noise_types: ClassVar[tuple[str, ...]] = ("additive",)

    def strong_order(self, terms) -> float | None:
        return 1.5


class ShARK(_AdditiveOnly):
    r"""The Shifted Additive-noise Runge–Kutta method: strong order 1.5 for additive noise, two
    drift evaluations per step, with an embedded error estimate (for `PIDController`).

    Stages `z1 = y0 + g H`, `z2 = y0 + (5/6)(h f(z1) + g W) + g H`;
    `y1 = y0 + h (2/5 f(z1) + 3/5 f(z2)) + g W`. Needs `levy_area="space-time"`.

    **Example:**

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 5e-3, (2,), jax.random.key(0),
                                         levy_area="space-time")
    term = js.diffeq.SDETerm(lambda t, y, a: -jnp.sin(y), lambda t, y, a: jnp.full(2, 0.5),
                             bm, noise="additive")
    # adaptive steps on the same Brownian path as a fine constant-step reference
    sol = js.diffeq.solve(term, js.diffeq.ShARK(), 0.0, 1.0, jnp.zeros(2), dt0=0.05,
                          controller=js.diffeq.PIDController(rtol=1e-4, atol=1e-4))
    ref = js.diffeq.solve(term, js.diffeq.ShARK(), 0.0, 1.0, jnp.zeros(2), dt0=0.01)
    assert jnp.allclose(sol.ys[-1], ref.ys[-1], atol=1e-3)
    ```

    Reference: J. Foster, G. dos Reis, C. Strange, "High order splitting methods for SDEs
    satisfying a commutativity condition", 2023; Jelinčič, Foster, Kidger et al., "Single-seed
    generation of Brownian paths and integrals for adaptive and high order SDE solvers", 2024.
    """

    tableau = AdditiveSRKTableau(
        c=(0.0, 5 / 6),
        a=((5 / 6,),),
        b=(0.4, 0.6),
        b_error=(-0.6, 0.6),
        aw=(0.0, 5 / 6),
        ah=(1.0, 1.0),
    )
    order: ClassVar[int | None] = 2
    adaptive: ClassVar[bool] = True


class SRA1(_AdditiveOnly):
    r"""Rößler's SRA1: strong order 1.5 for additive noise, two drift evaluations per step,
    with an embedded error estimate.

    `z2 = y0 + (3/4) h f(y0) + (3/2) g I/h` with `I/h = W/2 + H`;
    `y1 = y0 + h (1/3 f(y0) + 2/3 f(z2)) + g W`.

    **Example** (an Ornstein–Uhlenbeck process: its mean decays like `exp(-t)`):

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (1000,), jax.random.key(0),
                                         levy_area="space-time")
    term = js.diffeq.SDETerm(lambda t, y, a: -y, lambda t, y, a: jnp.full(1000, 0.5), bm,
                             noise="additive")
    sol = js.diffeq.solve(term, js.diffeq.SRA1(), 0.0, 1.0, jnp.ones(1000), dt0=0.1)
    # 1000 independent paths: mean exp(-1), standard deviation 0.5 sqrt((1 - exp(-2))/2)
    assert abs(jnp.mean(sol.ys[-1]) - jnp.exp(-1.0)) < 4 * 0.33 / jnp.sqrt(1000)
    ```

    Reference: A. Rößler, "Runge–Kutta methods for the strong approximation of solutions of
    stochastic differential equations", SIAM J. Numer. Anal., 2010.
    """

    tableau = AdditiveSRKTableau(
        c=(0.0, 0.75),
        a=((0.75,),),
        b=(1 / 3, 2 / 3),
        b_error=(-2 / 3, 2 / 3),
        aw=(0.0, 0.75),
        ah=(0.0, 1.5),
    )
    order: ClassVar[int | None] = 2
    adaptive: ClassVar[bool] = True


class SEA(AbstractSRK):
    r"""The Shifted Euler method for additive noise: one drift evaluation per step at the
    shifted point `y0 + g (W/2 + H)` (the mean of the path over the step given `W` and `H`):
    `y1 = y0 + h f(t0 + h/2, y0 + g (W/2 + H)) + g W`.

    Strong order 1 for additive noise, with a smaller error constant than Euler–Maruyama; no
    error estimate.

    **Example** (a time-dependent drift, which SEA evaluates in the middle of each step):

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 2.0, 1e-2, (2,), jax.random.key(1),
                                         levy_area="space-time")
    term = js.diffeq.SDETerm(lambda t, y, a: jnp.cos(t) * jnp.ones_like(y),
                             lambda t, y, a: jnp.full(2, 0.1), bm, noise="additive")
    sol = js.diffeq.solve(term, js.diffeq.SEA(), 0.0, 2.0, jnp.zeros(2), dt0=0.1)
    # y(t) = sin(t) + 0.1 W(t); the midpoint rule integrates cos to O(h²)
    assert jnp.allclose(sol.ys[-1], jnp.sin(2.0) + 0.1 * bm.evaluate(2.0), atol=2e-3)
    ```

    Reference: J. Foster, "Numerical approximations for stochastic differential equations",
    PhD thesis, Oxford, 2020.
    """

    tableau = AdditiveSRKTableau(c=(0.5,), a=(), b=(1.0,), b_error=None, aw=(0.5,), ah=(1.0,))
    order: ClassVar[int | None] = 1
    adaptive: ClassVar[bool] = False
    noise_types: ClassVar[tuple[str, ...]] = ("additive",)

    def strong_order(self, terms) -> float | None:
        return 1.0


_X1 = (3 - np.sqrt(3)) / 6
_X2 = np.sqrt(3) / 3


class SPaRK(AbstractSRK):
    r"""The Splitting Path Runge–Kutta method (Stratonovich, any noise), three drift and
    diffusion evaluations per step, with an embedded error estimate designed for adaptive
    stepping.

    Strong order 1.5 for additive noise, 1 for commutative (e.g. diagonal) noise and 1/2 for
    general noise. Needs `levy_area="space-time"`.

    **Example** (adaptive steps on geometric Brownian motion, Stratonovich sense, whose exact
    solution is `exp(mu t + sigma W(t))`):

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-3, (2,), jax.random.key(0),
                                         levy_area="space-time")
    term = js.diffeq.SDETerm(lambda t, y, a: 0.5 * y, lambda t, y, a: 0.3 * y, bm)
    sol = js.diffeq.solve(term, js.diffeq.SPaRK(), 0.0, 1.0, jnp.ones(2), dt0=0.05,
                          controller=js.diffeq.PIDController(rtol=1e-3, atol=1e-3))
    assert jnp.allclose(sol.ys[-1], jnp.exp(0.5 + 0.3 * bm.evaluate(1.0)), rtol=1e-2)
    ```

    Reference: J. Foster, "On the convergence of adaptive approximations for stochastic
    differential equations", 2023 (Definition 1.6); Jelinčič, Foster, Kidger et al., 2024.
    """

    tableau = GeneralSRKTableau(
        c=(0.0, 0.5, 1.0),
        a=((0.5,), (0.0, 1.0)),
        b=(_X1, _X2, _X1),
        b_error=(_X1 - 0.5, _X2, _X1 - 0.5),
        aw=((0.5,), (0.0, 1.0)),
        bw=(_X1, _X2, _X1),
        bw_error=(_X1 - 0.5, _X2, _X1 - 0.5),
        ah=((np.sqrt(3.0),), (0.0, 0.0)),
        bh=(1.0, 0.0, -1.0),
        bh_error=(1.0, 0.0, -1.0),
    )
    order: ClassVar[int | None] = 2
    adaptive: ClassVar[bool] = True

    def strong_order(self, terms) -> float | None:
        return {"additive": 1.5, "diagonal": 1.0, "general": 0.5}[terms.noise]
