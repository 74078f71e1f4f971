"""Eager input validation, run in Python before tracing.

Every message names the argument, what was expected and what came, e.g.
"`y0` must have the shape of the vector field's output (2,), got (3,)".
"""

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def is_concrete(x: Any) -> bool:
    """Whether `x` is known in Python now (not a tracer of `jit`, `vmap` or `grad`), so that an
    eager check can read its value; a traced value is checked at run time instead."""
    return not isinstance(x, jax.core.Tracer)


def check_option(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise `ValueError` unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(_fmt(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}; got {_fmt(value)}")


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise `ValueError` unless the concrete scalar `value` is > 0 (or >= 0)."""
    if not is_concrete(value):
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}") from None
    ok = number >= 0 if allow_zero else number > 0
    if not ok or not np.isfinite(number):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {bound}, got {number}")


def check_shape(name: str, shape: tuple, expected: tuple, what: str) -> None:
    """Raise `ValueError` unless `shape == expected`; `what` describes where `expected` came from."""
    shape, expected = tuple(shape), tuple(expected)
    if shape != expected:
        raise ValueError(f"`{name}` must have the shape of {what} {expected}, got {shape}")


def check_same_structure(name: str, tree: Any, reference: Any, what: str) -> None:
    """Raise `ValueError` unless `tree` has the pytree structure and leaf shapes of `reference`."""
    tree_def, ref_def = jax.tree.structure(tree), jax.tree.structure(reference)
    if tree_def != ref_def:
        raise ValueError(
            f"`{name}` must have the pytree structure of {what} {ref_def}, got {tree_def}"
        )
    for leaf, ref in zip(jax.tree.leaves(tree), jax.tree.leaves(reference), strict=True):
        check_shape(name, jnp.shape(leaf), jnp.shape(ref), what)


def check_floating(name: str, tree: Any, *, allow_complex: bool = False) -> None:
    """Raise `TypeError` unless every leaf of `tree` has a real floating dtype."""
    for leaf in jax.tree.leaves(tree):
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            if allow_complex:
                continue
            raise TypeError(
                f"`{name}` must be real floating point; complex input is not supported, got {dtype}"
            )
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"`{name}` must have a floating-point dtype, got {dtype}")


def check_scalar(name: str, value: Any) -> None:
    """Raise `ValueError` unless `value` has shape ()."""
    shape = jnp.shape(value)
    if shape != ():
        raise ValueError(f"`{name}` must be a scalar, got an array of shape {shape}")


def check_increasing(name_lo: str, lo: Any, name_hi: str, hi: Any) -> None:
    """Raise `ValueError` unless concrete `lo < hi`."""
    if not (is_concrete(lo) and is_concrete(hi)):
        return
    if not float(lo) < float(hi):
        raise ValueError(
            f"`{name_hi}` must be greater than `{name_lo}`, got {name_lo}={float(lo)}, {name_hi}={float(hi)}"
        )
