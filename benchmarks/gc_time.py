"""Seconds a training run spends in Python's garbage collector, per generation.

Every update leaves hundreds of arrays for the collector; a full collection also scans every
long-lived object of the set-up unless the loop froze them (`gc.freeze` in
`recall2imagine/run.py`). This runs `train.py` in this process with `gc.callbacks` timing
each collection and records the counts and seconds per generation, the wall time and the env
steps in benchmarks/results/gc_time[_<tag>].{json,csv}.

    python benchmarks/gc_time.py                         # cpu tmaze presets, 10,000 env steps
    python benchmarks/gc_time.py --repo ../other-checkout --tag before   # another checkout's train.py
"""

import argparse
import gc
import os
import runpy
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, run_metadata, script_environ, write_record  # noqa: E402


def timed_collections(run) -> dict:
    """Calls run() with every garbage collection timed: {generation: [count, seconds]}."""
    stats = {generation: [0, 0.0] for generation in range(3)}
    started = [0.0]

    def callback(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            stats[info["generation"]][0] += 1
            stats[info["generation"]][1] += time.perf_counter() - started[0]

    gc.callbacks.append(callback)
    try:
        run()
    finally:
        gc.callbacks.remove(callback)
    return stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "tmaze"])
    parser.add_argument("--task", default="tmaze_passive_50")
    parser.add_argument("--steps", type=int, default=10_000, help="env steps to run")
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose train.py runs")
    parser.add_argument("--tag", default="", help="suffix of the record's name")
    parser.add_argument("--out", default=None, help="record stem (default benchmarks/results/gc_time[_TAG])")
    args = parser.parse_args(argv)
    train = args.repo.resolve() / "recall2imagine" / "train.py"
    if not train.exists():
        parser.error(f"{train} does not exist: --repo must be a recall2imagine checkout")
    os.environ.update(script_environ(args.presets))
    exit_code = []

    def run():
        try:
            runpy.run_path(str(train), run_name="__main__")
        except SystemExit as stopped:
            exit_code.append(stopped.code)

    with tempfile.TemporaryDirectory(prefix="gc_time_") as scratch:
        train_args = ["--configs", *args.presets, "--task", args.task, "--logdir", str(Path(scratch) / "run"),
                      "--run.steps", str(args.steps)]
        saved_argv, saved_path = sys.argv, list(sys.path)
        sys.argv = [str(train), *train_args]
        sys.path.insert(0, str(args.repo.resolve()))
        start = time.perf_counter()
        try:
            stats = timed_collections(run)
        finally:
            sys.argv, sys.path = saved_argv, saved_path
        wall = time.perf_counter() - start
    if exit_code and exit_code[0] not in (0, None):
        print(f"error: train.py exited {exit_code[0]}", file=sys.stderr)
        return 1
    rows = [{"generation": g, "collections": n, "seconds": round(s, 3)} for g, (n, s) in stats.items()]
    total = sum(row["seconds"] for row in rows)
    print(f"{args.steps:,} env steps in {wall:.1f} s; garbage collection {total:.2f} s: "
          + ", ".join(f"gen {r['generation']} {r['collections']} x = {r['seconds']:.2f} s" for r in rows))
    record = {**run_metadata(["command", "date", "versions", "cpu_count", "load_average", "processor"],
                             packages=["jax", "jaxlib", "numpy"]),
              "train_command": "recall2imagine/train.py " + " ".join(train_args[:-4] + train_args[-2:]),
              "repo": str(args.repo), "presets": args.presets, "task": args.task, "env_steps": args.steps,
              "wall_s": round(wall, 1), "gc_seconds": round(total, 3), "generations": rows}
    write_record(args.out or RESULTS / ("gc_time" + (f"_{args.tag}" if args.tag else "")), record, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
