r"""Underdamped Langevin diffusion and its splitting solvers ALIGN, ShOULD and QUICSORT.

The underdamped Langevin diffusion with potential `f`, friction `gamma` and inverse mass `u`,

    dx = v dt,
    dv = -gamma v dt - u ∇f(x) dt + sqrt(2 gamma u) dW,

has `exp(-f(x) - |v|²/(2u))` as its stationary density, so its `x` samples `exp(-f)`. The
solvers below integrate the linear part (friction and noise) exactly and the force by a
quadrature, which uses the Brownian increment `W` and its Lévy areas `H` (space-time) and `K`
(space-time-time) from a `jaxsolve.brownian` tree. Each returns an error estimate, so it runs
with constant steps or with a `PIDController`.

The coefficients are functions of `alpha = gamma h`: with `A(a) = (1 - e^-a)/a`,
`B(a) = (e^-a - 1 + a)/a²`, `C(a) = 6 (e^-a (a + 2) + a - 2)/a³` and
`D(a) = 60 (e^-a (a² + 6a + 12) - a² + 6a - 12)/a⁴`, evaluated by their Taylor series for small
`a` (the closed forms cancel catastrophically there).

References: J. Foster, T. Lyons, H. Oberhauser, "The shifted ODE method for underdamped
Langevin MCMC" (2021) (ShOULD, and the Strang splitting behind ALIGN); Jelinčič, Foster,
Kidger et al., "Single-seed generation of Brownian paths and integrals for adaptive and high
order SDE solvers" (2024) (ALIGN, QUICSORT, adaptive Langevin sampling); D. Scott, J. Foster,
"QUICSORT" as presented there.
"""

import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import check_same_structure
from ._solver import AbstractSolver, DenseInfo, StepOutput
from ._term import AbstractTerm, check_brownian

# Taylor coefficients (powers 0..9 of alpha) of A, B, C, D above.
_A_SERIES = tuple((-1) ** k / math.factorial(k + 1) for k in range(10))
_B_SERIES = tuple((-1) ** k / math.factorial(k + 2) for k in range(10))
_C_SERIES = (1, -1 / 2, 3 / 20, -1 / 30, 1 / 168, -1 / 1120, 1 / 8640, -1 / 75600, 1 / 739200,
             -1 / 7983360)  # fmt: skip
_D_SERIES = (0, -1, 1 / 2, -1 / 7, 5 / 168, -5 / 1008, 1 / 1440, -1 / 11880, 1 / 110880,
             -1 / 1153152)  # fmt: skip


def _horner(series, a):
    out = jnp.zeros_like(a) + series[-1]
    for c in reversed(series[:-1]):
        out = out * a + c
    return out


def _phi(name, a):
    """A, B, C or D at `a >= 0`: the Taylor series below a threshold, else the closed form."""
    threshold = 0.1 if a.dtype == jnp.float64 else 0.5
    small = a < threshold
    s = jnp.where(small, threshold, a)  # the closed form is evaluated away from 0
    e = jnp.exp(-s)
    if name == "A":
        series, direct = _A_SERIES, -jnp.expm1(-s) / s
    elif name == "B":
        series, direct = _B_SERIES, (jnp.expm1(-s) + s) / (s * s)
    elif name == "C":
        series, direct = _C_SERIES, 6 * (e * (s + 2) + s - 2) / s**3
    else:
        series, direct = _D_SERIES, 60 * (e * (s * (s + 6) + 12) - s * (s - 6) - 12) / s**4
    return jnp.where(small, _horner(series, a), direct)


def _broadcast_param(name, value, x):
    """`gamma` or `u` as a pytree shaped like `x` (a scalar is broadcast to every leaf)."""
    if jax.tree.structure(value) == jax.tree.structure(0):
        return jax.tree.map(lambda leaf: jnp.broadcast_to(jnp.asarray(value), leaf.shape), x)
    check_same_structure(name, value, x, "the position `x`")
    return value


