"""Explicit Runge–Kutta methods as data: one generic step, seven Butcher tableaux.

A method is a `ButcherTableau` (`c`, strictly lower-triangular `a`, weights `b` and the weights
`b_error` of the embedded error estimate `b - b_hat`); `AbstractExplicitRK.step` evaluates any of
them. Methods whose last stage is the first stage of the next step (FSAL: Bosh3, Dopri5, Tsit5)
carry it in the solver state. Dense output is the method's own fourth-order continuous extension
where it has one (Dopri5: Hairer, Nørsett & Wanner's, Solving ODEs I §II.6; Tsit5: Tsitouras',
2011), else the cubic Hermite interpolant through the values and derivatives at both ends.

On an `SDETerm` (only `Heun` declares that it accepts one) each stage uses the combined
increment `f(t, z) dt + g(t, z) dW`, which is the Stratonovich Heun method.
"""

from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np
from numpy.polynomial import polynomial as npoly

from ._solver import AbstractSolver, DenseInfo, StepOutput
from ._term import ODETerm, SDETerm


class ButcherTableau(NamedTuple):
    """An explicit Runge–Kutta method as data.

    **Fields:**

    - `c`: the `s` stage times, as fractions of the step (`c[0] == 0`).
    - `a`: the strictly lower-triangular coefficients, rows `1..s-1` (row `j` has `j` entries).
    - `b`: the `s` weights of the solution.
    - `b_error`: `b - b_hat`, the weights of the embedded error estimate, or `None` (then the
      method takes only constant steps).
    - `fsal`: whether the last stage is `f(t1, y1)` (first same as last: reused next step).

    **Example** (Ralston's second-order method, with the embedded Euler error estimate):

    ```python
    ralston = js.diffeq.ButcherTableau(
        c=(0.0, 2 / 3), a=((2 / 3,),), b=(1 / 4, 3 / 4), b_error=(-3 / 4, 3 / 4)
    )
    assert abs(sum(ralston.b) - 1.0) < 1e-12  # consistency: the weights sum to one
    assert abs(sum(ralston.b_error)) < 1e-12  # b_hat = (1, 0) also sums to one
    ```

    `AbstractExplicitRK`'s example turns a tableau into a solver.
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...] | None
    fsal: bool = False


def _combine(y0, coeffs, stages, scale=None):
    """y0 + sum_l coeffs[l] * stages[l] (* scale), skipping zero coefficients."""
    terms = [(float(c), k) for c, k in zip(coeffs, stages, strict=False) if c != 0]
    if not terms:
        return y0

    def leaf(y, *ks):
        acc = None
        for (c, _), k in zip(terms, ks, strict=True):
            part = c * k
            acc = part if acc is None else acc + part
        if scale is not None:
            acc = scale.astype(acc.dtype) * acc
        return acc if y is None else y + acc

    if y0 is None:
        return jax.tree.map(lambda *ks: leaf(None, *ks), *[k for _, k in terms])
    return jax.tree.map(leaf, y0, *[k for _, k in terms])


def _poly(*factors) -> np.ndarray:
    """The product of polynomials given by coefficient lists in increasing powers."""
    out = np.array([1.0])
    for factor in factors:
        out = npoly.polymul(out, np.asarray(factor, dtype=np.float64))
    return out


def _weights(rows) -> np.ndarray:
    """Stack per-stage polynomials (increasing powers of theta) into a (stages, degree+1) array."""
    degree = max(len(r) for r in rows)
    out = np.zeros((len(rows), degree))
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class AbstractExplicitRK(AbstractSolver):
    """An explicit Runge–Kutta method given by its class variable `tableau`.

    Subclasses set `tableau` (a `ButcherTableau`), `order`, `adaptive` and the other class
    variables of `AbstractSolver` (`term_types`, and `strong_order`); the step, FSAL and the
    cubic Hermite dense output come from this class.

    **Example** (Ralston's method, written by a user, checked for second-order convergence):

    ```python
    class Ralston(js.diffeq.AbstractExplicitRK):
        tableau = js.diffeq.ButcherTableau(
            c=(0.0, 2 / 3), a=((2 / 3,),), b=(1 / 4, 3 / 4), b_error=(-3 / 4, 3 / 4)
        )
        term_types = (js.diffeq.ODETerm,)
        order = 2
        adaptive = True

        def strong_order(self, terms):
            return None

    term = js.diffeq.ODETerm(lambda t, y, args: -y)
    errors = [
        abs(js.diffeq.solve(term, Ralston(), 0.0, 1.0, jnp.ones(()), dt0=dt).ys[-1] - jnp.exp(-1.0))
        for dt in (0.1, 0.05)
    ]
    assert 3.5 < errors[0] / errors[1] < 4.5  # halving the step divides the error by 2**2
    ```
    """

    tableau: ClassVar[ButcherTableau]
    levy_area: ClassVar[str] = "none"

    def init(self, terms, t0, t1, y0, args) -> Any:
        if self.tableau.fsal and isinstance(terms, ODETerm):
            return terms.vector_field(t0, y0, args)
        return None

    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        tab = self.tableau
        h = t1 - t0
        stochastic = isinstance(terms, SDETerm)

        def stage(t, z):
            if not stochastic:
                return terms.vector_field(t, z, args)
            drift = terms.drift(t, z, args)
            noise = terms.prod(terms.diffusion(t, z, args), increment.W)
            return jax.tree.map(lambda f, g: h.astype(f.dtype) * f + g, drift, noise)

        first = state if (tab.fsal and not stochastic) else stage(t0, y0)
        ks = [first]
        # For ODEs the stages are derivatives (scaled by h when combined); for SDEs they are
        # already increments.
        scale = None if stochastic else h
        for c, row in zip(tab.c[1:], tab.a, strict=True):
            z = _combine(y0, row, ks, scale)
            ks.append(stage(t0 + c * h, z))
        y1 = _combine(y0, tab.b, ks, scale)
        y_error = None if tab.b_error is None else _combine(None, tab.b_error, ks, scale)
        if stochastic:
            return StepOutput(y1, y_error, DenseInfo(y0, y1), None)
        f1 = ks[-1] if tab.fsal else terms.vector_field(t1, y1, args)
        new_state = f1 if tab.fsal else None
        stages = tuple(ks) if self.dense_weights is not None else None
        return StepOutput(y1, y_error, DenseInfo(y0, y1, ks[0], f1, stages), new_state)


class _ODEOnly(AbstractExplicitRK):
    term_types: ClassVar[tuple[type, ...]] = (ODETerm,)

    def strong_order(self, terms) -> float | None:
        return None


class Euler(_ODEOnly):
    """The explicit Euler method (order 1, no error estimate; for SDEs use `EulerMaruyama`).

    **Example:**

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -y)
    sol = js.diffeq.solve(term, js.diffeq.Euler(), 0.0, 1.0, jnp.ones(()), dt0=0.1)
    assert jnp.allclose(sol.ys[-1], 0.9**10)  # ten steps of y <- y - 0.1 y
    ```
    """

    tableau = ButcherTableau(c=(0.0,), a=(), b=(1.0,), b_error=None)
    order = 1
    adaptive = False


class Midpoint(_ODEOnly):
    """The explicit midpoint method (order 2, embedded Euler error estimate).

    **Example:**

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -y)
    controller = js.diffeq.PIDController(rtol=1e-4, atol=1e-6)
    sol = js.diffeq.solve(term, js.diffeq.Midpoint(), 0.0, 1.0, jnp.ones(()), controller=controller)
    assert jnp.allclose(sol.ys[-1], jnp.exp(-1.0), rtol=1e-3)
    ```
    """

    tableau = ButcherTableau(c=(0.0, 0.5), a=((0.5,),), b=(0.0, 1.0), b_error=(-1.0, 1.0))
    order = 2
    adaptive = True


class RK4(_ODEOnly):
    """The classical fourth-order Runge–Kutta method (no error estimate).

    **Example** (one period of the harmonic oscillator):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: jnp.stack([y[1], -y[0]]))
    y0 = jnp.array([1.0, 0.0])
    sol = js.diffeq.solve(term, js.diffeq.RK4(), 0.0, 2 * np.pi, y0, dt0=0.1)
    assert jnp.allclose(sol.ys[-1], y0, atol=1e-4)
    ```

    Reference: W. Kutta, "Beitrag zur näherungsweisen Integration totaler
    Differentialgleichungen", 1901.
    """

    tableau = ButcherTableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
        b_error=None,
    )
    order = 4
    adaptive = False


class Bosh3(_ODEOnly):
    """The Bogacki–Shampine 3(2) pair (FSAL; Bogacki & Shampine, 1989): cheap at loose
    tolerances.

    **Example** (`y = exp(-t²)`, saved at five times by dense output):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -2 * t * y)
    ts = jnp.linspace(0.0, 2.0, 5)
    sol = js.diffeq.solve(term, js.diffeq.Bosh3(), 0.0, 2.0, jnp.ones(()),
                          saveat=js.diffeq.SaveAt(ts=ts),
                          controller=js.diffeq.PIDController(rtol=1e-5, atol=1e-7))
    assert jnp.allclose(sol.ys, jnp.exp(-(ts**2)), atol=5e-4)  # cubic Hermite between steps
    ```

    Reference: P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge–Kutta formulas", Appl. Math.
    Lett. 2(4), 1989.
    """

    tableau = ButcherTableau(
        c=(0.0, 0.5, 0.75, 1.0),
        a=((0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
        b=(2 / 9, 1 / 3, 4 / 9, 0.0),
        b_error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
        fsal=True,
    )
    order = 3
    adaptive = True


def _dopri5_dense() -> np.ndarray:
    # Hairer's continuous extension (the `contd5` of DOPRI5), written per stage: with
    # ydiff = h sum b_i k_i, bspl = h k_1 - ydiff, r4 = ydiff - h k_7 - bspl and r5 = h sum d_i k_i,
    # y(t0 + theta h) = y0 + theta ydiff + theta (1-theta) bspl + theta^2 (1-theta) r4
    #                   + theta^2 (1-theta)^2 r5.
    b = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
    d = np.array(
        [
            -12715105075 / 11282082432,
            0.0,
            87487479700 / 32700410799,
            -10690763975 / 1880347072,
            701980252875 / 199316789632,
            -1453857185 / 822651844,
            69997945 / 29380423,
        ]
    )
    e1, e7 = np.eye(7)[0], np.eye(7)[6]
    basis = [
        (b, _poly([0, 1])),
        (e1 - b, _poly([0, 1], [1, -1])),
        (2 * b - e1 - e7, _poly([0, 1], [0, 1], [1, -1])),
        (d, _poly([0, 1], [0, 1], [1, -1], [1, -1])),
    ]
    out = np.zeros((7, 5))
    for vec, poly in basis:
        out[:, : len(poly)] += np.outer(vec, poly)
    return out


_DOPRI5_DENSE = _dopri5_dense()


class Dopri5(_ODEOnly):
    """The Dormand–Prince 5(4) pair (FSAL; Dormand & Prince, 1980), with its fourth-order dense
    output.

    **Example** (the logistic equation, whose solution is `1 / (1 + 9 exp(-t))` from 0.1):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: y * (1 - y))
    sol = js.diffeq.solve(term, js.diffeq.Dopri5(), 0.0, 5.0, jnp.array(0.1),
                          controller=js.diffeq.PIDController(rtol=1e-6, atol=1e-8))
    assert jnp.allclose(sol.ys[-1], 1 / (1 + 9 * jnp.exp(-5.0)), rtol=1e-5)
    ```

    Reference: J. R. Dormand, P. J. Prince, "A family of embedded Runge–Kutta formulae",
    J. Comput. Appl. Math. 6(1), 1980.
    """

    tableau = ButcherTableau(
        c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        a=(
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
        ),
        b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
        b_error=tuple(
            np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
            - np.array(
                [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]
            )
        ),
        fsal=True,
    )
    order = 5
    adaptive = True
    dense_weights = _DOPRI5_DENSE


_TSIT5_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
)
_TSIT5_BHAT = (
    0.09468075576583945,
    0.009183565540343254,
    0.4877705284247616,
    1.234297566930479,
    -2.7077123499835256,
    1.866628418170587,
    1 / 66,
)


def _tsit5_dense() -> np.ndarray:
    # Tsitouras (2011), the interpolant's b_i(theta) in factored form (roots as published).
    theta = [0.0, 1.0]
    return _weights(
        [
            -1.0530884977290216
            * _poly(theta, [-1.3299890189751412, 1], [0.7139816917074209, -1.4364028541716351, 1]),
            0.1017 * _poly(theta, theta, [1.2949852507374631, -2.1966568338249754, 1]),
            2.490627285651252793
            * _poly(theta, theta, [1.57803468208092486, -2.38535645472061657, 1]),
            -16.54810288924490272
            * _poly([-1.21712927295533244, 1], [-0.61620406037800089, 1], theta, theta),
            47.37952196281928122
            * _poly([-1.203071208372362603, 1], [-0.658047292653547382, 1], theta, theta),
            -34.87065786149660974 * _poly([-1.2, 1], [-2 / 3, 1], theta, theta),
            2.5 * _poly([-1.0, 1], [-0.6, 1], theta, theta),
        ]
    )


class Tsit5(_ODEOnly):
    """Tsitouras' 5(4) pair (FSAL; Tsitouras, 2011): usually the most efficient
    non-stiff method at moderate tolerances.

    **Example** (a batch of decays `y' = -k y` with `k` in `args`, and its gradient in `k`):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, k: -k * y)
    controller = js.diffeq.PIDController(rtol=1e-6, atol=1e-8)

    def y1(k):
        return js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.ones(3), args=k,
                               controller=controller).ys[-1]

    k = jnp.array([0.5, 1.0, 2.0])
    assert jnp.allclose(y1(k), jnp.exp(-k), rtol=1e-5)
    assert jnp.allclose(jax.jacrev(y1)(k), jnp.diag(-jnp.exp(-k)), rtol=1e-4, atol=1e-6)
    ```

    Reference: Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only the first
    column simplifying assumption", Comput. Math. Appl. 62(2), 2011.
    """

    tableau = ButcherTableau(
        c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
        a=(
            (0.161,),
            (-0.008480655492356989, 0.335480655492357),
            (2.897153057105493, -6.359448489975075, 4.3622954328695815),
            (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
            (
                5.86145544294642,
                -12.92096931784711,
                8.159367898576159,
                -0.071584973281401,
                -0.028269050394068383,
            ),
            _TSIT5_B,
        ),
        b=(*_TSIT5_B, 0.0),
        b_error=tuple(float(x) for x in np.array((*_TSIT5_B, 0.0)) - np.array(_TSIT5_BHAT)),
        fsal=True,
    )
    order = 5
    adaptive = True
    dense_weights = _tsit5_dense()


class Heun(AbstractExplicitRK):
    """Heun's method: order 2 for ODEs (embedded Euler error estimate); on an `SDETerm`, the
    Stratonovich Heun method with strong order 1 for additive and diagonal (commutative) noise
    and 1/2 for general noise.

    **Example** (geometric Brownian motion in the Stratonovich sense, whose exact solution is
    `exp(mu t + sigma W(t))`):

    ```python
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (3,), jax.random.key(0))
    term = js.diffeq.SDETerm(lambda t, y, a: 0.5 * y, lambda t, y, a: 0.2 * y, bm)
    sol = js.diffeq.solve(term, js.diffeq.Heun(), 0.0, 1.0, jnp.ones(3), dt0=0.05)
    assert jnp.allclose(sol.ys[-1], jnp.exp(0.5 + 0.2 * bm.evaluate(1.0)), rtol=1e-2)
    ```
    """

    tableau = ButcherTableau(c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), b_error=(-0.5, 0.5))
    term_types = (ODETerm, SDETerm)
    order = 2
    adaptive = True

    def strong_order(self, terms) -> float | None:
        if not isinstance(terms, SDETerm):
            return None
        return 0.5 if terms.noise == "general" else 1.0
