"""The config schema: annotations say what each parameter may be, and every numeric parameter of
every experiment says it."""

import math
import typing
from typing import Annotated, Literal

import pytest

from jaxsolve.experiments import available
from jaxsolve.experiments._schema import (
    ConfigError,
    MinLength,
    PositiveInt,
    Range,
    Tolerance,
    check_value,
)


def _check(value, hint):
    return check_value("exp", "key", value, hint)


@pytest.mark.parametrize(
    "value, hint, message",
    [
        (-4, PositiveInt, "must be > 0, got int -4"),
        (True, PositiveInt, "must be int, got bool True"),
        (1.0, PositiveInt, "must be int, got float 1.0"),
        (0.0, Tolerance, "must be in (0, 1), got float 0.0"),
        (1.0, Tolerance, "must be in (0, 1)"),
        (math.nan, Tolerance, "got float nan"),
        (math.inf, Annotated[float, Range(0)], "must be >= 0, got float inf"),
        (2, Annotated[int, Range(high=1)], "must be <= 1"),
        ("c", Literal["a", "b"], "must be one of 'a', 'b', got str 'c'"),
        ([], Annotated[list[int], MinLength(1)], "must have at least 1 entry"),
        ([1, 0], list[PositiveInt], "must be > 0, got int 0"),
        ("1", list[int], "must be a list"),
    ],
)
def test_bad_values_are_rejected_with_what_was_expected(value, hint, message):
    with pytest.raises(ConfigError, match="parameter 'key' of experiment 'exp' ") as info:
        _check(value, hint)
    assert message in str(info.value)


def test_good_values_pass_and_ints_become_floats():
    assert _check(3, float) == 3.0 and isinstance(_check(3, float), float)
    assert _check(1e-6, Tolerance) == 1e-6
    assert _check([4, 8], Annotated[list[PositiveInt], MinLength(2)]) == [4, 8]
    assert _check("b", Literal["a", "b"]) == "b"
    assert _check(None, list[str] | None) is None


def _numeric(hint) -> bool:
    """Whether `hint` is, or is a list of, int or float (with or without constraints)."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is list:
        return _numeric(typing.get_args(hint)[0])
    return hint in (int, float)


def _constrained(hint) -> bool:
    """Whether every number that `hint` admits is bounded by a `Range`."""
    if typing.get_origin(hint) is Annotated:
        base, *constraints = typing.get_args(hint)
        if any(isinstance(c, Range) for c in constraints):
            return True
        hint = base
    if typing.get_origin(hint) is list:
        return _constrained(typing.get_args(hint)[0])
    return False


def test_every_numeric_parameter_has_a_range():
    """Counts, sizes, tolerances and seeds all have a sensible range; a parameter without one
    would reach the experiment unchecked (a negative count became an MLIR shape error)."""
    unchecked = []
    for name, experiment in available().items():
        hints = typing.get_type_hints(experiment.fn, include_extras=True)
        for key in experiment.parameters():
            if _numeric(hints[key]) and not _constrained(hints[key]):
                unchecked.append(f"{name}.{key}")
    assert not unchecked, unchecked
