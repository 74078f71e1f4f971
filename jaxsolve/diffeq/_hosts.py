r"""The Cox–Ingersoll–Ross SDE and HOStS, its high-order Strang splitting.

The CIR process `dy = a (b - y) dt + sigma sqrt(y) dW` (Itô) is, in Stratonovich form,

    dy = a (b~ - y) dt + sigma sqrt(y) ∘ dW,    b~ = b - sigma² / (4 a).

Both halves have exact flows: the drift is linear, `y ↦ e^{-a t} y + (1 - e^{-a t}) b~`, and the
noise ODE `dy = sigma sqrt(y) dw` is solved by `y ↦ (sqrt(y) + sigma w / 2)²`. Foster, dos Reis
and Strange split a step of size `h` into drift flows of durations
`(3 - √3)/6 h, h/√3, (3 - √3)/6 h` around two noise flows driven by `W/2 + √3 H` and
`W/2 - √3 H`, where `W` and `H` are the step's Brownian increment and space-time Lévy area
(the two noise pieces are the Brownian path's polynomial approximation split at the Gauss
points). Every stage is a convex combination of non-negative numbers and `b~`, or a square: when
`b > sigma² / (4 a)` the numerical solution stays strictly positive for every step size, where
Euler-type methods need truncation.

Near zero `sqrt(y)` is not Lipschitz and constant steps lose order; taking steps that shrink with
the state (`StateDependentStep` with `h = (c min(y_n, y_{n+1}))^{2/3}`) restores it, which is the
CIR experiment of Jelinčič, Foster, Kidger et al. (2024).
"""

import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from .._core import check_positive, hyperparameter
from ._solver import AbstractSolver, DenseInfo, StepOutput
from ._term import AbstractTerm, check_brownian

_SQRT3 = math.sqrt(3.0)
# Durations of the three drift flows, as fractions of the step.
_OUTER = (3.0 - _SQRT3) / 6.0
_INNER = 1.0 / _SQRT3


class CIRTerm(AbstractTerm):
    r"""The Cox–Ingersoll–Ross SDE `dy = a (b - y) dt + sigma sqrt(y) dW` (Itô), for `HOStS`.

    **Arguments:**

    - `a`: the speed of mean reversion (> 0).
    - `b`: the long-run mean (> 0).
    - `sigma`: the volatility (> 0).
    - `brownian`: a `jaxsolve.brownian.VirtualBrownianTree` of the shape of `y`, with
      `levy_area="space-time"` (or `"space-time-time"`).

    `y` is one floating array; each of its entries is an independent CIR process driven by the
    matching entry of the Brownian motion. `a`, `b`, `sigma` are array fields: new values do not
    recompile, and gradients flow to them. With `2 a b >= sigma²` (the Feller condition) the
    exact solution never reaches 0; `HOStS` stays positive under the weaker
    `b > sigma² / (4 a)`.

    **Example:**

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 2.0**-10, (4,), jax.random.key(0),
                                         levy_area="space-time")
    term = js.diffeq.CIRTerm(a=1.0, b=1.0, sigma=1.5, brownian=bm)
    sol = js.diffeq.solve(term, js.diffeq.HOStS(), 0.0, 1.0, jnp.ones(4), dt0=0.05)
    assert sol.ys.shape == (1, 4) and bool(jnp.all(sol.ys > 0))
    ```

    Reference: J. C. Cox, J. E. Ingersoll, S. A. Ross, "A theory of the term structure of
    interest rates", Econometrica 1985.
    """

    a: Any = hyperparameter()
    b: Any = hyperparameter()
    sigma: Any = hyperparameter()
    brownian: Any = None

    def __check_init__(self):
        for name in ("a", "b", "sigma"):
            check_positive(name, getattr(self, name))
        check_brownian(self.brownian)

    def validate(self, t0, y0, args):
        if not isinstance(y0, jax.Array) and not hasattr(y0, "shape"):
            raise TypeError(
                f"`y0` must be one floating array for a CIRTerm, got {type(y0).__name__}"
            )
        w = jax.eval_shape(lambda t: self.brownian.increment(t, t).W, t0)
        if not isinstance(w, jax.ShapeDtypeStruct) or w.shape != jnp.shape(y0):
            shape = getattr(w, "shape", w)
            raise ValueError(
                f"the Brownian motion of a CIRTerm must have the shape of `y0` "
                f"{jnp.shape(y0)}, got {shape}"
            )
        if w.dtype != jnp.result_type(y0):
            raise TypeError(
                f"the Brownian motion's dtype {w.dtype} must match `y0`'s "
                f"{jnp.result_type(y0)}; build it with dtype=y0.dtype"
            )


