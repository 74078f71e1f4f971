"""Consensus-based optimisation (CBO): derivative-free global minimisation by interacting
particles.

N particles X_i explore the landscape of f and drift towards a consensus point, a Gibbs-weighted
average that the Laplace principle pushes towards the best particle as alpha grows:

    v = sum_i w_i X_i / sum_i w_i,   w_i = exp(-alpha f(X_i)),
    dX_i = -lam (X_i - v) dt + sigma D(X_i - v) dW_i,

with D(z) = diag(|z|) (anisotropic, Carrillo, Jin, Li & Zhu 2021: the noise scales per
coordinate, which keeps the method dimension-robust) or D(z) = |z|_2 I (isotropic, the original
method of Pinnau et al. 2017 and Carrillo et al. 2018). One step is one Euler-Maruyama step of
this system, N evaluations of f. The weights are normalised in the log domain (a softmax of
-alpha f), so alpha = 1e10 is as stable as alpha = 1.

Mean-field behaviour (tested): for alpha large, V(t) = E|X - x*|^2 decays like
exp(-(2 lam - d sigma^2) t) (isotropic) or exp(-(2 lam - sigma^2) t) (anisotropic) while the
consensus point approaches the global minimiser x* (Fornasier, Klock & Riedl 2021/2024; 2022 for
the anisotropic case). Riedl, Klock, Geldhauser & Fornasier ("Gradient is All You Need?", 2023)
explain why: averaged over the noise, the particles perform a stochastic relaxation of gradient
descent, which lets them cross energy barriers that stop gradient descent.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from .._core import (
    RESULTS,
    AbstractIterativeSolver,
    AbstractSolution,
    bounded_while_loop,
    check_floating,
    check_positive,
    check_result,
    hyperparameter,
    is_concrete,
)


class CBOState(NamedTuple):
    """The state of `CBO`.

    - `particles`: the particles, a pytree whose leaves have a leading axis of size N.
    - `values`: f at each particle, shape (N,).
    - `consensus`: the consensus point v (the pytree of one particle).
    - `spread`: the median over particles of |X_i - v|_2, the distance to the consensus.
    - `key`: the key for the next step's noise.
    - `num_steps`: the steps taken.

    **Example:**

    ```python
    fn = lambda x: jnp.sum(x**2)
    solver = js.optimizers.CBO(alpha=100.0, sigma=0.5)
    particles = jax.random.uniform(jax.random.key(0), (50, 2), minval=-2.0, maxval=2.0)
    state = solver.init(fn, particles, jax.random.key(1))
    print(state.consensus, state.spread, state.values.shape)  # (2,), (), (50,)
    ```
    """

    particles: PyTree[Array]
    values: Float[Array, " N"]
    consensus: PyTree[Array]
    spread: Float[Array, ""]
    key: Any
    num_steps: Int[Array, ""]


def _sum_leaves(leaves):
    return sum(leaves[1:], leaves[0])


class CBO(AbstractIterativeSolver):
    """Consensus-based optimisation as a solver: `init`, `step`, `terminate`.

    `jaxsolve.optimizers.cbo_minimize` runs it; use the solver directly to drive the particles
    in your own jitted loop (annealing alpha or sigma between steps, logging, restarts).

    **Arguments** (all float arguments are array fields: a new value does not recompile):

    - `alpha`: the inverse temperature of the Gibbs weights exp(-alpha f) (>= 0; 0 makes the
      consensus point the plain mean).
    - `lam`: the drift rate towards the consensus point (> 0).
    - `sigma`: the noise strength (>= 0). The particle spread contracts in mean field when
      `sigma**2 < 2 lam` (anisotropic) or `d sigma**2 < 2 lam` (isotropic, d the dimension);
      larger noise explores more.
    - `dt`: the Euler-Maruyama step (> 0).
    - `anisotropic`: noise `sigma |X - v|_j` per coordinate j (True, default) or
      `sigma |X - v|_2` on every coordinate (False). Static.
    - `rtol`, `atol`: stop when `spread <= atol + rtol |v|_2`, i.e. when the particles have
      reached consensus (`spread` is the median distance of the particles to the consensus
      point: the multiplicative noise gives the distances heavy tails).

    Two regimes. With `sigma**2 < 2 lam` (the defaults) the particles contract and the solve
    stops by itself at consensus: right for landscapes with few local minima. Hard landscapes
    (Rastrigin in d = 10) need the exploratory regime of strong anisotropic noise and a mild
    alpha (e.g. `alpha=3, sigma=5, dt=0.04`): the particles keep exploring, so run a fixed
    horizon (`max_steps`, `throw=False`: the result is then `max_steps_reached` and `value` the
    consensus point at the horizon), or lower sigma over time in your own loop.

    **Methods** (the problem `fn` first, the state last):

    - `init(fn, particles, key) -> CBOState`: evaluates f at the particles and the consensus.
    - `step(fn, state) -> CBOState`: one Euler-Maruyama step, N evaluations of f.
    - `terminate(fn, state) -> (done, result)`: done at consensus (`RESULTS.successful`) or when
      the consensus point is not finite (`RESULTS.nonfinite`).
    - `solution(fn, state, result) -> CBOSolution`.

    **Example** (a user's loop):

    ```python
    fn = lambda x: jnp.sum((x - 1.0) ** 2)
    solver = js.optimizers.CBO(alpha=1e4, lam=1.0, sigma=1.0, dt=0.05)
    particles = jax.random.uniform(jax.random.key(0), (100, 2), minval=-3.0, maxval=3.0)

    @jax.jit
    def run(particles, key):
        state = solver.init(fn, particles, key)
        return jax.lax.fori_loop(0, 100, lambda i, s: solver.step(fn, s), state)

    state = run(particles, jax.random.key(1))
    assert jnp.allclose(state.consensus, 1.0, atol=2e-2)
    ```

    References: Pinnau, Totzeck, Tse & Martin, "A consensus-based model for global optimization
    and its mean-field limit", M3AS 2017; Carrillo, Choi, Totzeck & Tse, "An analytical
    framework for consensus-based global optimization method", M3AS 2018; Carrillo, Jin, Li &
    Zhu, "A consensus-based global optimization method for high dimensional machine learning
    problems", ESAIM:COCV 2021 (anisotropic noise).
    """

    alpha: Array = hyperparameter(1e4)
    lam: Array = hyperparameter(1.0)
    sigma: Array = hyperparameter(0.8)
    dt: Array = hyperparameter(0.01)
    anisotropic: bool = eqx.field(static=True, default=True)
    rtol: Array = hyperparameter(1e-3)
    atol: Array = hyperparameter(1e-3)

    def __check_init__(self):
        check_positive("alpha", self.alpha, allow_zero=True)
        check_positive("lam", self.lam)
        check_positive("sigma", self.sigma, allow_zero=True)
        check_positive("dt", self.dt)
        check_positive("rtol", self.rtol, allow_zero=True)
        check_positive("atol", self.atol, allow_zero=True)
        if not isinstance(self.anisotropic, bool):
            raise TypeError(f"`anisotropic` must be a bool, got {self.anisotropic!r}")

    def _consensus(self, fn, particles):
        values = jax.vmap(fn)(particles)
        dtype = values.dtype
        # The Gibbs weights exp(-alpha f_i), normalised in the log domain (softmax).
        weights = jax.nn.softmax(-jnp.asarray(self.alpha, dtype) * values)
        consensus = jax.tree.map(lambda x: jnp.tensordot(weights.astype(x.dtype), x, 1), particles)
        offsets = jax.tree.map(lambda x, v: x - v, particles, consensus)
        squares = [
            jnp.sum(jnp.square(o).reshape(o.shape[0], -1), axis=1) for o in jax.tree.leaves(offsets)
        ]
        # The median, not the mean: the multiplicative noise gives the distances heavy tails
        # (for sigma**2 > 2 lam their mean square grows while almost every particle converges).
        spread = jnp.sqrt(jnp.median(_sum_leaves(squares)))
        return values, consensus, spread.astype(dtype)

    def init(self, fn: Callable[[PyTree], Array], particles: PyTree[Array], key: Any) -> CBOState:
        values, consensus, spread = self._consensus(fn, particles)
        return CBOState(particles, values, consensus, spread, key, jnp.array(0))

    def step(self, fn: Callable[[PyTree], Array], state: CBOState) -> CBOState:
        key, noise_key = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(state.particles)
        consensus = treedef.flatten_up_to(state.consensus)
        offsets = [x - v for x, v in zip(leaves, consensus)]
        noise = [
            jax.random.normal(jax.random.fold_in(noise_key, i), x.shape, x.dtype)
            for i, x in enumerate(leaves)
        ]
        if self.anisotropic:
            scales = [jnp.abs(o) for o in offsets]
        else:
            squares = [jnp.sum(jnp.square(o).reshape(o.shape[0], -1), axis=1) for o in offsets]
            norms = jnp.sqrt(_sum_leaves(squares))
            scales = [norms.reshape((-1,) + (1,) * (o.ndim - 1)) for o in offsets]
        moved = []
        for x, o, s, z in zip(leaves, offsets, scales, noise):
            lam, sigma, dt = (jnp.asarray(h, x.dtype) for h in (self.lam, self.sigma, self.dt))
            moved.append(x - lam * dt * o + sigma * jnp.sqrt(dt) * s * z)
        particles = jax.tree.unflatten(treedef, moved)
        values, consensus, spread = self._consensus(fn, particles)
        return CBOState(particles, values, consensus, spread, key, state.num_steps + 1)

    def terminate(self, fn: Callable[[PyTree], Array], state: CBOState):
        norm = jnp.sqrt(
            _sum_leaves([jnp.sum(jnp.square(v)) for v in jax.tree.leaves(state.consensus)])
        )
        dtype = state.spread.dtype
        tol = jnp.asarray(self.atol, dtype) + jnp.asarray(self.rtol, dtype) * norm.astype(dtype)
        finite = jnp.isfinite(state.spread) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(state.consensus)])
        )
        done = (state.spread <= tol) | ~finite
        return done, RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)

    def solution(self, fn, state: CBOState, result: RESULTS) -> "CBOSolution":
        """The `CBOSolution` for `state` with the given `result`."""
        num_particles = state.values.shape[0]
        stats = {
            "num_steps": state.num_steps,
            "spread": state.spread,
            "num_evaluations": num_particles * (state.num_steps + 1),
        }
        return CBOSolution(value=state.consensus, result=result, stats=stats, state=state)


class CBOSolution(AbstractSolution):
    """The outcome of `cbo_minimize`.

    - `value`: the consensus point (the pytree of one particle), the estimate of the minimiser.
    - `result`: `RESULTS.successful` (consensus reached: `spread <= atol + rtol |v|`),
      `RESULTS.max_steps_reached` or `RESULTS.nonfinite`.
    - `stats`: `"num_steps"`, `"spread"` (final median distance of the particles to the
      consensus),
      `"num_evaluations"` (of `fn`).
    - `state`: the final `CBOState` (particles, their values, the key), to continue with
      `CBO.step`.

    **Example:**

    ```python
    sol = js.optimizers.cbo_minimize(
        lambda x: jnp.sum(x**2), jnp.linspace(-1.0, 2.0, 40)[:, None], jax.random.key(0)
    )
    print(sol.value, sol.stats["num_steps"], sol.state.particles.shape)  # ~[0], ..., (40, 1)
    ```
    """

    value: PyTree[Array]
    result: RESULTS
    stats: dict[str, Array]
    state: CBOState


def cbo_minimize(
    fn: Callable[[PyTree], Array],
    particles: PyTree[Array],
    key: Any,
    *,
    alpha: Any = 1e4,
    lam: Any = 1.0,
    sigma: Any = 0.8,
    dt: Any = 0.01,
    anisotropic: bool = True,
    rtol: Any = 1e-3,
    atol: Any = 1e-3,
    max_steps: int = 1000,
    throw: bool = True,
) -> CBOSolution:
    """Minimise `fn` globally by consensus-based optimisation (no gradients).

    **Arguments:**

    - `fn`: `fn(x) -> scalar`, for `x` one particle (an array or a pytree of arrays).
    - `particles`: the initial particles, shape `(num_particles, *x.shape)` (for a pytree `x`:
      each leaf with that leading axis); at least 2. Draw them to cover the region where the
      minimiser may be (e.g. uniformly).
    - `key`: a `jax.random` key for the noise.
    - `alpha`, `lam`, `sigma`, `dt`, `anisotropic`, `rtol`, `atol`: see `CBO`.
    - `max_steps`: the cap on steps (a positive Python int).
    - `throw`: raise if consensus is not reached within `max_steps` or a non-finite value
      appears (else see `result`).

    **Returns:** a `CBOSolution`: `value` is the consensus point.

    Works under `jit` and `vmap` (over keys, particles, hyperparameters: run many seeds at
    once); hyperparameters may be traced (no recompile for a new value).

    **Example** (Rastrigin in 2-D: many local minima, global minimum at 0):

    ```python
    rastrigin = lambda x: 10 * x.size + jnp.sum(x**2 - 10 * jnp.cos(2 * jnp.pi * x))
    particles = jax.random.uniform(jax.random.key(0), (200, 2), minval=-3.0, maxval=3.0)
    sol = js.optimizers.cbo_minimize(rastrigin, particles, jax.random.key(1), max_steps=2000)
    assert jnp.max(jnp.abs(sol.value)) < 0.1
    ```

    References: Pinnau et al. 2017; Carrillo et al. 2018; Carrillo, Jin, Li & Zhu 2021
    (anisotropic); Fornasier, Klock & Riedl, "Consensus-based optimization methods converge
    globally", SIAM J. Optim. 2024; Riedl, Klock, Geldhauser & Fornasier, "Gradient is All You
    Need? How Consensus-Based Optimization can be Interpreted as a Stochastic Relaxation of
    Gradient Descent", 2023 (arXiv:2306.09778).
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be callable, got {type(fn).__name__}")
    leaves = jax.tree.leaves(particles)
    if not leaves:
        raise ValueError("`particles` must contain at least one array")
    check_floating("particles", particles)
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if None in sizes or len(sizes) != 1:
        raise ValueError(
            "`particles` must have a leading particle axis of one size on every leaf, got shapes "
            f"{[jnp.shape(x) for x in leaves]}"
        )
    (num_particles,) = sizes
    if num_particles < 2:
        raise ValueError(f"`particles` must hold at least 2 particles, got {num_particles}")
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}")
    one = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)), particles
    )
    out = eqx.filter_eval_shape(fn, one)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
        got = jax.tree.map(lambda s: f"{s.dtype}{list(s.shape)}", out)
        raise ValueError(f"`fn` must return a scalar for one particle, got {got}")
    solver = CBO(alpha, lam, sigma, dt, anisotropic, rtol, atol)
    # Hyperparameters that are traced cannot be checked eagerly: check them at run time.
    # The check rides on the scalar itself, not on the particles: a check that carried the
    # particles through its host callback would gather a sharded swarm onto one device.
    for name, bound in (("alpha", 0), ("lam", 1), ("sigma", 0), ("dt", 1)):
        value = getattr(solver, name)
        if not is_concrete(value):
            ok = value > 0 if bound else value >= 0
            value = eqx.error_if(value, ~(ok & jnp.isfinite(value)), f"`{name}` is invalid")
            solver = eqx.tree_at(lambda s, name=name: getattr(s, name), solver, value)
    state = solver.init(fn, particles, key)
    loop = bounded_while_loop(
        lambda s: ~solver.terminate(fn, s)[0],
        lambda s: solver.step(fn, s),
        state,
        max_steps=max_steps,
        kind="lax",
    )
    state = loop.value
    _, result = solver.terminate(fn, state)
    result = RESULTS.where(
        (result == RESULTS.successful) & loop.max_steps_reached, RESULTS.max_steps_reached, result
    )
    solution = solver.solution(fn, state, result)
    # Only the consensus point goes through the error check: a check that carried the
    # particles through its host callback would gather a sharded swarm onto one device (and
    # it cannot carry the PRNG key).
    value = check_result(solution.value, solution.result, throw, "jaxsolve.optimizers.cbo_minimize")
    return eqx.tree_at(lambda s: s.value, solution, value)
