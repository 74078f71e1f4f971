"""Timing harness shared by every benchmark.

`measure(fn, *args)` returns the first-call time (trace + compile + one run) and the median of
repeated runs after `block_until_ready`; `print_table` prints rows with the ratio of each entry
to its anchor measured in the same process.
"""

import atexit
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax


@dataclass
class Timing:
    name: str
    first_call_s: float
    run_s: float
    note: str = ""


def _block(out):
    return jax.tree.map(
        lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, out
    )


def measure(
    name: str, fn: Callable, *args, repeats: int = 7, min_time: float = 0.2, note: str = ""
) -> Timing:
    """Time `fn(*args)`: first call (compile included), then the median of `repeats` runs.

    Each repeat runs the function enough times to last about `min_time` seconds, so that very
    short kernels are not dominated by timer noise.
    """
    (timing,) = measure_interleaved([(name, fn, args)], repeats=repeats, min_time=min_time)
    timing.note = note
    return timing


def measure_interleaved(
    entries: list[tuple[str, Callable, tuple]], repeats: int = 15, min_time: float = 0.1
) -> list[Timing]:
    """Time several `(name, fn, args)` side by side: first calls one after another, then
    `repeats` rounds in which each entry takes one sample in turn. On a shared, noisy machine a
    change of load then hits every entry alike, so their ratio is steadier than when each is
    timed in its own block. Returns one `Timing` per entry (median of its samples)."""
    firsts, inners = [], []
    for _, fn, args in entries:
        start = time.perf_counter()
        _block(fn(*args))
        firsts.append(time.perf_counter() - start)
        start = time.perf_counter()
        _block(fn(*args))
        inners.append(max(1, int(min_time / max(time.perf_counter() - start, 1e-7))))
    samples: list[list[float]] = [[] for _ in entries]
    for _ in range(repeats):
        for k, (_, fn, args) in enumerate(entries):
            start = time.perf_counter()
            for _ in range(inners[k]):
                out = fn(*args)
            _block(out)
            samples[k].append((time.perf_counter() - start) / inners[k])
    return [
        Timing(name, first, statistics.median(times))
        for (name, _, _), first, times in zip(entries, firsts, samples, strict=True)
    ]


def fresh_first_calls(module: str, cases: list[str], processes: int = 5) -> dict[str, float]:
    """Median over `processes` fresh Python processes of the first-call time of each
    `benchmarks.<module>.first_call_case(case)` (see `benchmarks._first_call`), the cases
    alternating process by process so that a change of load hits them alike.

    In one process the entry timed first also pays JAX's one-time start-up, and a library's
    later entries reuse what its earlier ones traced and cached: fresh processes give each entry
    the first call a user's script would see.
    """
    import subprocess
    import sys

    times: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(processes):
        for case in cases:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks._first_call", module, case],
                check=True,
                capture_output=True,
                text=True,
            )
            times[case].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {case: statistics.median(t) for case, t in times.items()}


def machine() -> str:
    """One line naming the machine: processor, cores, device count and kind, jax, python."""
    device = jax.devices()[0]
    return (
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), "
        f"{jax.device_count()} x {device.device_kind}, jax {jax.__version__}, "
        f"python {platform.python_version()}"
    )


def load_average() -> float | None:
    """The 1-minute load average (None where the OS does not report it)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


# Every table printed in this process, as markdown: `python -m benchmarks` collects them (the
# environment variable names the JSON file they are written to when the process exits).
TABLES: list[dict] = []
_TABLES_FILE = "JAXSOLVE_BENCHMARK_TABLES"


def _dump_tables():
    path = os.environ.get(_TABLES_FILE)
    if path:
        with open(path, "w") as f:
            json.dump(TABLES, f)


atexit.register(_dump_tables)


def print_table(title: str, timings: list[Timing], anchor: str) -> list[dict]:
    """Print timings with ratios to the entry named `anchor` as a markdown table (and record it
    for `python -m benchmarks`); returns the rows."""
    base = next(t for t in timings if t.name == anchor)
    rows = [
        {
            "entry": t.name,
            "first_call_s": t.first_call_s,
            "run_s": t.run_s,
            "run_ratio": t.run_s / base.run_s,
            "first_ratio": t.first_call_s / base.first_call_s,
            "note": t.note,
        }
        for t in timings
    ]
    record_table(
        title,
        ["entry", "compile+first (s)", "run median (s)", f"run / {anchor}", f"first / {anchor}",
         "note"],
        [
            [r["entry"], f"{r['first_call_s']:.3f}", f"{r['run_s']:.3e}", f"{r['run_ratio']:.3f}",
             f"{r['first_ratio']:.3f}", r["note"]]
            for r in rows
        ],
    )  # fmt: skip
    return rows


def add_note(text: str) -> None:
    """Print `text` and attach it, below the table, to the last table recorded."""
    print(text)
    if TABLES:
        TABLES[-1].setdefault("notes", []).append(text.strip())


def record_table(title: str, header: list[str], rows: list[list]) -> None:
    """Print and record a table that is not a timing comparison (e.g. memory figures)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    where = machine()
    print(f"\n## {title}\n({where})")
    print("\n".join(lines))
    TABLES.append(
        {"title": title, "machine": where, "load": load_average(), "markdown": "\n".join(lines)}
    )