class UnderdampedLangevinTerm(AbstractTerm):
    r"""The underdamped Langevin diffusion `dx = v dt`,
    `dv = -gamma v dt - u ∇f(x) dt + sqrt(2 gamma u) dW`, for the solvers ALIGN, ShOULD and
    QUICSORT. The state is the pair `y = (x, v)`.

    **Arguments:**

    - `gamma`: the friction, a positive scalar or a pytree shaped like `x` (elementwise).
    - `u`: the inverse mass, a positive scalar or a pytree shaped like `x`.
    - `grad_f`: `grad_f(x, args)`, the gradient of the potential, shaped like `x`.
    - `brownian`: a `jaxsolve.brownian.VirtualBrownianTree` of the shape of `x`, with
      `levy_area="space-time"` (ALIGN) or `"space-time-time"` (ShOULD, QUICSORT).

    The stationary law has density proportional to `exp(-f(x) - |v|²/(2u))`.

    **Example:**

    ```python
    # 1000 independent particles in the potential f(x) = |x|²/2: x tends to N(0, 1)
    bm = js.brownian.VirtualBrownianTree(0.0, 10.0, 0.05, (1000,), jax.random.key(0),
                                         levy_area="space-time-time")
    term = js.diffeq.UnderdampedLangevinTerm(1.0, 1.0, lambda x, args: x, bm)
    sol = js.diffeq.solve(term, js.diffeq.QUICSORT(), 0.0, 10.0,
                          (jnp.zeros(1000), jnp.zeros(1000)), dt0=0.1)
    x, v = sol.ys  # each of shape (1, 1000): SaveAt(t1=True)
    assert abs(jnp.var(x[-1]) - 1.0) < 0.2 and abs(jnp.var(v[-1]) - 1.0) < 0.2
    ```
    """

    gamma: Any
    u: Any
    grad_f: Callable
    brownian: Any

    def __check_init__(self):
        check_brownian(self.brownian)
        if not callable(self.grad_f):
            raise TypeError(f"`grad_f` must be callable, got {type(self.grad_f).__name__}")
        for name in ("gamma", "u"):
            for leaf in jax.tree.leaves(getattr(self, name)):
                if not isinstance(leaf, jax.core.Tracer) and bool(np.any(np.asarray(leaf) <= 0)):
                    raise ValueError(f"`{name}` must be positive, got {leaf}")

    def validate(self, t0, y0, args):
        if not (isinstance(y0, tuple) and len(y0) == 2):
            raise ValueError(
                "`y0` must be the pair (x0, v0) of position and velocity for an "
                f"UnderdampedLangevinTerm, got {type(y0).__name__}"
            )
        x0, v0 = y0
        check_same_structure("y0", v0, x0, "the position x0 (the velocity v0 must match)")
        grad = eqx.filter_eval_shape(self.grad_f, x0, args)
        check_same_structure("y0", x0, grad, "the output of grad_f")
        w = eqx.filter_eval_shape(lambda t: self.brownian.increment(t, t).W, t0)
        check_same_structure("y0", x0, w, "the Brownian motion (its `shape` must be x0's)")
        _broadcast_param("gamma", self.gamma, x0)
        _broadcast_param("u", self.u, x0)


def _params(terms, x0, h):
    """Per-leaf (gamma, u, rho = sqrt(2 gamma u), alpha = gamma h, h) in the dtype of `x`."""
    gamma = _broadcast_param("gamma", terms.gamma, x0)
    u = _broadcast_param("u", terms.u, x0)

    def leaf(x, g, uu):
        g = jnp.asarray(g).astype(x.dtype)
        uu = jnp.asarray(uu).astype(x.dtype)
        hx = jnp.asarray(h).astype(x.dtype)
        return g, uu, jnp.sqrt(2 * g * uu), g * hx, hx

    return jax.tree.map(leaf, x0, gamma, u)


def _as(tree, like):
    return jax.tree.map(lambda a, b: jnp.asarray(a).astype(b.dtype), tree, like)


