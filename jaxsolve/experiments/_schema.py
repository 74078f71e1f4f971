"""The config schema: how a value from a TOML `[params]` table or `--set key=value` is checked.

An experiment's keyword parameters are its schema. The annotation says the type (`int`, `float`,
`str`, `bool`, `list[...]`, `Literal[...]`) and, through `typing.Annotated`, the values allowed:

```python
def sde_order_table(ctx, num_paths: PositiveInt = 64, tree_tol: PositiveFloat = 2.0**-9): ...
```

Every check runs in Python before the experiment starts, so a bad value is a one-line
`ConfigError` naming the parameter, what it must be and what it got, never a traceback from deep
inside a compiled computation (a negative array size reaches XLA as an MLIR shape error).
"""

import dataclasses
import math
import types
import typing
from typing import Annotated, Any, Literal


class ConfigError(Exception):
    """A problem with a config or the command line: reported in one line, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Range:
    """A finite number between `low` and `high` (each end inclusive unless stated).

    **Arguments:**

    - `low`, `high`: the bounds (`-inf`/`inf` for none).
    - `low_inclusive`, `high_inclusive`: whether the bound itself is allowed.
    """

    low: float = -math.inf
    high: float = math.inf
    low_inclusive: bool = True
    high_inclusive: bool = True

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None if it is."""
        # Written as "not (inside)" so that NaN, which fails every comparison, is rejected.
        above = value >= self.low if self.low_inclusive else value > self.low
        below = value <= self.high if self.high_inclusive else value < self.high
        if not (math.isfinite(value) and above and below):
            return f"must be {self.describe()}"
        return None

    def describe(self) -> str:
        lower = (">= " if self.low_inclusive else "> ") + _number(self.low)
        upper = ("<= " if self.high_inclusive else "< ") + _number(self.high)
        if math.isinf(self.high):
            return "finite" if math.isinf(self.low) else lower
        if math.isinf(self.low):
            return upper
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        return f"in {left}{_number(self.low)}, {_number(self.high)}{right}"


@dataclasses.dataclass(frozen=True)
class MinLength:
    """A list with at least `length` entries (a convergence slope needs two points)."""

    length: int = 1

    def problem(self, value: Any) -> str | None:
        if len(value) < self.length:
            return f"must have at least {self.length} entr{'y' if self.length == 1 else 'ies'}"
        return None


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


# The vocabulary that experiment signatures use.
PositiveInt = Annotated[int, Range(0, low_inclusive=False)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_inclusive=False)]
NonNegativeFloat = Annotated[float, Range(0)]
UnitInterval = Annotated[float, Range(0, 1)]
OpenUnitInterval = Annotated[float, Range(0, 1, low_inclusive=False, high_inclusive=False)]
# A relative or absolute tolerance: positive, and below 1 (a tolerance of 1 accepts anything).
Tolerance = Annotated[float, Range(0, 1, low_inclusive=False, high_inclusive=False)]
# jax.random.key and numpy's default_rng both take a seed in [0, 2**32).
Seed = Annotated[int, Range(0, 2**32 - 1)]


def check_value(experiment: str, key: str, value: Any, hint: Any) -> Any:
    """Check `value` of parameter `key` against its annotation `hint`; return it normalised
    (an int where a float is wanted becomes a float).

    **Arguments:**

    - `experiment`, `key`: names for the error message.
    - `value`: what the config or the command line gave.
    - `hint`: the parameter's annotation (`typing.get_type_hints(..., include_extras=True)`).

    **Returns:** the value to pass to the experiment. Raises `ConfigError` (one line) if the
    type or the value is not allowed.
    """

    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(
            f"parameter {key!r} of experiment {experiment!r} {expected}, "
            f"got {type(value).__name__} {value!r}"
        )

    if hint is None or hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *constraints = typing.get_args(hint)
        value = check_value(experiment, key, value, base)
        for constraint in constraints:
            problem = constraint.problem(value)
            if problem is not None:
                fail(problem)
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or len(options) != 1:
            return value
        return check_value(experiment, key, value, options[0])
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            fail("must be one of " + ", ".join(repr(c) for c in choices))
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        # bool is a subclass of int, but `num_paths = true` is a mistake, not 1.
        if isinstance(value, hint) and not (hint is not bool and isinstance(value, bool)):
            return value
        fail(f"must be {hint.__name__}")
    if origin is list:
        (item,) = typing.get_args(hint) or (None,)
        if not isinstance(value, list):
            fail("must be a list")
        return [check_value(experiment, key, v, item) for v in value]
    return value
