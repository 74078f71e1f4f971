"""The built-in default experiment: a short tour in which each pillar checks itself.

Each pillar registers a section with `@quickstart_section`; a section returns rows of the form
`check_row(pillar, check, value, reference, tolerance)` plus the plots it wrote.
"""

import jax
import jax.numpy as jnp
import numpy as np

from .._core import bounded_while_loop
from ._plot import line_plot
from ._registry import (
    ExperimentOutput,
    RunContext,
    check_row,
    quickstart_section,
    quickstart_sections,
    register,
)


@quickstart_section("core", order=0)
def _core_section(ctx: RunContext):
    """Differentiate through the bounded, checkpointed while loop (Heron's square root)."""

    def heron(a):
        out = bounded_while_loop(
            lambda x: jnp.abs(x * x - a) > 1e-6 * a, lambda x: 0.5 * (x + a / x), a, max_steps=64
        )
        return out.value, out.num_steps

    a = jnp.array(2.0)
    (value, steps), grad = jax.jit(heron)(a), jax.jit(jax.grad(lambda a: heron(a)[0]))(a)
    iterates = [float(a)]
    for _ in range(int(steps)):
        iterates.append(0.5 * (iterates[-1] + float(a) / iterates[-1]))
    errors = np.abs(np.array(iterates) - np.sqrt(2.0)) + 1e-16
    plot = line_plot(
        ctx.path("quickstart_core.png"),
        {"|x_k - sqrt(2)|": (np.arange(errors.size), errors)},
        title="Heron iteration inside bounded_while_loop",
        xlabel="iteration",
        ylabel="error",
        logy=True,
    )
    rows = [
        check_row("core", "sqrt(2) by Heron", value, np.sqrt(2.0), tolerance=1e-6),
        check_row("core", "d sqrt(a)/da, reverse mode", grad, 0.5 / np.sqrt(2.0), tolerance=1e-6),
    ]
    return rows, {"heron_iterations": int(steps)}, [plot]


@register(
    "quickstart", "A short tour: each pillar computes something with a known answer and checks it."
)
def quickstart(ctx: RunContext, sections: list[str] | None = None) -> ExperimentOutput:
    """Run every registered quickstart section (or those named in `sections`)."""
    available = quickstart_sections()
    names = [name for name, _ in available]
    wanted = names if not sections else sections
    for name in wanted:
        if name not in names:
            from ._registry import ConfigError

            raise ConfigError(f"unknown quickstart section {name!r}; available: {', '.join(names)}")
    table, summary, plots = [], {}, []
    for name, fn in available:
        if name not in wanted:
            continue
        ctx.status(f"quickstart section {name!r}")
        rows, section_summary, section_plots = fn(ctx)
        table.extend(rows)
        summary[name] = section_summary
        plots.extend(section_plots)
    summary["checks_passed"] = f"{sum(row['ok'] for row in table)}/{len(table)}"
    return ExperimentOutput(table=table, summary=summary, plots=plots)
