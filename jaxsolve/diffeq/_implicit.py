"""Stiff ODE solvers: implicit Euler and Kværnø's ESDIRK methods (orders 3, 4 and 5).

An ESDIRK (explicit first stage, singly diagonally implicit Runge–Kutta) method has stages
`k_0 = f(t0, y0)` and, for `i >= 1`, `k_i = f(t0 + c_i h, z_i)` with

    z_i = psi_i + h gamma k_i,   psi_i = y0 + h sum_{j<i} a_ij k_j,

one nonlinear equation per stage with the same `gamma` on the diagonal. Each is solved with a
root finder from `jaxsolve.nonlinear` (`ModifiedNewton` by default: the Jacobian `J = df/dy` is
evaluated once per step at `(t0, y0)`, `I - h gamma J` is factorised once per step with
`jaxsolve.linear`'s `LU` and reused by every stage and iteration), started from the method's
stage predictor. The stage derivative is then `k_i = (z_i - psi_i) / (h gamma)` (no extra
evaluation of `f`, and Newton's residual error is not amplified by the stiff Jacobian). The
methods are stiffly accurate (`y1` is the last stage), so the last stage is `f(t1, y1)`, reused
as the next step's first stage (FSAL). A stage whose iteration fails (diverges, a singular
matrix, too many iterations) makes the step return a NaN solution and an infinite error, which
an adaptive solve rejects (the controller shrinks the step by `factormin`) and a constant-step
solve reports as `RESULTS.nonfinite`.

Gradients: each stage is differentiated implicitly (`jaxsolve.implicit.custom_root` on the
stage equation at the converged value, with the solver's `linear_solver` for the tangent and
cotangent systems); the Newton iterations are never differentiated, and the Jacobian they use
carries no derivative.

Reference: A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with an explicit first
stage", BIT 44 (2004); Hairer & Wanner, "Solving ODEs II", §IV.6 and §IV.8.
"""

from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from .. import implicit, linear, nonlinear
from .._core import RESULTS
from ._newton import Factor, ModifiedNewton
from ._solver import AbstractSolver, DenseInfo, StepOutput
from ._term import ODETerm


class ESDIRKTableau(NamedTuple):
    """A stiffly accurate ESDIRK method as data.

    **Fields:**

    - `gamma`: the diagonal coefficient of the implicit stages.
    - `a`: rows `1..s-1` of the strictly lower-triangular coefficients (row `i` has `i`
      entries); the diagonal is `gamma`, and the last row with `gamma` appended is `b`.
    - `c`: the `s` stage times as fractions of the step (`c[0] == 0`, `c[-1] == 1`).
    - `b_error`: `b - b_hat`, the weights of the embedded error estimate (`s` entries).
    - `predictor`: rows `1..s-1` of the weights of each stage's starting guess
      `y0 + h sum_{j<i} predictor_ij k_j`, or `None` (start from the previous stage).

    **Example** (the implicit trapezoidal rule as a one-implicit-stage ESDIRK):

    ```python
    trapezoid = js.diffeq.ESDIRKTableau(
        gamma=0.5, a=((0.5,),), c=(0.0, 1.0), b_error=(-0.5, 0.5), predictor=None
    )
    b = (*trapezoid.a[-1], trapezoid.gamma)
    assert abs(sum(b) - 1.0) < 1e-12  # consistency
    ```
    """

    gamma: float
    a: tuple[tuple[float, ...], ...]
    c: tuple[float, ...]
    b_error: tuple[float, ...]
    predictor: tuple[tuple[float, ...], ...] | None = None


def _stage_residual(z, data):
    """`F(z) = z - psi - h gamma f(t, z)` on flat arrays."""
    terms, args, psi, hg, t, unravel = data
    f = ravel_pytree(terms.vector_field(t, unravel(z), args))[0]
    return z - psi - hg * f


