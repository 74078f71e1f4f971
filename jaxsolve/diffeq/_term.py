"""Terms: what is integrated. An ODE vector field, or an SDE's drift and diffusion with its
Brownian motion.

A term is an `eqx.Module`; its callables are fields, so a term built from a closure over a
traced value (a parameter being differentiated) is a pytree like any other. A term with a
`brownian` attribute that is not `None` is stochastic: `solve` queries Brownian increments from
it (pre-drawn for fixed steps, on demand for adaptive ones) and hands them to the solver.
"""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core import check_option, check_same_structure

_NOISE = ("diagonal", "additive", "general")


def check_brownian(brownian: Any) -> None:
    """Eager check that a term's `brownian` is a Brownian motion (has the query methods)."""
    for name in ("increment", "increments", "levy_area"):
        if not hasattr(brownian, name):
            raise TypeError(
                "`brownian` must be a Brownian motion such as "
                f"jaxsolve.brownian.VirtualBrownianTree (it has no `{name}`); got "
                f"{type(brownian).__name__}"
            )


class AbstractTerm(eqx.Module):
    """The base class of terms: subclass it to integrate something new.

    A subclass sets `brownian` (a class attribute `None` for deterministic terms, or a field
    holding a `jaxsolve.brownian` object) and implements `validate`, which checks eagerly, in
    Python, that `y0` fits the term (use `eqx.filter_eval_shape`, which accepts any `args`:
    models, functions, static data; never run the vector field).

    **Example** (a linear term and a user solver that steps it exactly):

    ```python
    class LinearTerm(js.diffeq.AbstractTerm):  # dy/dt = A y with a constant matrix A
        A: jax.Array
        brownian: None = None

        def validate(self, t0, y0, args):
            if jnp.shape(y0) != self.A.shape[:1]:
                raise ValueError(f"`y0` must have shape {self.A.shape[:1]}, got {jnp.shape(y0)}")

    class MatrixExponential(js.diffeq.AbstractSolver):
        term_types = (LinearTerm,)
        levy_area = "none"
        order = None
        adaptive = False

        def strong_order(self, terms):
            return None

        def init(self, terms, t0, t1, y0, args):
            return None

        def step(self, terms, t0, t1, y0, args, increment, state):
            y1 = jax.scipy.linalg.expm((t1 - t0) * terms.A) @ y0
            return js.diffeq.StepOutput(y1, None, js.diffeq.DenseInfo(y0, y1), None)

    rotation = LinearTerm(jnp.array([[0.0, 1.0], [-1.0, 0.0]]))
    sol = js.diffeq.solve(rotation, MatrixExponential(), 0.0, np.pi, jnp.array([1.0, 0.0]),
                          dt0=0.5)
    assert jnp.allclose(sol.ys[-1], jnp.array([-1.0, 0.0]), atol=1e-5)
    ```
    """

    brownian: eqx.AbstractVar[Any]

    @abc.abstractmethod
    def validate(self, t0: Any, y0: Any, args: Any) -> None:
        """Raise `ValueError`/`TypeError` naming the argument when `y0` does not fit the term."""


class ODETerm(AbstractTerm):
    """The vector field of an ODE `dy/dt = f(t, y, args)`.

    **Arguments:**

    - `vector_field`: `f(t, y, args) -> dy/dt`, returning a pytree shaped like `y`.

    **Example:**

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -args * y)
    sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 1.0, jnp.ones(2), args=0.5, dt0=0.1)
    assert jnp.allclose(sol.ys[-1], jnp.exp(-0.5), rtol=1e-5)
    ```
    """

    vector_field: Callable
    brownian: None = None

    def validate(self, t0, y0, args):
        out = eqx.filter_eval_shape(self.vector_field, t0, y0, args)
        check_same_structure("y0", y0, out, "the vector field's output")