def _drift_flow(y, decay, target):
    """The exact linear drift flow: `decay y + (1 - decay) target`, with `1 - decay` passed in
    (from `expm1`, accurate for small steps)."""
    keep, move = decay
    return keep * y + move * target


def _noise_flow(y, increment, sigma):
    """The exact flow of `dy = sigma sqrt(y) dw` over an increment of `w`. The `maximum` only
    acts when `b < sigma²/(4a)`, where a drift stage can undershoot 0."""
    return jnp.square(jnp.sqrt(jnp.maximum(y, 0)) + 0.5 * sigma * increment)


class HOStS(AbstractSolver):
    r"""HOStS, the high-order Strang splitting of Foster, dos Reis and Strange for `CIRTerm`.

    One step of size `h` with Brownian increment `W` and space-time Lévy area `H`
    (`b~ = b - sigma²/(4a)`, `c1 = exp(-(3 - √3)/6 a h)`, `c2 = exp(-a h/√3)`):

        z1 = c1 y0 + (1 - c1) b~
        z2 = (sqrt(z1) + sigma/2 (W/2 + √3 H))²
        z3 = c2 z2 + (1 - c2) b~
        z4 = (sqrt(z3) + sigma/2 (W/2 - √3 H))²
        y1 = c1 z4 + (1 - c1) b~

    Strictly positive for every step when `b > sigma²/(4a)`. Strong order 1.5 where the path
    stays away from 0 (`sqrt` is smooth there); near 0 the order with constant steps drops (to
    about 0.7 at `a = b = 1`, `sigma = 1.5`, `T = 4`) and state-dependent steps
    (`StateDependentStep`) recover it. No vector-field evaluations: it costs a few `exp`,
    `sqrt` per step.

    Error estimate (so that it also runs with a `PIDController`): the difference to the same
    splitting with `H = 0` (the second-order Strang splitting driven by `W` alone).

    **Example** (adaptive steps that shrink near 0, as in Jelinčič, Foster, Kidger et al.):

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 4.0, 2.0**-14, (), jax.random.key(0),
                                         levy_area="space-time")
    term = js.diffeq.CIRTerm(a=1.0, b=1.0, sigma=1.5, brownian=bm)
    controller = js.diffeq.StateDependentStep(
        lambda t, y: (2.0**-4 * jnp.maximum(y, 0)) ** (2 / 3), dtmin=2.0**-12, dtmax=1.0
    )
    sol = js.diffeq.solve(term, js.diffeq.HOStS(), 0.0, 4.0, jnp.array(1.0), dt0=0.1,
                          controller=controller, saveat=js.diffeq.SaveAt(steps=True))
    steps = jnp.diff(sol.ts[: int(sol.stats["num_accepted_steps"])])
    y = sol.ys[: int(sol.stats["num_accepted_steps"])]
    assert bool(jnp.all(y > 0))
    # small steps where y is small, large where it is large
    assert steps[jnp.argmin(y[:-1])] < steps[jnp.argmax(y[:-1])]
    ```

    Reference: J. Foster, G. dos Reis, C. Strange, "High order splitting methods for SDEs
    satisfying a commutativity condition", SIAM J. Numer. Anal. 2024 (arXiv:2210.17543),
    eq. (5.3); Jelinčič, Foster, Kidger et al., "Single-seed generation of Brownian paths and
    integrals for adaptive and high order SDE solvers" (2024), §5.
    """

    term_types: ClassVar[tuple[type, ...]] = (CIRTerm,)
    levy_area: ClassVar[str] = "space-time"
    order: ClassVar[int | None] = 2
    adaptive: ClassVar[bool] = True

    def strong_order(self, terms):
        return 1.5

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        dtype = y0.dtype
        a, b, sigma = (jnp.asarray(p).astype(dtype) for p in (terms.a, terms.b, terms.sigma))
        h = jnp.asarray(t1 - t0).astype(dtype)
        target = b - sigma**2 / (4 * a)
        outer = (jnp.exp(-_OUTER * a * h), -jnp.expm1(-_OUTER * a * h))
        inner = (jnp.exp(-_INNER * a * h), -jnp.expm1(-_INNER * a * h))
        w = jnp.asarray(increment.W).astype(dtype)
        hh = jnp.asarray(increment.H).astype(dtype)

        def splitting(area):
            z = _drift_flow(y0, outer, target)
            z = _noise_flow(z, 0.5 * w + _SQRT3 * area, sigma)
            z = _drift_flow(z, inner, target)
            z = _noise_flow(z, 0.5 * w - _SQRT3 * area, sigma)
            return _drift_flow(z, outer, target)

        y1 = splitting(hh)
        error = y1 - splitting(jnp.zeros_like(hh))
        return StepOutput(y1, error, DenseInfo(y0, y1), None)