def _find_root(finder, z0, data, max_steps):
    """Run a `jaxsolve.nonlinear` root finder's `init`/`step`/`terminate` on the stage equation
    in a `lax.while_loop` (never differentiated: the caller differentiates the root implicitly).
    Returns the last iterate and whether the iteration failed (its result is not successful,
    it ran out of steps, or the iterate is not finite)."""
    options = {"loop_kind": "lax"}
    state = finder.init(_stage_residual, z0, data, options)

    def cond(carry):
        _, _, done, _, count = carry
        return ~done & (count < max_steps)

    def body(carry):
        z, state, _, _, count = carry
        z, state = finder.step(_stage_residual, z, data, options, state)
        done, result = finder.terminate(_stage_residual, z, data, options, state)
        done = done | ~jnp.all(jnp.isfinite(z))
        return z, state, done, result, count + 1

    init = (z0, state, jnp.array(False), RESULTS.successful, jnp.array(0))
    z, _, done, result, _ = lax.while_loop(cond, body, init)
    failed = ~done | (result != RESULTS.successful) | ~jnp.all(jnp.isfinite(z))
    return z, failed


def _combine(base, coeffs, ks, h):
    """`base + h * sum_j coeffs[j] ks[j]`, skipping zero coefficients (flat arrays)."""
    acc = None
    for c, k in zip(coeffs, ks, strict=False):
        if c != 0:
            part = float(c) * k
            acc = part if acc is None else acc + part
    if acc is None:
        return base
    acc = h * acc
    return acc if base is None else base + acc


def _stop_gradient(tree):
    return jax.tree.map(lambda x: lax.stop_gradient(x) if eqx.is_array(x) else x, tree)


