"""A small deep-equilibrium layer trained for a few steps under `eqx.filter_jit`, and its
implicit gradient against the unrolled gradient at a tight tolerance."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxsolve as js

nl = js.nonlinear


class Cell(eqx.Module):
    linear: eqx.nn.Linear

    def __call__(self, z, x):
        # A contraction: the weights are scaled down so the fixed point is unique.
        return jnp.tanh(0.5 * self.linear(z) + x)


def equilibrium(cell, x, adjoint):
    solver = nl.FixedPointIteration(rtol=1e-13, atol=1e-13)
    fn = lambda z, args: args[0](z, args[1])
    return nl.fixed_point(fn, solver, jnp.zeros(4), (cell, x), max_steps=300, adjoint=adjoint).value


def loss(cell, x, target, adjoint):
    return jnp.sum((equilibrium(cell, x, adjoint) - target) ** 2)


def test_deq_implicit_gradient_matches_unrolled_and_trains():
    cell = Cell(eqx.nn.Linear(4, 4, key=jax.random.key(0)))
    x = jnp.array([0.3, -0.1, 0.7, 0.2])
    target = jnp.array([0.1, 0.2, -0.3, 0.4])
    grad_fn = eqx.filter_jit(eqx.filter_grad(loss))
    implicit = grad_fn(cell, x, target, nl.ImplicitAdjoint())
    unrolled = grad_fn(cell, x, target, nl.RecursiveCheckpointAdjoint())
    for a, b in zip(jax.tree.leaves(implicit), jax.tree.leaves(unrolled)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-11)
    # The same layer as js.nonlinear.DEQ, trained a few steps: the loss goes down.
    deq = nl.DEQ(cell, (4,), solver=nl.Anderson(rtol=1e-10, atol=1e-10), max_steps=100)

    @eqx.filter_jit
    def train_step(deq):
        value, grads = eqx.filter_value_and_grad(lambda m: jnp.sum((m(x) - target) ** 2))(deq)
        params = eqx.filter(deq.cell, eqx.is_inexact_array)
        new_cell = jax.tree.map(lambda p, g: p - 0.2 * g, params, grads.cell)
        return eqx.tree_at(lambda m: m.cell, deq, eqx.combine(new_cell, deq.cell)), value

    losses = []
    for _ in range(4):
        deq, value = train_step(deq)
        losses.append(float(value))
    assert losses[-1] < 0.8 * losses[0]
    np.testing.assert_allclose(deq(x), deq.cell(deq(x), x), atol=1e-9)
