"""The README's first code example runs as written."""

import re
from pathlib import Path

import jax
import numpy as np


def test_readme_taste_runs():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## A taste\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    # a user's script runs with JAX's standard promotion and default float32
    with jax.numpy_dtype_promotion("standard"):
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["sol"].ys.shape == (1, 2)
    assert namespace["x0"].shape == (4, 2)
    X, y, lam = np.asarray(namespace["X"], np.float64), np.asarray(namespace["y"], np.float64), 0.1
    n = X.shape[0]
    hessian = X.T @ X / n + lam * np.eye(5)
    w = np.linalg.solve(hessian, X.T @ y / n)
    np.testing.assert_allclose(
        namespace["dw_dlam"], -np.linalg.solve(hessian, w), rtol=1e-3, atol=1e-5
    )


def test_readme_neural_ode_example_runs():
    # "Differentiating through solvers": a model in `args`, vmapped adaptive solves, a gradient.
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Differentiating through solvers", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    block = "\n".join(line[2:] if line.startswith("  ") else line for line in block.splitlines())
    namespace: dict = {}
    with jax.numpy_dtype_promotion("standard"):
        exec(compile(block, "README.md", "exec"), namespace)
    grads = jax.tree.leaves(namespace["grads"])
    assert np.isfinite(float(namespace["value"])) and float(namespace["value"]) > 0
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    assert any(float(np.max(np.abs(np.asarray(g)))) > 0 for g in grads)