class _AbstractLangevin(AbstractSolver):
    term_types: ClassVar[tuple[type, ...]] = (UnderdampedLangevinTerm,)
    fsal: ClassVar[bool]

    def init(self, terms, t0, t1, y0, args):
        # FSAL methods carry the gradient at the current position between steps.
        return terms.grad_f(y0[0], args) if self.fsal else None


class ALIGN(_AbstractLangevin):
    r"""ALIGN, a second-order splitting method for underdamped Langevin diffusion.

    The friction and the noise (through `W` and the space-time Lévy area `H`) are integrated
    exactly; the force by the trapezoidal rule, with one new gradient per step (FSAL). Strong
    order 2. Error estimate: the change of the force over the step, `u b1 (∇f(x1) - ∇f(x0))`.

    **Example:**

    ```python
    # adaptive steps in the double-well potential f(x) = (x² - 1)²: 1000 particles started at
    # x = 1 spread over both wells, symmetrically (the stationary law is even in x)
    bm = js.brownian.VirtualBrownianTree(0.0, 20.0, 1e-2, (1000,), jax.random.key(0),
                                         levy_area="space-time")
    term = js.diffeq.UnderdampedLangevinTerm(1.0, 1.0, lambda x, args: 4 * x * (x**2 - 1), bm)
    sol = js.diffeq.solve(term, js.diffeq.ALIGN(), 0.0, 20.0, (jnp.ones(1000), jnp.zeros(1000)),
                          dt0=0.1, controller=js.diffeq.PIDController(rtol=1e-2, atol=1e-2))
    x = sol.ys[0][-1]
    assert sol.result == js.RESULTS.successful
    assert abs(jnp.mean(x > 0) - 0.5) < 0.1
    ```

    Reference: the Strang splitting of Foster, Lyons & Oberhauser, "The shifted ODE method for
    underdamped Langevin MCMC" (2021), Def. 4.2, with Lévy-area noise as in Jelinčič, Foster,
    Kidger et al. (2024).
    """

    levy_area: ClassVar[str] = "space-time"
    order: ClassVar[int | None] = 2
    adaptive: ClassVar[bool] = True
    fsal: ClassVar[bool] = True

    def strong_order(self, terms):
        return 2.0

    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        x0, v0 = y0
        f0 = state
        p = _params(terms, x0, t1 - t0)
        w, hh = _as(increment.W, x0), _as(increment.H, x0)

        def first(x, v, f, prm, w, hh):
            g, u, rho, a, hx = prm
            a1, b1, chh = hx * _phi("A", a), hx * _phi("B", a), hx * _phi("C", a)
            return x + a1 * v - b1 * u * hx * f + rho * (b1 * w + chh * hh)

        x1 = jax.tree.map(first, x0, v0, f0, p, w, hh)
        f1 = terms.grad_f(x1, args)

        def second(v, fa, fb, prm, w, hh):
            g, u, rho, a, hx = prm
            beta, aa = jnp.exp(-a), _phi("A", a)
            a1, b1, chh = hx * aa, hx * _phi("B", a), hx * _phi("C", a)
            v1 = beta * v - u * ((a1 - b1) * fa + b1 * fb) + rho * (aa * w - g * chh * hh)
            return v1, -u * b1 * (fb - fa)

        out = jax.tree.map(second, v0, f0, f1, p, w, hh)
        v1, err_v = _unzip(out, x0)
        y1 = (x1, v1)
        error = (jax.tree.map(jnp.zeros_like, x1), err_v)
        return StepOutput(y1, error, DenseInfo(y0, y1), f1)


