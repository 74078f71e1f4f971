"""Test configuration: strict dtype promotion (no silent up/down-casting), and two precisions.

The main pass (`pytest`, the README's command) turns float64 on (`jax_enable_x64`) for every
test. Most users run float32, so CI makes a second pass with x64 off:

    JAXSOLVE_TEST_X64=0 pytest

In that pass only the tests marked `@pytest.mark.float32` are collected (the rest are
deselected): mark a test `float32` when it does not need float64, i.e. its tolerances and inputs
also hold in single precision. `tests/test_float32.py` holds float32 checks proper (each compares
a float32 computation with its float64 answer, computed under `jax.enable_x64(True)`); they run
only in the float32 pass, because with x64 on a user's default dtype is not float32.
"""

import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
# One BLAS thread per test process: the suite runs a worker per core (pytest-xdist), and
# LAPACK's threads (behind `eigh`, `qr` on CPU) spinning against the other workers made one
# 256 x 256 eigh take seconds instead of milliseconds on a loaded 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402


def _x64_requested() -> bool:
    value = os.environ.get("JAXSOLVE_TEST_X64", "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise pytest.UsageError(f"JAXSOLVE_TEST_X64 must be 0 or 1, got {value!r}")


X64 = _x64_requested()

jax.config.update("jax_enable_x64", X64)
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "float32: also runs in the float32 pass (JAXSOLVE_TEST_X64=0: x64 off, float32 default)",
    )


def pytest_report_header(config):
    return f"jaxsolve: jax_enable_x64={X64} (JAXSOLVE_TEST_X64), dtype promotion strict"


def pytest_collection_modifyitems(config, items):
    if X64:
        return
    selected, deselected = [], []
    for item in items:
        (selected if item.get_closest_marker("float32") else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
