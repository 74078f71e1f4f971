import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxsolve.cli import format_table, main, parse_override
from jaxsolve.experiments import ExperimentOutput, _registry


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


# ---------------------------------------------------------------------------------------------
# --set, --out and interrupted runs. These replace a registered experiment's function by one
# with the same signature (so the same schema) that records its call or misbehaves on purpose:
# the CLI's checks must act before the experiment runs, so nothing real needs to run.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_run(monkeypatch):
    """Replace the function of experiment `name` with `body(ctx, **params)`; returns the calls."""
    calls = []

    def install(name, body):
        experiment = _registry.available()[name]

        @functools.wraps(experiment.fn)  # keeps the signature and annotations: the schema
        def fn(ctx, **params):
            calls.append(params)
            return body(ctx, **params)

        monkeypatch.setitem(_registry._REGISTRY, name, dataclasses.replace(experiment, fn=fn))
        return calls

    return install


def _one_row(ctx, **params):
    return ExperimentOutput(table=[{"a": 1}], summary={"ok": True})


def test_set_overrides_config_values(tmp_path, fake_run):
    calls = fake_run("sde_order_table", _one_row)
    config = _write(
        tmp_path,
        'experiment = "sde_order_table"\n[params]\nnum_paths = 8\ntree_tol = 0.25\n',
    )
    out = tmp_path / "out"
    code = main(
        ["run", config, "--set", "num_paths=4", "--set", "steps=[4, 8, 16]", "--out", str(out)]
    )
    assert code == 0
    # --set wins over the TOML; values the TOML set and --set did not keep theirs
    assert calls == [{"num_paths": 4, "steps": [4, 8, 16], "tree_tol": 0.25, "seed": 0}]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["params"]["num_paths"] == 4
    assert results["overrides"] == {"num_paths": 4, "steps": [4, 8, 16]}


def test_set_takes_bare_words_as_strings_and_checks_choices(tmp_path, fake_run, capsys):
    calls = fake_run("diffusion_error_vs_nfe", _one_row)
    out = str(tmp_path / "out")
    assert main(["run", "diffusion_error_vs_nfe", "--set", "spacing=karras", "--out", out]) == 0
    assert calls[-1]["spacing"] == "karras"
    assert main(["run", "diffusion_error_vs_nfe", "--set", "spacing=karass", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "must be one of 'logsnr', 'uniform', 'quadratic', 'karras', got str 'karass'" in err
    assert len(calls) == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("num_paths=-4", "parameter 'num_paths' of experiment 'sde_order_table' must be > 0"),
        ("num_paths=0", "must be > 0, got int 0"),
        ("num_paths=4.5", "must be int, got float 4.5"),
        ("num_paths=true", "must be int, got bool True"),
        ("num_path=4", "unknown parameter 'num_path' for experiment 'sde_order_table'"),
        ("steps=[4]", "parameter 'steps' of experiment 'sde_order_table' must have at least 2"),
        ("steps=[4, -8]", "must be > 0, got int -8"),
        ("steps=4", "must be a list"),
        ("tree_tol=nan", "must be in (0, 1), got float nan"),
        ("tree_tol=2.0", "must be in (0, 1)"),
        ("seed=-1", "must be in [0, 4294967295]"),
        ("num_paths", "--set expects KEY=VALUE, got 'num_paths'"),
        ("=4", "--set expects KEY=VALUE"),
    ],
)
def test_bad_set_is_one_line_error_before_anything_runs(
    tmp_path, fake_run, capsys, override, message
):
    calls = fake_run("sde_order_table", _one_row)
    out = tmp_path / "out"
    code = main(["run", "sde_order_table", "--set", override, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("jaxsolve: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert calls == [] and not out.exists()


def test_cross_parameter_condition(tmp_path, fake_run, capsys):
    calls = fake_run("learning_to_relax", _one_row)
    code = main(
        ["run", "learning_to_relax", "--set", "omega_min=1.9", "--set", "omega_max=1.5",
         "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 2 and calls == []
    assert (
        "needs omega_min <= omega_max; got omega_min=1.9, omega_max=1.5" in capsys.readouterr().err
    )


def test_parse_override_reads_toml_values():
    assert parse_override("a=3") == ("a", 3)
    assert parse_override("a = 1e-3") == ("a", 1e-3)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override('a="x y"') == ("a", "x y")
    assert parse_override("a=false") == ("a", False)
    assert parse_override("a=x=y") == ("a", "x=y")  # only the first = splits


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_unwritable_out_is_one_line_error(tmp_path, fake_run, capsys, where):
    calls = fake_run("sde_order_table", _one_row)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "run" if where == "under_a_file" else blocker
    code = main(["run", "sde_order_table", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and calls == []
    assert err.startswith("jaxsolve: error: cannot write to output folder ")
    assert err.count("\n") == 1
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_out_is_one_line_error(tmp_path, fake_run, capsys):
    calls = fake_run("sde_order_table", _one_row)
    out = tmp_path / "read_only"
    out.mkdir(mode=0o500)
    assert main(["run", "sde_order_table", "--out", str(out)]) == 2 and calls == []
    assert "cannot write to output folder" in capsys.readouterr().err


def test_ctrl_c_leaves_results_saying_interrupted(tmp_path, fake_run, capsys):
    def interrupted(ctx, **params):
        (ctx.out_dir / "half_done.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        raise KeyboardInterrupt

    fake_run("sde_order_table", interrupted)
    out = tmp_path / "out"
    code = main(["run", "sde_order_table", "--set", "num_paths=4", "--out", str(out), "--quiet"])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and err.count("\n") == 1
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert results["params"]["num_paths"] == 4 and results["experiment"] == "sde_order_table"
    assert results["plots"] == ["half_done.png"] and results["elapsed_s"] >= 0
    assert "table" not in results
    assert sorted(p.name for p in out.iterdir()) == ["half_done.png", "results.json"]


def test_failed_run_leaves_results_with_the_error(tmp_path, fake_run):
    def broken(ctx, **params):
        raise RuntimeError("the solver diverged")

    fake_run("sde_order_table", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="diverged"):
        main(["run", "sde_order_table", "--out", str(out), "--quiet"])
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed"
    assert results["error"] == "RuntimeError: the solver diverged"


def test_results_say_running_while_the_experiment_runs(tmp_path, fake_run):
    seen = []

    def peek(ctx, **params):
        seen.append(json.loads((ctx.out_dir / "results.json").read_text())["status"])
        return _one_row(ctx, **params)

    fake_run("sde_order_table", peek)
    out = tmp_path / "out"
    assert main(["run", "sde_order_table", "--out", str(out), "--quiet"]) == 0
    assert seen == ["running"]
    assert json.loads((out / "results.json").read_text())["status"] == "completed"
