"""The `jaxsolve` command: `jaxsolve run [CONFIG] [--set KEY=VALUE ...] [--out DIR]`,
`jaxsolve list`."""

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

_TOP_LEVEL_KEYS = ("experiment", "name", "description", "params")


def _configs_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / "_configs", here.parent / "configs"]


def _find_config(name_or_path: str | None) -> Path | None:
    """A path as given, else a named config in the packaged or source-tree configs folder."""
    if name_or_path is None:
        name_or_path = "quickstart"
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    stem = path.stem if path.suffix == ".toml" else path.name
    for folder in _configs_dirs():
        candidate = folder / f"{stem}.toml"
        if candidate.exists():
            return candidate
    return None


def _all_configs() -> dict[str, Path]:
    found = {}
    for folder in reversed(_configs_dirs()):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = path
    return dict(sorted(found.items()))


def load_config(name_or_path: str | None) -> dict:
    """Read and check a config; raises `ConfigError` with a one-line message."""
    from .experiments import ConfigError

    path = _find_config(name_or_path)
    if path is None:
        if name_or_path is None:  # no configs folder at all: the built-in default
            return {"experiment": "quickstart", "name": "quickstart", "params": {}}
        choices = ", ".join(_all_configs()) or "(none found)"
        raise ConfigError(f"config {name_or_path!r} not found; available configs: {choices}")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"malformed TOML in {path}: {e}") from None
    unknown = sorted(set(data) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {path}; valid keys: {', '.join(_TOP_LEVEL_KEYS)}"
        )
    if "experiment" not in data:
        raise ConfigError(f'{path} must name an experiment (experiment = "...")')
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"`params` in {path} must be a table, got {type(params).__name__}")
    return {"experiment": data["experiment"], "name": data.get("name", path.stem), "params": params}


def _format_value(value) -> str:
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    cells = [[_format_value(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """Read one `--set KEY=VALUE`.

    **Arguments:**

    - `text`: what followed `--set`, for example `num_paths=64`, `steps=[4, 8]`,
      `spacing=karras`.

    **Returns:** `(key, value)`. The value is read as a TOML value, so it has the type it would
    have in a config's `[params]` (`64` an int, `1e-3` a float, `[4, 8]` a list, `true` a bool);
    text that is not a TOML value (`karras`) is a string, as if it had been quoted. Raises
    `ConfigError` without an `=` or a key.
    """
    from .experiments import ConfigError

    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _prepare_out_dir(out_dir: Path) -> None:
    """Create `out_dir` and prove it is writable, before anything is computed."""
    from .experiments import ConfigError

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # mkdir succeeds on an existing read-only folder: only a write proves it is usable.
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise ConfigError(
            f"cannot write to output folder {str(out_dir)!r}: {e.strerror or e}"
        ) from None


def _write_results(out_dir: Path, results: dict) -> None:
    """Write results.json atomically: a Ctrl-C or a crash mid-write leaves the old file whole."""
    target = out_dir / "results.json"
    partial = out_dir / ".results.json.partial"
    partial.write_text(json.dumps(_jsonable(results), indent=2))
    os.replace(partial, target)


def _machine() -> dict:
    import jax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
    }


def cmd_run(args) -> int:
    """`jaxsolve run`: check everything that can be checked, then run and record.

    Config, overrides and output folder are all checked before the experiment starts, so a
    mistake is a one-line error (exit 2) with nothing computed. results.json is written at
    the start (status "running"), and rewritten at the end with status "completed",
    "interrupted" (Ctrl-C, exit 130) or "failed" (the error re-raised), so the run folder
    always says what happened to the run.
    """
    from .experiments import RunContext, get

    config = load_config(args.config)
    experiment = get(config["experiment"])
    overrides = dict(parse_override(text) for text in args.set)
    params = experiment.resolve_params({**config["params"], **overrides})
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out) if args.out else Path("runs") / f"{config['name']}-{stamp}"
    _prepare_out_dir(out_dir)
    print(
        f"jaxsolve run: experiment {experiment.name!r} (config {config['name']!r}) -> {out_dir}",
        flush=True,
    )
    record = {
        "experiment": experiment.name,
        "config": config["name"],
        "params": params,
        "overrides": overrides,
        "status": "running",
        "machine": _machine(),
    }
    _write_results(out_dir, record)
    start = time.perf_counter()
    try:
        output = experiment.fn(RunContext(out_dir=out_dir, progress=not args.quiet), **params)
    except BaseException as error:
        elapsed = time.perf_counter() - start
        interrupted = isinstance(error, KeyboardInterrupt)
        record.update(
            status="interrupted" if interrupted else "failed",
            elapsed_s=elapsed,
            # whatever the experiment had written before it stopped
            plots=sorted(p.name for p in out_dir.glob("*.png")),
        )
        if not interrupted:
            record["error"] = f"{type(error).__name__}: {error}"
        _write_results(out_dir, record)
        if interrupted:
            print(
                f"jaxsolve: interrupted after {elapsed:.1f} s; "
                f"wrote {out_dir / 'results.json'} (status: interrupted)",
                file=sys.stderr,
            )
            return 130  # the shell's convention for a process stopped by SIGINT
        raise
    elapsed = time.perf_counter() - start
    record.update(
        status="completed",
        table=output.table,
        summary=output.summary,
        plots=output.plots,
        elapsed_s=elapsed,
    )
    _write_results(out_dir, record)
    print(format_table(output.table))
    if output.summary:
        print(
            "summary: "
            + ", ".join(
                f"{k}={_format_value(v)}"
                for k, v in output.summary.items()
                if not isinstance(v, dict | list)
            )
        )
    print(f"wrote {out_dir / 'results.json'}" + "".join(f", {out_dir / p}" for p in output.plots))
    print(f"done in {elapsed:.1f} s")
    return 0


def cmd_list(args) -> int:
    from .experiments import available

    print("experiments:")
    for name, exp in available().items():
        params = ", ".join(f"{k}={p.default!r}" for k, p in exp.parameters().items())
        print(f"  {name:28s} {exp.description}")
        if params:
            print(f"  {'':28s} params: {params}")
    print("configs:")
    for name, path in _all_configs().items():
        print(f"  {name:28s} {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage dump
        from .experiments import ConfigError

        raise ConfigError(message)


def main(argv=None) -> int:
    from .experiments import ConfigError

    parser = _Parser(prog="jaxsolve", description="Run jaxsolve experiments.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="run an experiment config (default: the quickstart)")
    run.add_argument(
        "config",
        nargs="?",
        default=None,
        help="a config name (see `jaxsolve list`) or a .toml path",
    )
    run.add_argument("--out", default=None, help="output folder (default runs/<name>-<timestamp>)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [params] value of the config, checked like the TOML (repeatable); "
        "VALUE is a TOML value: --set num_paths=64 --set 'steps=[4, 8]'",
    )
    run.add_argument("--quiet", action="store_true", help="no progress meters")
    sub.add_parser("list", help="list experiments and configs")
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return cmd_run(args) if args.command == "run" else cmd_list(args)
    except ConfigError as e:
        print(f"jaxsolve: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