class AbstractESDIRK(AbstractSolver):
    """A stiffly accurate ESDIRK method given by its class variable `tableau` (an
    `ESDIRKTableau`); the step, the once-per-step Jacobian and factorisation, FSAL and the cubic
    Hermite dense output come from this class.

    **Fields** (of every subclass):

    - `root_finder`: the `jaxsolve.nonlinear` root finder of the stage equations. Default
      `ModifiedNewton()` (Jacobian and factorisation once per step, shared by all stages); set
      its `rtol`/`atol` to the controller's tolerances. Any other root finder (`Newton()`,
      `Chord()`, `Broyden()`) is run by `jaxsolve.nonlinear.root_find` on each stage as it is
      (with its own Jacobians: slower).
    - `linear_solver`: the `jaxsolve.linear` solver of the Newton systems and of the implicit
      derivative's systems: `LU()` (default), or an iterative one (`GMRES(...)`) for large
      systems.
    - `max_newton_steps`: the most iterations per stage (default 10); more fails the step.

    **Example** (the trapezoidal rule, written by a user, checked for second order):

    ```python
    class Trapezoid(js.diffeq.AbstractESDIRK):
        tableau = js.diffeq.ESDIRKTableau(
            gamma=0.5, a=((0.5,),), c=(0.0, 1.0), b_error=(-0.5, 0.5)
        )
        order = 2

    term = js.diffeq.ODETerm(lambda t, y, args: -y)
    errors = [
        abs(js.diffeq.solve(term, Trapezoid(), 0.0, 1.0, jnp.ones(()), dt0=dt).ys[-1]
            - jnp.exp(-1.0))
        for dt in (0.1, 0.05)
    ]
    assert 3.5 < errors[0] / errors[1] < 4.5
    ```
    """

    root_finder: nonlinear.AbstractRootFinder = ModifiedNewton()
    linear_solver: linear.AbstractLinearSolver = linear.LU()
    max_newton_steps: int = eqx.field(static=True, default=10)

    tableau: ClassVar[ESDIRKTableau]
    term_types: ClassVar[tuple[type, ...]] = (ODETerm,)
    levy_area: ClassVar[str] = "none"
    adaptive: ClassVar[bool] = True

    def __check_init__(self):
        if not isinstance(self.root_finder, nonlinear.AbstractRootFinder):
            raise TypeError(
                "`root_finder` must be a jaxsolve.nonlinear root finder (ModifiedNewton(), "
                f"Newton(), Chord(), Broyden()), got {type(self.root_finder).__name__}"
            )
        if not isinstance(self.linear_solver, linear.AbstractLinearSolver):
            raise TypeError(
                "`linear_solver` must be a jaxsolve.linear solver (LU(), GMRES(...), ...), got "
                f"{type(self.linear_solver).__name__}"
            )
        steps = self.max_newton_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"`max_newton_steps` must be a positive int, got {steps!r}")

    def strong_order(self, terms) -> float | None:
        return None

    def init(self, terms, t0, t1, y0, args) -> Any:
        return ravel_pytree(terms.vector_field(t0, y0, args))[0]

    def step(self, terms, t0, t1, y0, args, increment, state) -> StepOutput:
        tab = self.tableau
        y0_flat, unravel = ravel_pytree(y0)
        dtype = y0_flat.dtype
        h = (t1 - t0).astype(dtype)
        hg = h * jnp.asarray(tab.gamma, dtype)
        f0 = state

        finder = self.root_finder
        if isinstance(finder, ModifiedNewton):
            # One Jacobian and one factorisation per step, shared by every stage; not
            # differentiated (the converged stages do not depend on it).
            sg_terms, sg_args, sg_y0, sg_t0, sg_hg = _stop_gradient((terms, args, y0_flat, t0, hg))

            def flat_field(z):
                return ravel_pytree(sg_terms.vector_field(sg_t0, unravel(z), sg_args))[0]

            jac = jax.jacfwd(flat_field)(sg_y0)
            matrix = jnp.eye(jac.shape[0], dtype=dtype) - sg_hg * jac
            finder = finder.with_factor(Factor.build(matrix, self.linear_solver))

        ks = [f0]
        failed = jnp.array(False)
        for i, row in enumerate(tab.a, start=1):
            psi = _combine(y0_flat, row, ks, h)
            if tab.predictor is not None:
                guess = _combine(y0_flat, tab.predictor[i - 1], ks, h)
            else:
                guess = psi + hg * ks[-1]
            t_stage = t0 + jnp.asarray(tab.c[i], t0.dtype) * (t1 - t0)
            data = (terms, args, psi, hg, t_stage, unravel)
            value, stage_failed = _find_root(
                finder, lax.stop_gradient(guess), _stop_gradient(data), self.max_newton_steps
            )
            failed = failed | stage_failed
            # The derivative of the stage is that of the root of F(z; data) (the implicit
            # function theorem), taken at the converged value; a failed stage (whose step is
            # rejected) is differentiated at y0 instead, where F's Jacobian is the matrix that
            # was factorised, so that the zero cotangent of a rejected step stays zero and no
            # NaN from a diverged iterate leaks into the gradient.
            z = lax.stop_gradient(jnp.where(stage_failed, y0_flat, value))
            z = implicit.custom_root(_stage_residual, solve=self.linear_solver)(
                lambda z_init, data: z
            )(z, data)
            ks.append((z - psi) / hg)
        b = (*tab.a[-1], tab.gamma)
        y1 = _combine(y0_flat, b, ks, h)
        y_error = _combine(None, tab.b_error, ks, h)
        y1 = jnp.where(failed, jnp.nan, y1)
        y_error = jnp.where(failed, jnp.inf, y_error)
        f1 = ks[-1]
        y1_tree = unravel(y1)
        info = DenseInfo(y0, y1_tree, unravel(f0), unravel(f1))
        return StepOutput(y1_tree, unravel(y_error), info, f1)


class ImplicitEuler(AbstractESDIRK):
    """The implicit (backward) Euler method: order 1, L-stable. Its error estimate is the
    difference with the trapezoidal rule, `h/2 (f(t1, y1) - f(t0, y0))`, of order 2.

    **Arguments:** `root_finder` (default `ModifiedNewton()`), `linear_solver` (default
    `jaxsolve.linear.LU()`), `max_newton_steps` (default 10): see `AbstractESDIRK`.

    **Example** (a stiff linear decay, stable with steps 100 times its time scale):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -1000.0 * (y - jnp.cos(t)))
    sol = js.diffeq.solve(term, js.diffeq.ImplicitEuler(), 0.0, 1.0, jnp.zeros(()), dt0=0.1)
    assert jnp.allclose(sol.ys[-1], jnp.cos(1.0), atol=1e-3)  # explicit Euler would blow up
    ```
    """

    tableau = ESDIRKTableau(gamma=1.0, a=((0.0,),), c=(0.0, 1.0), b_error=(-0.5, 0.5))
    order = 1
    error_estimate_order = 2  # the step-size controller's exponent is 1/2


