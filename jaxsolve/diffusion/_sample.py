"""`sample` and `sample_solution`: validate eagerly, then run a sampler's steps in `lax.scan`.

What can be seen before tracing (types, shapes, a concrete grid) is checked in Python and
raises `ValueError`/`TypeError` at the call. What only run time can see is checked on the
traced values, cheaply: the grid once before the loop (finite, strictly decreasing in the
dtype of the samples, inside the schedules' time domain [0, 1]), the network's output shape at
trace time (in `Model`, shapes being static), and the sample's finiteness once at the end.

Every check is reduced to a scalar before anything is raised, and the sample is tied to the
checked scalar by an elementwise select. An error check that carried the sample itself through
its host callback (`eqx.error_if(x, ...)`) would make the SPMD partitioner gather a sharded
batch onto one device and return it replicated.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from .._core import RESULTS, check_floating, check_result, is_concrete, scan_steps
from ._model import Guidance, Model
from ._sampler import AbstractSampler
from ._schedules import DOMAIN
from ._solution import Solution

# An invalid traced grid under `throw=False`: its sample is set to NaN, so that the code tells
# the truth (never garbage marked as success).
INVALID_GRID = RESULTS.invalid_input

GRID_MESSAGE = (
    "`ts` must be finite, strictly decreasing (from noise to data, no duplicate times in the "
    f"dtype of `x_T`) and inside the schedule's time domain [{DOMAIN[0]}, {DOMAIN[1]}]"
)


def grid_is_valid(ts: Float[Array, " n"]) -> Bool[Array, ""]:
    """Whether the (possibly traced) grid is strictly decreasing and inside the time domain;
    NaN fails both comparisons, so a non-finite time is invalid too."""
    decreasing = jnp.all(ts[1:] < ts[:-1])
    inside = jnp.all((ts >= DOMAIN[0]) & (ts <= DOMAIN[1]))
    return decreasing & inside


def tie(x: Array, checked_result) -> Array:
    """`x`, made to depend on the (already checked) scalar result so that its check stays in
    the program: a select on a scalar predicate, which keeps `x`'s values, gradients and
    sharding (the other branch, NaN, is never taken once the check has passed)."""
    ok = checked_result == RESULTS.successful
    return jnp.where(ok, x, jnp.asarray(jnp.nan, x.dtype))


def check_sample(x, grid_ok, throw: bool, where: str):
    """The result code of the sample `x` (and of its grid's traced check, `grid_ok`, None when
    the grid was checked eagerly); raises under `throw`. Returns `(x, result)`."""
    result = RESULTS.where(jnp.all(jnp.isfinite(x)), RESULTS.successful, RESULTS.nonfinite)
    if grid_ok is not None and not throw:
        result = RESULTS.where(grid_ok, result, INVALID_GRID)
        x = jnp.where(grid_ok, x, jnp.asarray(jnp.nan, x.dtype))
    if throw:
        result = check_result(result, result, throw, where)
        x = tie(x, result)
    return x, result


def check_grid(ts, throw: bool, where: str):
    """The traced grid check: `(ts, grid_ok)`, `ts` tied to an error under `throw`."""
    grid_ok = grid_is_valid(ts)
    if throw:
        ts = eqx.error_if(ts, jnp.logical_not(grid_ok), f"{where}: {GRID_MESSAGE}")
    return ts, grid_ok


def validate_sampling_inputs(sampler, model, x_T, ts, key, guidance):
    """The eager checks shared by `sample` and `invert`; returns (model, x_T, ts)."""
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(
            f"`sampler` must be a jaxsolve.diffusion sampler (an AbstractSampler), got "
            f"{type(sampler).__name__}"
        )
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a jaxsolve.diffusion.Model, got {type(model).__name__}")
    x_T = jnp.asarray(x_T)
    check_floating("x_T", x_T)
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"`ts` must be a 1-D array of at least 2 times, got shape {ts.shape}")
    check_floating("ts", ts)
    if is_concrete(ts):
        values = np.asarray(ts, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("`ts` must be finite")
        if not np.all(np.diff(np.asarray(ts.astype(x_T.dtype), np.float64)) < 0):
            raise ValueError(
                "`ts` must be strictly decreasing (from noise to data) with no duplicate times "
                f"in the dtype of `x_T` ({x_T.dtype}), got {values}"
            )
        if not np.all((values >= DOMAIN[0]) & (values <= DOMAIN[1])):
            raise ValueError(
                f"`ts` must lie in the schedules' time domain [{DOMAIN[0]}, {DOMAIN[1]}], got "
                f"{values}"
            )
    if guidance is not None:
        if not isinstance(guidance, Guidance):
            raise TypeError(
                f"`guidance` must be a jaxsolve.diffusion.Guidance or None, got "
                f"{type(guidance).__name__}"
            )
        model = model.guided(guidance)
    if sampler.is_stochastic() and key is None:
        raise ValueError(
            f"{type(sampler).__name__} is stochastic and needs a `key` (a jax.random key)"
        )
    # The grid follows the state's dtype: a float64 grid with float32 samples would promote.
    return model, x_T, ts.astype(x_T.dtype)


def sample_solution(
    sampler: AbstractSampler,
    model: Model,
    x_T: ArrayLike,
    ts: Float[ArrayLike, " num_steps+1"],
    *,
    key: PRNGKeyArray | None = None,
    guidance: Guidance | None = None,
    checkpoint: bool = False,
    throw: bool = True,
) -> Solution:
    """`sample`, returning a `Solution` with the result code, statistics and final state.

    **Arguments:** as for `sample`. With `throw=True` (default) a non-finite sample or an
    invalid traced grid raises (also under `jit`); with `throw=False` the solution comes back
    with its code instead:

    - `RESULTS.nonfinite`: the sample holds NaN or inf;
    - an invalid traced grid (not finite, not strictly decreasing, or outside the time domain
      [0, 1]): the sample is NaN and the code is a failure (`RESULTS.invalid_input` once
      `RESULTS` has that item, `RESULTS.nonfinite` until then). A concrete grid is checked
      eagerly and raises `ValueError` whatever `throw` is.

    **Returns:** a `Solution(value, result, stats, state)`: `value` is what `sample` returns,
    `stats` holds `num_steps` and `num_model_evaluations`, `state` the sampler's final state.

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 8)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    sol = js.diffusion.sample_solution(js.diffusion.DDIM(), model, x_T, ts, throw=False)
    ok = sol.result == js.RESULTS.successful  # a traced bool, also under jit and vmap
    x0 = jnp.where(ok, sol.value, jnp.zeros_like(x_T))
    assert bool(ok) and int(sol.stats["num_model_evaluations"]) == 8
    assert jnp.allclose(x0, 2.0, atol=0.05)
    ```
    """
    return _sample_solution(
        sampler,
        model,
        x_T,
        ts,
        key,
        guidance,
        checkpoint,
        throw,
        "jaxsolve.diffusion.sample_solution",
    )


def run_steps(step, state, indices, *, checkpoint: bool = False):
    """The family's one loop: `state = step(i, state)` for each `i` of `indices`, in order.

    Every driver of the family (`sample`, `invert`, the search of `learn_timesteps`) runs its
    steps here, on `_core.scan_steps`; with `checkpoint` each step is rematerialised on the
    backward pass.
    """

    def body(state, i):
        return step(i, state), None

    return scan_steps(body, state, indices, checkpoint=checkpoint)[0]


def integrate(sampler, model, x, ts, key, *, checkpoint: bool = False):
    """`sampler`'s final state along the whole grid `ts` from `x` (no validation)."""
    state = sampler.init(model, x, ts, key)
    step = lambda i, state: sampler.step(model, ts, i, state)
    return run_steps(step, state, jnp.arange(ts.shape[0] - 1), checkpoint=checkpoint)


def checked_run(run, sampler, model, x, ts, key, guidance, throw: bool, where: str):
    """What `sample` and `invert` share around their loop: the eager checks, the traced grid
    check, then `run(model, x, ts) -> (value, state)`, then the sample's check.

    Returns `(value, result, state)`.
    """
    traced_grid = not is_concrete(ts)
    model, x, ts = validate_sampling_inputs(sampler, model, x, ts, key, guidance)
    # A concrete grid was checked in Python; a traced one is checked once, before the loop.
    ts, grid_ok = check_grid(ts, throw, where) if traced_grid else (ts, None)
    value, state = run(model, x, ts)
    value, result = check_sample(value, grid_ok, throw, where)
    return value, result, state


def _sample_solution(sampler, model, x_T, ts, key, guidance, checkpoint, throw, where):
    def run(model, x_T, ts):
        state = integrate(sampler, model, x_T, ts, key, checkpoint=checkpoint)
        return sampler.output(state), state

    x, result, state = checked_run(run, sampler, model, x_T, ts, key, guidance, throw, where)
    num_steps = jnp.shape(ts)[0] - 1
    stats = {
        "num_steps": jnp.asarray(num_steps),
        "num_model_evaluations": jnp.asarray(sampler.num_evaluations(num_steps)),
    }
    return Solution(x, result, stats, state)


def sample(
    sampler: AbstractSampler,
    model: Model,
    x_T: ArrayLike,
    ts: Float[ArrayLike, " num_steps+1"],
    *,
    key: PRNGKeyArray | None = None,
    guidance: Guidance | None = None,
    checkpoint: bool = False,
    throw: bool = True,
) -> Array:
    """Draw a sample by running `sampler` along the decreasing time grid `ts`.

    **Arguments:**

    - `sampler`: any `AbstractSampler` (`DDIM()`, `DPMSolverPP(order=2)`, `UniPC()`, ...).
    - `model`: a `Model` (network, schedule, parameterisation).
    - `x_T`: the starting noise at time `ts[0]`, any shape (a batch is just a leading axis the
      network understands).
    - `ts`: 1-D, strictly decreasing, `num_steps + 1` times in [0, 1] (see `timesteps`); cast
      to the dtype of `x_T`. The last time may have sigma = 0 (an explicit final denoising
      step). Checked in Python when concrete, and on the traced values under `jit`.
    - `key`: a `jax.random` key, required by stochastic samplers.
    - `guidance`: optional classifier-free `Guidance(cond, uncond, scale)`; the model's `fn` is
      then called as `fn(x, t, cond)`.
    - `checkpoint`: rematerialise each step on the backward pass (memory O(1) steps' activations
      instead of O(num_steps)).
    - `throw`: raise (also under `jit`) if the sample is not finite or a traced grid is invalid;
      with `throw=False` the sample is returned as is (NaN for an invalid traced grid). Use
      `sample_solution` to get the result code.

    **Returns:** the sample at `ts[-1]`, shaped like `x_T`: `sample_solution(...).value`.

    Everything is a pure function of its inputs: `sample` can be jitted, vmapped (also over
    per-sample `ts`) and differentiated with respect to `x_T`, `ts`, the schedule's and
    sampler's hyperparameters and the network's parameters (an `equinox.Module` as `fn`).

    **Example:**

    ```python
    sched = js.diffusion.VPLinear()
    # the exact noise prediction when all data sit at 2.0: x = alpha * 2.0 + sigma * eps
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 2.0) / sched.sigma(t), sched)
    ts = js.diffusion.timesteps(sched, 10)
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    x0 = js.diffusion.sample(js.diffusion.DPMSolverPP(order=2), model, x_T, ts)
    assert jnp.allclose(x0, 2.0, atol=0.05)
    # jit, and gradients with respect to the noise (d x0 / d x_T = sigma(ts[-1]) / sigma(ts[0]))
    run = jax.jit(lambda x_T: js.diffusion.sample(js.diffusion.DPMSolverPP(), model, x_T, ts))
    grad = jax.grad(lambda x_T: run(x_T).sum())(x_T)
    assert jnp.allclose(grad, sched.sigma(ts[-1]) / sched.sigma(ts[0]), rtol=1e-4)
    ```
    """
    return _sample_solution(
        sampler, model, x_T, ts, key, guidance, checkpoint, throw, "jaxsolve.diffusion.sample"
    ).value