def _shapes(tree):
    """(treedef, [leaf shapes]) of a pytree of arrays or ShapeDtypeStructs."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [tuple(jnp.shape(leaf)) for leaf in leaves]


class SDETerm(AbstractTerm):
    r"""The drift and diffusion of an SDE `dy = f(t, y) dt + g(t, y) dW`, with its Brownian motion.

    **Arguments:**

    - `drift`: `f(t, y, args)`, returning a pytree shaped like `y`.
    - `diffusion`: `g(t, y, args)`. With `noise="diagonal"` or `"additive"` it returns a pytree
      shaped like `y` that multiplies `dW` elementwise (the Brownian motion has the shape of
      `y`); `"additive"` promises that `g` does not depend on `y` (solvers such as ShARK and
      SRA1 rely on it; it is not checked). With `noise="general"` the Brownian motion is one
      array `w` and each leaf of `g` has shape `(*y_leaf.shape, *w.shape)`, contracted with `dW`.
    - `brownian`: a `jaxsolve.brownian.VirtualBrownianTree` (or any object with `increment`,
      `increments`, `levy_area` and `shape` like it).
    - `noise`: `"diagonal"` (default), `"additive"` or `"general"`.

    Whether the SDE is read in the Itô or the Stratonovich sense is a property of the solver
    (EulerMaruyama and Milstein are Itô; Heun, SRA1, ShARK, SEA and SPaRK are Stratonovich;
    the two agree for additive noise).

    **Example:**

    ```python
    key1, key2 = jax.random.split(jax.random.key(0))
    # diagonal noise: a 2-vector y driven by a 2-dimensional Brownian motion, elementwise
    bm = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (2,), key1)
    diagonal = js.diffeq.SDETerm(lambda t, y, a: -y, lambda t, y, a: 0.5 * y, bm)
    # general noise: g(t, y) is a (2, 3) matrix contracted with a 3-dimensional dW
    bm3 = js.brownian.VirtualBrownianTree(0.0, 1.0, 1e-2, (3,), key2)
    general = js.diffeq.SDETerm(lambda t, y, a: jnp.zeros_like(y),
                                lambda t, y, a: jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
                                bm3, noise="general")
    sol = js.diffeq.solve(general, js.diffeq.EulerMaruyama(), 0.0, 1.0, jnp.zeros(2), dt0=0.1)
    w = bm3.evaluate(1.0)
    assert jnp.allclose(sol.ys[-1], jnp.array([w[0], w.sum()]), atol=1e-5)
    ```
    """

    drift: Callable
    diffusion: Callable
    brownian: Any
    noise: str = eqx.field(static=True, default="diagonal")

    def __check_init__(self):
        check_option("noise", self.noise, _NOISE)
        check_brownian(self.brownian)

    def validate(self, t0, y0, args):
        drift = eqx.filter_eval_shape(self.drift, t0, y0, args)
        check_same_structure("y0", y0, drift, "the drift's output")
        diffusion = eqx.filter_eval_shape(self.diffusion, t0, y0, args)
        w_struct = eqx.filter_eval_shape(lambda t: self.brownian.increment(t, t).W, t0)
        w_def, w_shapes = _shapes(w_struct)
        y_def, y_shapes = _shapes(y0)
        w_dtypes = {jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(w_struct)}
        y_dtypes = {jnp.result_type(leaf) for leaf in jax.tree.leaves(y0)}
        if not w_dtypes <= y_dtypes:
            raise TypeError(
                f"the Brownian motion's dtype {sorted(map(str, w_dtypes))} must match `y0`'s "
                f"{sorted(map(str, y_dtypes))}; build it with dtype=y0.dtype"
            )
        if self.noise in ("diagonal", "additive"):
            check_same_structure("y0", y0, diffusion, "the diffusion's output")
            if w_def != y_def or w_shapes != y_shapes:
                raise ValueError(
                    f"with noise={self.noise!r} the Brownian motion must have the shape of `y0` "
                    f"{y_shapes}, got {w_shapes}; use noise='general' for a diffusion matrix"
                )
        else:
            if w_def.num_leaves != 1 or w_def != jax.tree.structure(0):
                raise ValueError(
                    "with noise='general' the Brownian motion must be a single array, got "
                    f"shapes {w_shapes}"
                )
            expected = [(*shape, *w_shapes[0]) for shape in y_shapes]
            g_def, g_shapes = _shapes(diffusion)
            if g_def != y_def or g_shapes != expected:
                raise ValueError(
                    "with noise='general' the diffusion must return, for each leaf of `y0`, an "
                    f"array of shape (*y.shape, *w.shape) = {expected}, got {g_shapes}"
                )

    def prod(self, g: Any, dw: Any) -> Any:
        """The diffusion `g` applied to a Brownian quantity `dw` (an increment W, or H, K)."""
        if self.noise == "general":
            return jax.tree.map(lambda gl: jnp.tensordot(gl, dw, axes=jnp.ndim(dw)), g)
        return jax.tree.map(lambda gl, wl: gl * wl, g, dw)
