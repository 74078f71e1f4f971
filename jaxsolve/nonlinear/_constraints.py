"""Convex feasible sets for the constrained minimisers: each knows its Euclidean projection
(for `ProjectedGradient` and for the implicit adjoint's optimality condition) and its linear
minimisation oracle argmin_{s in C} <g, s> (for `FrankWolfe`). They act on 1-D arrays.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from ._base import hyperparameter


class AbstractConstraint(eqx.Module):
    """A closed convex set with a projection and a linear minimisation oracle.

    **Example:**

    ```python
    class NonNegative(js.nonlinear.AbstractConstraint):
        def project(self, y):
            return jnp.maximum(y, 0.0)

        def linear_minimizer(self, grad):
            raise NotImplementedError("unbounded: use ProjectedGradient, not FrankWolfe")


    fn = lambda y, _: jnp.sum((y - jnp.array([-1.0, 1.0])) ** 2)
    solver = js.nonlinear.ProjectedGradient(NonNegative())
    print(js.nonlinear.minimize(fn, solver, jnp.ones(2)).value)  # [0, 1]
    ```
    """

    @abc.abstractmethod
    def project(self, y: Array) -> Array:
        """The Euclidean projection of `y` onto the set."""

    @abc.abstractmethod
    def linear_minimizer(self, grad: Array) -> Array:
        """A point of the set minimising `<grad, s>`."""


class Simplex(AbstractConstraint):
    """The scaled probability simplex {y >= 0, sum y = scale}.

    Projection by sorting (Held, Wolfe & Crowder 1974; Duchi et al., "Efficient projections onto
    the l1-ball for learning in high dimensions", ICML 2008).

    **Example:**

    ```python
    simplex = js.nonlinear.Simplex(scale=1.0)
    print(simplex.project(jnp.array([0.5, 0.8, -0.3])))  # [0.35, 0.65, 0]
    fn = lambda p, c: jnp.vdot(p, c) + 0.1 * jnp.sum(p**2)
    solver = js.nonlinear.ProjectedGradient(simplex)
    print(js.nonlinear.minimize(fn, solver, jnp.full(3, 1 / 3), jnp.array([1.0, 0.0, 2.0])).value)
    ```
    """

    scale: Array = hyperparameter(1.0)

    def project(self, y):
        scale = self.scale.astype(y.dtype)
        u = jnp.sort(y)[::-1]
        cumulative = jnp.cumsum(u) - scale
        index = jnp.arange(1, y.size + 1, dtype=y.dtype)
        support = u - cumulative / index > 0
        rho = jnp.max(jnp.where(support, jnp.arange(y.size), 0))
        threshold = cumulative[rho] / index[rho]
        return jnp.maximum(y - threshold, 0.0)

    def linear_minimizer(self, grad):
        return self.scale.astype(grad.dtype) * (jnp.arange(grad.size) == jnp.argmin(grad)).astype(
            grad.dtype
        )


class Box(AbstractConstraint):
    """The box {lower <= y <= upper} (scalars or arrays of y's shape).

    **Example:**

    ```python
    box = js.nonlinear.Box(lower=0.0, upper=1.0)
    print(box.project(jnp.array([-0.5, 0.3, 1.7])))  # [0, 0.3, 1]
    solver = js.nonlinear.ProjectedGradient(box)
    print(js.nonlinear.minimize(lambda y, _: jnp.sum((y - 2.0) ** 2), solver, jnp.zeros(2)).value)
    ```
    """

    lower: Array = hyperparameter()
    upper: Array = hyperparameter()

    def __check_init__(self):
        if self.lower is None or self.upper is None:
            raise ValueError("Box needs `lower=` and `upper=`")

    def project(self, y):
        return jnp.clip(y, self.lower.astype(y.dtype), self.upper.astype(y.dtype))

    def linear_minimizer(self, grad):
        lower = jnp.broadcast_to(self.lower.astype(grad.dtype), grad.shape)
        upper = jnp.broadcast_to(self.upper.astype(grad.dtype), grad.shape)
        return jnp.where(grad > 0, lower, upper)


class Ball(AbstractConstraint):
    """The Euclidean ball {|y - center|_2 <= radius} (center 0 by default).

    **Example:**

    ```python
    ball = js.nonlinear.Ball(radius=1.0)
    print(ball.project(jnp.array([3.0, 4.0])))  # [0.6, 0.8]
    solver = js.nonlinear.FrankWolfe(ball)
    print(js.nonlinear.minimize(lambda y, _: jnp.sum((y - 2.0) ** 2), solver, jnp.zeros(2)).value)
    ```
    """

    radius: Array = hyperparameter(1.0)
    center: Array = hyperparameter(0.0)

    def project(self, y):
        radius, center = self.radius.astype(y.dtype), self.center.astype(y.dtype)
        offset = y - center
        norm = jnp.linalg.norm(offset)
        factor = jnp.where(norm > radius, radius / jnp.where(norm > 0, norm, 1.0), 1.0)
        return center + factor * offset

    def linear_minimizer(self, grad):
        radius, center = self.radius.astype(grad.dtype), self.center.astype(grad.dtype)
        norm = jnp.linalg.norm(grad)
        return center - radius * grad / jnp.where(norm > 0, norm, 1.0)
