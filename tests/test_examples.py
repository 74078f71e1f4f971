"""Every public name has an example in its docstring, and every example runs.

The public names are those that `jaxsolve.<subpackage>` exports (its `__init__` re-exports) plus
`jaxsolve.RESULTS`. An example is a fenced ```` ```python ```` block in the docstring of the
object itself or of one of its public methods (`increment`, `evaluate`, ...). Each block runs
as a user's script would: in a fresh namespace that holds only `jax`, `jnp`, `eqx`, `np` and
`js`, with JAX's standard dtype promotion (the suite otherwise runs with strict promotion).
The blocks run in the main (float64) pass only, to keep CI's float32 pass short; the float32
behaviour of the same entry points is checked in tests/test_float32.py.
"""

import inspect
import re
import textwrap
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
import jaxsolve._core

SUBPACKAGES = ("brownian", "diffeq", "diffusion", "linear", "implicit", "nonlinear", "optimizers")

# Public names that need no example: pure data containers that only entry points create and that
# users only read. Each name is shown in use by the example of the function that returns it.
NO_EXAMPLE_NEEDED = {
    # the record of one query of a Brownian path (dt, W, H, K): see VirtualBrownianTree
    "brownian.BrownianIncrement",
    # what AbstractSolver.step returns, and its dense-output payload: see AbstractSolver,
    # whose example builds both
    "diffeq.StepOutput",
    "diffeq.DenseInfo",
}

_FENCE = re.compile(r"^[ \t]*```python[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)


def _public_names() -> dict[str, object]:
    names = {"RESULTS": js.RESULTS}
    for package in SUBPACKAGES:
        module = getattr(js, package)
        for name, obj in vars(module).items():
            if name.startswith("_") or isinstance(obj, types.ModuleType):
                continue
            names[f"{package}.{name}"] = obj
    return names


def _core_names() -> dict[str, object]:
    # Objects that a subpackage re-exports are collected (and run) under their public name.
    public = {id(obj) for obj in _public_names().values()}
    return {
        f"_core.{name}": obj
        for name, obj in vars(jaxsolve._core).items()
        if not name.startswith("_")
        and not isinstance(obj, types.ModuleType)
        and id(obj) not in public
    }


def _docstrings(obj) -> list[tuple[str, str]]:
    """(where, docstring) for the object itself and, for a class, its own public methods.

    A class's docstring is read from its own `__dict__`: `inspect.getdoc` would inherit a base
    class's docstring (and with it the base's example), hiding that the subclass has none.
    """
    if inspect.isclass(obj):
        docs = [("", obj.__dict__.get("__doc__"))]
        for attr, member in vars(obj).items():
            if attr.startswith("_") and attr not in ("__init__", "__call__"):
                continue
            if isinstance(member, property):
                member = member.fget
            if isinstance(member, staticmethod | classmethod):
                member = member.__func__
            doc = getattr(member, "__doc__", None)
            if callable(member) and isinstance(doc, str):
                docs.append((f".{attr}", doc))
    else:
        docs = [("", getattr(obj, "__doc__", None))]
    return [(where, inspect.cleandoc(doc)) for where, doc in docs if isinstance(doc, str)]


def _examples(obj) -> list[tuple[str, str]]:
    return [
        (where, textwrap.dedent(block))
        for where, doc in _docstrings(obj)
        for block in _FENCE.findall(doc)
    ]


PUBLIC = _public_names()
CORE = _core_names()


def _to_run() -> dict[str, list[tuple[str, str]]]:
    # _core is private: its names need no example, but the ones given run. An object exported
    # under two names (diffeq.DirectAdjoint is nonlinear.DirectAdjoint) runs once, under the
    # first name.
    out, seen = {}, set()
    for name, obj in sorted({**PUBLIC, **CORE}.items()):
        examples = _examples(obj)
        if examples and id(obj) not in seen:
            seen.add(id(obj))
            out[name] = examples
    return out


WITH_EXAMPLES = _to_run()


def _fresh_namespace() -> dict:
    return {"jax": jax, "jnp": jnp, "eqx": eqx, "np": np, "js": js, "__name__": "__example__"}


def test_public_names_found():
    # The collection above must see the whole API, or the tests below prove nothing.
    assert len(PUBLIC) > 100
    for name in ("brownian.VirtualBrownianTree", "diffeq.solve", "linear.CG", "RESULTS"):
        assert name in PUBLIC
    assert set(NO_EXAMPLE_NEEDED) <= set(PUBLIC), set(NO_EXAMPLE_NEEDED) - set(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_name_has_example(name):
    if name in NO_EXAMPLE_NEEDED:
        assert not _examples(PUBLIC[name]), f"{name} has an example now: drop it from the list"
        return
    assert _examples(PUBLIC[name]), (
        f"`{name}` has no ```python example in its docstring (nor in those of its public "
        "methods); add one that runs on its own"
    )


@pytest.mark.parametrize("name", sorted(WITH_EXAMPLES))
def test_example_runs(name):
    for index, (where, block) in enumerate(WITH_EXAMPLES[name]):
        filename = f"<example {index} of {name}{where}>"
        namespace = _fresh_namespace()
        try:
            with jax.numpy_dtype_promotion("standard"):
                exec(compile(block, filename, "exec"), namespace)
                # Raise here any error that JAX would otherwise report asynchronously.
                for value in list(namespace.values()):
                    for leaf in jax.tree.leaves(value):
                        if isinstance(leaf, jax.Array):
                            leaf.block_until_ready()
        except Exception as error:
            raise AssertionError(
                f"the example in the docstring of {name}{where} failed:\n{block}"
            ) from error
