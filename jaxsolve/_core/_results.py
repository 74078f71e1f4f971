"""Result codes shared by every solver family, and the `throw` mechanism."""

import equinox as eqx


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
    stalled = (
        "The last step left y unchanged (a step below the floating-point resolution of y) "
        "before the convergence criterion was met: the tolerances may be tighter than the "
        "dtype allows (float32 resolves about 7 digits)."
    )
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

    (A check that carried only the scalar flag through the error callback and tied `value` to it
    by a select would keep a sharded `value` sharded, but the select makes a value that is not
    batched under `vmap` batched when the flag is, which breaks `jax.jacfwd` through custom JVP
    rules: `jaxsolve.diffusion` does that locally, on a value it knows to be batched alike.)
    """
    if not throw:
        return value
    failed = result != RESULTS.successful
    names = list(RESULTS._name_to_item)
    messages = tuple(
        f"{where} failed with result `{name}`: {RESULTS._index_to_message[i]}"
        for i, name in enumerate(names)
    )
    return eqx.branched_error_if(value, failed, result._value, messages)