class ShOULD(_AbstractLangevin):
    r"""ShOULD (Shifted ODE with Underdamped Langevin Diffusion), a third-order method.

    Uses `W`, `H` and the space-time-time Lévy area `K`; two new gradients per step (FSAL:
    three evaluations, the last reused). Strong order 3. Error estimate: the difference
    between its Simpson-type force quadrature and the trapezoidal rule on the same gradients.

    **Example** (the stationary law has `x ~ N(0, 1)` and `v ~ N(0, u)` whatever the friction):

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 10.0, 0.05, (1000,), jax.random.key(1),
                                         levy_area="space-time-time")
    term = js.diffeq.UnderdampedLangevinTerm(2.0, 2.0, lambda x, args: x, bm)
    sol = js.diffeq.solve(term, js.diffeq.ShOULD(), 0.0, 10.0,
                          (jnp.zeros(1000), jnp.zeros(1000)), dt0=0.2)
    x, v = sol.ys
    assert abs(jnp.var(x[-1]) - 1.0) < 0.2 and abs(jnp.var(v[-1]) - 2.0) < 0.4
    ```

    Reference: Foster, Lyons & Oberhauser, "The shifted ODE method for underdamped Langevin
    MCMC" (2021); Jelinčič, Foster, Kidger et al. (2024).
    """

    levy_area: ClassVar[str] = "space-time-time"
    order: ClassVar[int | None] = 3
    adaptive: ClassVar[bool] = True
    fsal: ClassVar[bool] = True

    def strong_order(self, terms):
        return 3.0

    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        x0, v0 = y0
        f0 = state
        p = _params(terms, x0, t1 - t0)
        w, hh, kk = _as(increment.W, x0), _as(increment.H, x0), _as(increment.K, x0)

        def half(x, v, f, prm, w, hh, kk):
            g, u, rho, a, hx = prm
            a_half, b_half = (hx / 2) * _phi("A", a / 2), (hx / 4) * _phi("B", a / 2)
            v_shift = v + rho * (hh + 6 * kk)
            return x + a_half * v_shift + b_half * (-u * hx * f + rho * (w - 12 * kk))

        x1 = jax.tree.map(half, x0, v0, f0, p, w, hh, kk)
        f1 = terms.grad_f(x1, args)

        def full(x, v, fa, fb, prm, w, hh, kk):
            g, u, rho, a, hx = prm
            a1, b1 = hx * _phi("A", a), hx * _phi("B", a)
            chk = hx * _phi("C", a) * hh + hx * _phi("D", a) * kk
            return x + a1 * v - u * hx * b1 * (fa / 3 + 2 * fb / 3) + rho * (b1 * w + chk), chk

        out = jax.tree.map(full, x0, v0, f0, f1, p, w, hh, kk)
        x2, chk = _unzip(out, x0)
        f2 = terms.grad_f(x2, args)

        def velocity(v, fa, fb, fc, prm, w, chk):
            g, u, rho, a, hx = prm
            beta1, beta_half, aa = jnp.exp(-a), jnp.exp(-a / 2), _phi("A", a)
            simpson = beta1 * fa / 6 + 2 * beta_half * fb / 3 + fc / 6
            trapezoid = (beta1 * fa + fc) / 2
            v2 = beta1 * v - u * hx * simpson + rho * (aa * w - g * chk)
            b1 = hx * _phi("B", a)
            return v2, -u * hx * (simpson - trapezoid), -u * hx * b1 * (2 / 3) * (fb - fa)

        out = jax.tree.map(velocity, v0, f0, f1, f2, p, w, chk)
        v2, err_v, err_x = _unzip(out, x0, 3)
        y1 = (x2, v2)
        return StepOutput(y1, (err_x, err_v), DenseInfo(y0, y1), f2)


_L = 0.5 - math.sqrt(3) / 6
_R = 0.5 + math.sqrt(3) / 6