# Kværnø (2004), the 3(2) pair: gamma is the root of 6 g^3 - 18 g^2 + 9 g - 1 = 0 in (1/3, 1/2)
# (L-stability); the other coefficients follow from the order conditions.
def _kvaerno3() -> ESDIRKTableau:
    g = 0.43586652150845899941601945
    a31 = (-4 * g**2 + 6 * g - 1) / (4 * g)
    a32 = (-2 * g + 1) / (4 * g)
    a41 = (6 * g - 1) / (12 * g)
    a42 = -1 / ((24 * g - 12) * g)
    a43 = (-6 * g**2 + 6 * g - 1) / (6 * g - 3)
    theta = 1 / (2 * g)
    return ESDIRKTableau(
        gamma=g,
        a=((g,), (a31, a32), (a41, a42, a43)),
        c=(0.0, 2 * g, 1.0, 1.0),
        b_error=(a41 - a31, a42 - a32, a43 - g, g),
        predictor=((1.0,), (1 - theta, theta), (a31, a32, g)),
    )


def _kvaerno4() -> ESDIRKTableau:
    g = 0.5728160625

    def p(*coeffs):
        return np.polyval(coeffs, g)

    a31 = p(144, -180, 81, -15, 1) * g / p(12, -6, 1) ** 2
    a32 = p(-36, 39, -15, 2) * g / p(12, -6, 1) ** 2
    a41 = p(-144, 396, -330, 117, -18, 1) / (12 * g**2 * p(12, -9, 2))
    a42 = p(72, -126, 69, -15, 1) / (12 * g**2 * p(3, -1))
    a43 = (p(-6, 6, -1) * p(12, -6, 1) ** 2) / (12 * g**2 * p(12, -9, 2) * p(3, -1))
    a51 = p(288, -312, 120, -18, 1) / (48 * g**2 * p(12, -9, 2))
    a52 = p(24, -12, 1) / (48 * g**2 * p(3, -1))
    a53 = -(p(12, -6, 1) ** 3) / (48 * g**2 * p(3, -1) * p(12, -9, 2) * p(6, -6, 1))
    a54 = p(-24, 36, -12, 1) / p(24, -24, 4)
    c2, c3 = 2 * g, g + a31 + a32
    th1, th2 = c3 / c2, (1 - c2) / (c3 - c2)
    return ESDIRKTableau(
        gamma=g,
        a=((g,), (a31, a32), (a41, a42, a43), (a51, a52, a53, a54)),
        c=(0.0, c2, c3, 1.0, 1.0),
        b_error=(a51 - a41, a52 - a42, a53 - a43, a54 - g, g),
        predictor=((1.0,), (1 - th1, th1), (0.0, 1 - th2, th2), (a41, a42, a43, g)),
    )


def _kvaerno5() -> ESDIRKTableau:
    g = 0.26
    a = (
        (g,),
        (0.13, 0.84033320996790809),
        (0.22371961478320505, 0.47675532319799699, -0.06470895363112615),
        (0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998),
        (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676),
        (
            0.13659751177640291,
            0.0,
            -0.05496908796538376,
            -0.04118626728321046,
            0.62993304899016403,
            0.06962479448202728,
        ),
    )
    c = tuple(float(sum(row) + g) for row in a)
    b = np.array((*a[-1], g))
    b_hat = np.array((*a[-2], g, 0.0))
    return ESDIRKTableau(
        gamma=g,
        a=a,
        c=(0.0, *c),
        b_error=tuple(float(x) for x in b - b_hat),
        predictor=(
            (1.0,),
            (-1.366025403784441, 2.3660254037844357),
            (-0.19650552613122207, 0.8113579546496623, 0.38514757148155954),
            (0.10375304369958693, 0.937994698066431, -0.04174774176601781, 0.0),
            (-0.17281112873898072, 0.6235784481025847, 0.5492326806363959, 0.0, 0.0),
            (*a[-2], g),
        ),
    )


