"""The experiment registry: named, parameterised runs that `jaxsolve run CONFIG` executes.

An experiment is a Python function registered with `@register(name, description)`. Its keyword
parameters (with defaults and annotated types, see `_schema`) are the keys a config's `[params]`
table may set; nothing in a config is executed as code. The function receives a `RunContext` and
returns an `ExperimentOutput` (a table of rows, a summary dict, the plots it wrote).
"""

import dataclasses
import inspect
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._schema import ConfigError as ConfigError, check_value


@dataclasses.dataclass
class RunContext:
    """What an experiment gets besides its parameters."""

    out_dir: Path
    progress: bool = True

    def path(self, filename: str) -> Path:
        """Where to write `filename` inside the run folder."""
        return self.out_dir / filename

    def status(self, message: str) -> None:
        """A progress line on stderr for long work (silent with `jaxsolve run --quiet`)."""
        if self.progress:
            print(f"  .. {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class ExperimentOutput:
    """What an experiment returns.

    - `table`: a list of rows (dicts with the same keys), printed and saved in results.json.
    - `summary`: headline figures (JSON-serialisable).
    - `plots`: the file names (relative to the run folder) of the plots it wrote.
    """

    table: list[dict[str, Any]]
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    plots: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: its function and the checks on its parameters.

    `requires` holds the conditions between parameters that one annotation cannot say, as
    `(condition, predicate)` pairs: `("burn_in < horizon", lambda p: p["burn_in"] < p["horizon"])`.
    """

    name: str
    description: str
    fn: Callable[..., ExperimentOutput]
    requires: tuple[tuple[str, Callable[[dict[str, Any]], bool]], ...] = ()

    def parameters(self) -> dict[str, inspect.Parameter]:
        params = inspect.signature(self.fn).parameters
        return {k: v for k, v in params.items() if k != "ctx"}

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Check `given` against the signature and return every parameter's value.

        **Arguments:**

        - `given`: the config's `[params]` (with any `--set` overrides applied).

        **Returns:** a dict of all parameters (defaults filled in). Raises `ConfigError` for an
        unknown key, a wrong type, a value outside its range or a failed `requires` condition.
        """
        params = self.parameters()
        hints = typing.get_type_hints(self.fn, include_extras=True)
        unknown = sorted(set(given) - set(params))
        if unknown:
            valid = ", ".join(sorted(params)) or "(none)"
            raise ConfigError(
                f"unknown parameter {unknown[0]!r} for experiment {self.name!r}; valid parameters: {valid}"
            )
        resolved = {}
        for key, param in params.items():
            value = given.get(key, param.default)
            if value is inspect.Parameter.empty:
                raise ConfigError(f"experiment {self.name!r} needs parameter {key!r}")
            # Defaults are checked too: the `requires` conditions below need every value, and a
            # default outside its own range is a bug worth a loud error.
            resolved[key] = check_value(self.name, key, value, hints.get(key))
        for condition, predicate in self.requires:
            if not predicate(resolved):
                # Show the values of the parameters that the condition names.
                named = [k for k in re.findall(r"[A-Za-z_]\w*", condition) if k in resolved]
                got = ", ".join(f"{k}={resolved[k]!r}" for k in dict.fromkeys(named))
                raise ConfigError(f"experiment {self.name!r} needs {condition}; got {got}")
        return resolved


_REGISTRY: dict[str, Experiment] = {}
_QUICKSTART_SECTIONS: dict[str, tuple[int, Callable]] = {}


def register(
    name: str,
    description: str,
    requires: Sequence[tuple[str, Callable[[dict[str, Any]], bool]]] = (),
):
    """Register an experiment function under `name` (a decorator).

    **Arguments:**

    - `name`: what a config's `experiment = "..."` names.
    - `description`: one line for `jaxsolve list`.
    - `requires`: conditions between parameters, `(condition, predicate)` pairs, checked with
      the parameters before the run (see `Experiment`).
    """

    def wrap(fn):
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"experiment {name!r} registered twice")
        _REGISTRY[name] = Experiment(name, description, fn, tuple(requires))
        return fn

    return wrap


def quickstart_section(name: str, order: int):
    """Register a section of the quickstart: `fn(ctx) -> (rows, summary, plots)`.

    Each pillar adds one so that `jaxsolve run` shows every family working.
    """

    def wrap(fn):
        _QUICKSTART_SECTIONS[name] = (order, fn)
        return fn

    return wrap


def check_row(pillar: str, check: str, value, reference, tolerance: float = 1e-4) -> dict[str, Any]:
    """One row of the quickstart table: a computed value against a known reference.

    `tolerance` is what the check allows (for statistical checks, a few standard errors of the
    estimate); the `ok` column says whether the error is within it.
    """
    value, reference = float(value), float(reference)
    error = abs(value - reference)
    return {
        "pillar": pillar,
        "check": check,
        "value": value,
        "reference": reference,
        "abs_error": error,
        "tolerance": float(tolerance),
        "ok": bool(error <= tolerance),
    }


def quickstart_sections() -> list[tuple[str, Callable]]:
    load_all()
    return [(n, f) for n, (_, f) in sorted(_QUICKSTART_SECTIONS.items(), key=lambda kv: kv[1][0])]


def load_all() -> None:
    """Import every module of `jaxsolve.experiments` so that their registrations run."""
    import importlib
    import pkgutil

    from jaxsolve import experiments

    for info in pkgutil.iter_modules(experiments.__path__):
        importlib.import_module(f"jaxsolve.experiments.{info.name}")


def available() -> dict[str, Experiment]:
    load_all()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Experiment:
    experiments = available()
    if name not in experiments:
        raise ConfigError(f"unknown experiment {name!r}; available: {', '.join(experiments)}")
    return experiments[name]