class QUICSORT(_AbstractLangevin):
    r"""QUICSORT, a third-order method with the force at the two Gauss–Legendre points.

    Uses `W`, `H`, `K`; two gradient evaluations per step (not FSAL). Strong order 3. Error
    estimate: the difference between its Gauss quadrature of the force and the same step with
    the two gradients averaged.

    **Example** (large steps: 1000 particles in `f(x) = |x|²/2` reach the stationary law
    `x ~ N(0, 1)`, `v ~ N(0, u)` in 20 steps of 0.5):

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 10.0, 0.1, (1000,), jax.random.key(2),
                                         levy_area="space-time-time")
    term = js.diffeq.UnderdampedLangevinTerm(1.0, 0.5, lambda x, args: x, bm)
    sol = js.diffeq.solve(term, js.diffeq.QUICSORT(), 0.0, 10.0,
                          (jnp.zeros(1000), jnp.zeros(1000)), dt0=0.5)
    x, v = sol.ys
    assert abs(jnp.var(x[-1]) - 1.0) < 0.2 and abs(jnp.var(v[-1]) - 0.5) < 0.1
    ```

    Reference: Jelinčič, Foster, Kidger et al., "Single-seed generation of Brownian paths and
    integrals for adaptive and high order SDE solvers" (2024).
    """

    levy_area: ClassVar[str] = "space-time-time"
    order: ClassVar[int | None] = 3
    adaptive: ClassVar[bool] = True
    fsal: ClassVar[bool] = False

    def strong_order(self, terms):
        return 3.0

    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        x0, v0 = y0
        p = _params(terms, x0, t1 - t0)
        w, hh, kk = _as(increment.W, x0), _as(increment.H, x0), _as(increment.K, x0)

        def coeffs(a, hx):
            # a_x = (1 - e^{-a x})/gamma, b_x = (e^{-a x} + a x - 1)/(gamma² h), x in {l, r, 1}.
            a_l, a_r, a_1 = (hx * z * _phi("A", a * z) for z in (_L, _R, 1.0))
            b_l, b_r, b_1 = (hx * z * z * _phi("B", a * z) for z in (_L, _R, 1.0))
            return a_l, a_r, a_1, b_l, b_r, b_1

        def first(x, v, prm, w, hh, kk):
            g, u, rho, a, hx = prm
            a_l, _, _, b_l, _, _ = coeffs(a, hx)
            v_shift = v + rho * (hh + 6 * kk)
            return x + a_l * v_shift + b_l * rho * (w - 12 * kk)

        x1 = jax.tree.map(first, x0, v0, p, w, hh, kk)
        f1 = terms.grad_f(x1, args)

        def second(x, v, fa, prm, w, hh, kk):
            g, u, rho, a, hx = prm
            _, a_r, _, _, b_r, _ = coeffs(a, hx)
            v_shift = v + rho * (hh + 6 * kk)
            a_third = (hx / 3) * _phi("A", a / 3)
            return x + a_r * v_shift + b_r * rho * (w - 12 * kk) - a_third * u * hx * fa

        x2 = jax.tree.map(second, x0, v0, f1, p, w, hh, kk)
        f2 = terms.grad_f(x2, args)

        def final(x, v, fa, fb, prm, w, hh, kk):
            g, u, rho, a, hx = prm
            a_l, a_r, a_1, b_l, b_r, b_1 = coeffs(a, hx)
            beta_l, beta_r, beta_1 = jnp.exp(-a * _L), jnp.exp(-a * _R), jnp.exp(-a)
            fa, fb = u * hx * fa, u * hx * fb
            v_shift = v + rho * (hh + 6 * kk)
            rho_wk = rho * (w - 12 * kk)
            x_out = x + a_1 * v_shift + b_1 * rho_wk - (a_r * fa + a_l * fb) / 2
            v_out = (
                beta_1 * v_shift
                - (beta_r * fa + beta_l * fb) / 2
                + _phi("A", a) * rho_wk
                - rho * (hh - 6 * kk)
            )
            err_x = -(a_r - a_l) * (fa - fb) / 4
            err_v = -(beta_r - beta_l) * (fa - fb) / 4
            return x_out, v_out, err_x, err_v

        out = jax.tree.map(final, x0, v0, f1, f2, p, w, hh, kk)
        x_out, v_out, err_x, err_v = _unzip(out, x0, 4)
        y1 = (x_out, v_out)
        return StepOutput(y1, (err_x, err_v), DenseInfo(y0, y1), None)


def _unzip(tree, like, num=2):
    """Split a pytree (shaped like `like`) of `num`-tuples into `num` pytrees."""
    treedef = jax.tree.structure(like)
    leaves = treedef.flatten_up_to(tree)
    return tuple(jax.tree.unflatten(treedef, [leaf[i] for leaf in leaves]) for i in range(num))
