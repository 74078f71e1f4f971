"""Result codes shared by every solver family, and the `throw` mechanism."""

import equinox as eqx
import jax
import jax.numpy as jnp


class RESULTS(eqx.Enumeration):
    """The outcome of a solve, shared by every family in jaxsolve.

    A solution carries one of these in its `result` field. `RESULTS.successful` means the
    computation finished as requested; every other item names the failure. Compare with `==`
    (`sol.result == js.RESULTS.successful`), which also works on traced values.

    **Example** (a solve that runs out of steps, reported and raised):

    ```python
    term = js.diffeq.ODETerm(lambda t, y, args: -y)
    controller = js.diffeq.PIDController(rtol=1e-8, atol=1e-8)
    sol = js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 100.0, jnp.ones(()),
                          controller=controller, max_steps=4, throw=False)
    assert sol.result == js.RESULTS.max_steps_reached
    try:  # throw=True (the default) raises, naming the code
        js.diffeq.solve(term, js.diffeq.Tsit5(), 0.0, 100.0, jnp.ones(()),
                        controller=controller, max_steps=4)
        raise AssertionError("expected an error")
    except RuntimeError as error:
        assert "max_steps_reached" in str(error)
    ```
    """

    successful = ""
    max_steps_reached = (
        "The maximum number of steps was reached before the solver finished. Increase "
        "`max_steps`, loosen the tolerances, or check the problem."
    )
    nonfinite = "A non-finite value (NaN or inf) appeared during the computation."
    divergence = "The iteration diverged."
    linear_solve_failed = "A linear solve did not converge to the requested tolerance."
    singular = "A matrix was singular (or numerically singular) where it had to be inverted."
    dt_underflow = "The step size fell below its minimum (`dtmin`) or to zero."
    breakdown = "An iterative method broke down (a division by zero in its recurrence)."
    nonconvergence = "The iteration stopped without meeting its convergence criterion."
    invalid_input = (
        "An input failed a check that could only be made on traced values (for example a time "
        "grid that is not monotone or leaves its domain)."
    )


def check_result(value, result, throw: bool, where: str):
    """Raise, at run time and under `jit`, if `result` is not successful and `throw` is set.

    **Arguments:**

    - `value`: any pytree (usually the solution object) to return unchanged.
    - `result`: a `RESULTS` item, possibly traced and possibly batched by `vmap`.
    - `throw`: a Python bool. If `False`, `value` is returned with no check.
    - `where`: the entry point's name, e.g. `"jaxsolve.diffeq.solve"`, put in the message.

    **Returns:** `value`, tied to the check so that the check is not compiled away.

    Only the scalar (or, under `vmap`, per-lane) flag goes through the error's host callback;
    the value is then tied to the checked flag by an elementwise select on its floating-point
    leaves. Passing the value itself through the callback would make the SPMD partitioner
    gather a sharded value onto one device (and return it replicated), and would keep XLA from
    fusing the last operations that produce it.
    """
    if not throw:
        return value
    failed = result != RESULTS.successful
    names = list(RESULTS._name_to_item)
    messages = tuple(
        f"{where} failed with result `{name}`: {RESULTS._index_to_message[i]}"
        for i, name in enumerate(names)
    )
    checked = eqx.branched_error_if(failed, failed, result._value, messages)

    def tie(x):
        # What a failed check leaves does not matter (it raised); the select only has to be
        # one XLA cannot fold away.
        if not isinstance(x, jax.Array):
            return x
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.where(checked, jnp.asarray(jnp.nan, x.dtype), x)
        if jnp.issubdtype(x.dtype, jnp.integer):
            return jnp.where(checked, jnp.asarray(jnp.iinfo(x.dtype).max, x.dtype), x)
        if x.dtype == jnp.bool_:
            return x | checked
        return x

    return jax.tree.map(tie, value)
