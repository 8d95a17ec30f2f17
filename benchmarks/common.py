"""What every benchmark script shares: one timing helper and one way to record results.

    from benchmarks.common import RESULTS, run_metadata, timed, write_record

    first, times = timed(lambda i: step(i), repeats=5)  # first call (compile) and 5 more
    meta = run_metadata(["command", "date", "versions", "cpu_count"], packages=["python", "jax"])
    write_record(RESULTS / "name", {"meta": meta, "results": rows}, rows, comments=[...])

`run_metadata` measures each fact one way (the command, the UTC date, versions, the
machine) while every script keeps the key names and order its records always had.
"""

import argparse
import csv
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# Greedy-evaluation measures and their metrics.jsonl keys (`run.evaluate` writes them; success
# only for tasks that report it).
EVAL_KEYS = {"eval": "eval/episode/score", "success": "eval/episode/success"}


def timed(fn, repeats: int):
    """Times `fn(i)`: (seconds of the first call fn(0), compilation included, [seconds of each
    of fn(1) .. fn(repeats)]). A JAX result is waited for before the clock stops."""

    def call(i):
        start = time.perf_counter()
        result = fn(i)
        if "jax" in sys.modules:  # dispatch is asynchronous: wait for the values
            sys.modules["jax"].block_until_ready(result)
        return time.perf_counter() - start

    first = call(0)
    return first, [call(i) for i in range(1, repeats + 1)]


def command(argv=None, module: str | None = None) -> str:
    """The command line that ran this process (`python <script> <args>`, or `python -m module
    <args>`), quoted so that it can be pasted back into a shell. XLA_FLAGS, when set, leads
    it: they change compile times and the programs compiled."""
    argv = list(sys.argv if argv is None else argv)
    words = ["-m", module, *argv[1:]] if module else argv
    line = shlex.join([Path(sys.executable).name, *words])
    flags = os.environ.get("XLA_FLAGS", "").strip()
    return f"XLA_FLAGS={shlex.quote(flags)} {line}" if flags else line


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def load_average() -> list:
    """1, 5 and 15 minute load averages: how busy the (possibly shared) CPU was."""
    return [round(value, 2) for value in os.getloadavg()]


def versions(packages) -> dict:
    """Each installed distribution's version by name ("python": the interpreter's)."""
    return {name: platform.python_version() if name == "python" else importlib.metadata.version(name)
            for name in packages}


def _jax():
    import jax

    return jax


# One way to measure each fact; a few have two names, as the records have always used both.
FACTS = {
    "command": None,  # filled by run_metadata (needs argv and module)
    "date": utc_now,
    "date_utc": utc_now,
    "python": platform.python_version,
    "platform": platform.platform,
    "processor": lambda: platform.processor() or platform.machine(),
    "machine": platform.machine,
    "cpu_count": os.cpu_count,
    "cpus": os.cpu_count,
    "cpus_usable": lambda: len(os.sched_getaffinity(0)),
    "load_average": load_average,
    "load_average_at_start": load_average,
    "jax": lambda: _jax().__version__,
    "jax_version": lambda: _jax().__version__,
    "backend": lambda: _jax().default_backend(),
    "devices": lambda: [d.device_kind for d in _jax().devices()],
    "versions": None,  # filled by run_metadata (needs packages)
}


def run_metadata(fields, packages=(), argv=None, module: str | None = None) -> dict:
    """The run's metadata under the names in `fields`, in that order (see FACTS). "versions"
    is `versions(packages)`; "command" is `command(argv, module)`."""
    unknown = [name for name in fields if name not in FACTS]
    if unknown:
        raise KeyError(f"unknown metadata fields {unknown}; known: {sorted(FACTS)}")
    meta = {}
    for name in fields:
        if name == "command":
            meta[name] = command(argv, module)
        elif name == "versions":
            meta[name] = versions(packages)
        else:
            meta[name] = FACTS[name]()
    return meta


def key_value(item: str) -> str:
    """argparse type of a `--set` item: KEY=VALUE, kept as given (a bare key stops with exit 2)."""
    if "=" not in item:
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE items, got {item!r}")
    return item


def set_overrides(items) -> dict:
    """`--set KEY=VALUE` items as config overrides, each value as the command line gives it."""
    return {key: [value] for key, value in (item.split("=", 1) for item in items)}


def write_record(stem, record: dict, rows=None, columns=None, comments=(), footer=(), quiet=False) -> list:
    """Writes `record` as <stem>.json and, given `rows`, those rows as <stem>.csv.

    The JSON replaces the old one whole (written beside it, then renamed): a kill while writing
    leaves the previous record. The CSV starts with one `# line` per entry of `comments` (the
    metadata a reader of the CSV alone needs), then a header of `columns` (default: the first
    row's keys; a row lacking a column leaves it empty), the rows, and one `# line` per entry
    of `footer`. Returns the paths written and prints them (unless `quiet`).
    """
    stem = Path(stem)
    if stem.suffix in (".json", ".csv"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path = stem.with_name(stem.name + ".json")
    partial = json_path.with_name(json_path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, json_path)
    written = [json_path]
    if rows:
        csv_path = stem.with_name(stem.name + ".csv")
        with open(csv_path, "w", newline="") as handle:
            for line in comments:
                handle.write(f"# {line}\n")
            writer = csv.DictWriter(handle, fieldnames=list(columns or rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            for line in footer:
                handle.write(f"# {line}\n")
        written.append(csv_path)
    if not quiet:
        print("wrote " + " and ".join(str(path) for path in written), flush=True)
    return written


def read_jsonl(path) -> list[dict]:
    """The records of a run's metrics.jsonl or scores.jsonl written so far ([] if none yet);
    stops at a line still being written."""
    path, records = Path(path), []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def script_environ(configs) -> dict:
    """The environment of a script run for presets `configs`: CPU-only JAX when `cpu` is among them."""
    return dict(os.environ, **({"JAX_PLATFORMS": "cpu"} if "cpu" in configs else {}))


def start_training(configs, task: str, logdir, extra=()):
    """Starts train.py on `task` with presets `configs` in `logdir` (CPU-only JAX when `cpu` is
    among the presets). Returns (the command as recorded: repository-relative, without the
    interpreter; the process, stdout discarded, stderr piped)."""
    root = RESULTS.parents[1]
    command = [sys.executable, str(root / "recall2imagine" / "train.py"), "--configs", *configs,
               "--task", task, "--logdir", str(logdir), *extra]
    process = subprocess.Popen(command, cwd=root, env=script_environ(configs), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    return " ".join(command[1:]).replace(str(root) + "/", ""), process


class Interrupted(Exception):
    """SIGTERM reached a benchmark script (a job killed, `kill <pid>`): it stops the training
    run it started (which saves) and writes its record before exiting."""


def raise_interrupted(signum, frame):
    """SIGTERM handler: `signal.signal(signal.SIGTERM, raise_interrupted)`."""
    raise Interrupted()
