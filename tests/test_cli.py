import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxsolve.cli import format_table, main


def _write(tmp_path, text, name="cfg.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'experiment = "no_such_experiment"\n',
            "unknown experiment 'no_such_experiment'; available: ",
        ),
        (
            'experiment = "quickstart"\n[params]\nsectoins = ["core"]\n',
            "unknown parameter 'sectoins' for experiment 'quickstart'; valid parameters: sections",
        ),
        ('experiment = "quickstart"\nparms = 3\n', "unknown key 'parms'"),
        ('experiment = "quickstart"\n[params\n', "malformed TOML"),
        ('experiment = "quickstart"\n[params]\nsections = 3\n', "must be a list"),
        (
            'experiment = "quickstart"\n[params]\nsections = ["nope"]\n',
            "unknown quickstart section 'nope'; available: core",
        ),
        ("name = 'x'\n", "must name an experiment"),
    ],
)
def test_config_errors_exit_2_with_one_line(tmp_path, capsys, text, message):
    code = main(["run", _write(tmp_path, text), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("jaxsolve: error: ")
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_config_name_and_bad_arguments(capsys):
    assert main(["run", "definitely_not_a_config"]) == 2
    assert "available configs: " in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice" in err


def test_list_shows_experiments_and_configs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "configs:" in out


def test_format_table_aligns_columns():
    text = format_table([{"a": 1.23456789, "b": "x"}, {"a": 1e-9, "b": "longer"}])
    lines = text.splitlines()
    assert (
        lines[0].split() == ["a", "b"]
        and len({len(line.rstrip()) <= len(lines[1]) for line in lines}) == 1
    )
    assert "1.235" in text and "1.000e-09" in text


def test_run_default_quickstart_from_any_directory(tmp_path):
    """`jaxsolve run` with no config, from a folder outside the repo: table, results.json, a PNG."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxsolve.cli", "run", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pillar" in proc.stdout and "abs_error" in proc.stdout
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert run_dir.name.startswith("quickstart-")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["experiment"] == "quickstart" and results["table"]
    assert {row["pillar"] for row in results["table"]} >= {
        "core",
        "brownian",
        "diffeq",
        "diffusion",
        "linear",
        "nonlinear",
    }
    failed = [
        row for row in results["table"] if not row["ok"] or not row["abs_error"] <= row["tolerance"]
    ]
    assert not failed, failed
    pngs = list(run_dir.glob("*.png"))
    assert pngs and all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_builtin_png_writer_without_matplotlib(tmp_path, monkeypatch):
    from jaxsolve.experiments import _plot

    monkeypatch.setattr(_plot, "_have_matplotlib", lambda: False)
    name = _plot.line_plot(tmp_path / "a.png", {"s": ([1, 2, 3], [1.0, 0.1, 0.01])}, logy=True)
    data = (tmp_path / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 500
    _plot.scatter_plot(tmp_path / "b.png", {"g": [[0.0, 1.0], [1.0, 0.0]]})
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