class Kvaerno3(AbstractESDIRK):
    """Kværnø's 3(2) ESDIRK pair (four stages, three implicit, L-stable, stiffly accurate).

    **Arguments:** `root_finder` (default `ModifiedNewton()`), `linear_solver` (default
    `jaxsolve.linear.LU()`), `max_newton_steps` (default 10): see `AbstractESDIRK`.

    **Example** (the Robertson chemical kinetics, stiff, to t = 100):

    ```python
    def robertson(t, y, args):
        a, b, c = y
        return jnp.stack([-0.04 * a + 1e4 * b * c,
                          0.04 * a - 1e4 * b * c - 3e7 * b**2,
                          3e7 * b**2])

    rtol, atol = 1e-4, 1e-8
    solver = js.diffeq.Kvaerno3(root_finder=js.diffeq.ModifiedNewton(rtol=rtol, atol=atol))
    sol = js.diffeq.solve(js.diffeq.ODETerm(robertson), solver, 0.0, 100.0,
                          jnp.array([1.0, 0.0, 0.0]),
                          controller=js.diffeq.PIDController(rtol=rtol, atol=atol))
    assert jnp.allclose(sol.ys[-1].sum(), 1.0, atol=1e-5)  # mass is conserved
    assert jnp.allclose(sol.ys[-1][0], 0.6172, atol=1e-3)
    ```
    """

    tableau = _kvaerno3()
    order = 3


class Kvaerno4(AbstractESDIRK):
    """Kværnø's 4(3) ESDIRK pair (five stages, four implicit, L-stable, stiffly accurate).

    **Arguments:** `root_finder` (default `ModifiedNewton()`), `linear_solver` (default
    `jaxsolve.linear.LU()`), `max_newton_steps` (default 10): see `AbstractESDIRK`.

    **Example** (a stiff problem with steps where explicit RK4 would be unstable, `h lambda = -5`):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -50.0 * (y - jnp.sin(t)) + jnp.cos(t))
    errors = [
        abs(js.diffeq.solve(term, js.diffeq.Kvaerno4(), 0.0, 1.0, jnp.zeros(()), dt0=dt).ys[-1]
            - jnp.sin(1.0))
        for dt in (0.1, 0.05)
    ]
    assert errors[0] < 1e-5 and errors[1] < errors[0] / 4  # the exact solution is sin(t)
    ```
    """

    tableau = _kvaerno4()
    order = 4


class Kvaerno5(AbstractESDIRK):
    """Kværnø's 5(4) ESDIRK pair (seven stages, six implicit, L-stable, stiffly accurate): the
    stiff solver to try first at moderate to tight tolerances.

    **Arguments:** `root_finder` (default `ModifiedNewton()`), `linear_solver` (default
    `jaxsolve.linear.LU()`), `max_newton_steps` (default 10): see `AbstractESDIRK`.

    **Example** (stiff van der Pol, mu = 1000, with the gradient in mu):

    ```python
    def vdp(t, y, mu):
        return jnp.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    rtol, atol = 1e-5, 1e-8
    solver = js.diffeq.Kvaerno5(root_finder=js.diffeq.ModifiedNewton(rtol=rtol, atol=atol))
    controller = js.diffeq.PIDController(rtol=rtol, atol=atol)

    def final(mu):
        return js.diffeq.solve(js.diffeq.ODETerm(vdp), solver, 0.0, 100.0,
                               jnp.array([2.0, 0.0]), args=mu, controller=controller).ys[-1, 0]

    y = final(1000.0)
    assert jnp.allclose(y, 1.9314, atol=1e-3)  # on the slow branch, x falling from 2
    assert jnp.isfinite(jax.grad(final)(1000.0))
    ```
    """

    tableau = _kvaerno5()
    order = 5
