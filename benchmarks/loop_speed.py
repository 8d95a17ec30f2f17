"""Env steps per second of the whole training loop (acting, replay, updates, evaluation).

`train_step.py` times one update alone; a run's minutes also go to the policy step of every
env step, the replay, the greedy evaluations and the bookkeeping between them. This runs
`train.py` for `--steps` env steps in a scratch run directory and reports the loop's speed
from its own log: the median `fps/env` of the logged periods after the first (which holds
the compilation), the updates per second, and the wall time of the run. Records the exact
command, date, versions and machine in benchmarks/results/loop_speed[_<tag>].{json,csv}.

    python benchmarks/loop_speed.py                       # cpu tmaze presets, 12,000 env steps
    python benchmarks/loop_speed.py --presets cpu popgym --task gym_popgym:popgym-RepeatPreviousEasy-v0
    python benchmarks/loop_speed.py --tag before -- --imag_starts 0.25   # extra train.py flags
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, read_jsonl, run_metadata, start_training, write_record  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "tmaze"])
    parser.add_argument("--task", default="tmaze_passive_50")
    parser.add_argument("--steps", type=int, default=12_000, help="env steps to run")
    parser.add_argument("--tag", default="", help="suffix of the record's name")
    parser.add_argument("--out", default=None, help="record stem (default benchmarks/results/loop_speed[_TAG])")
    parser.add_argument("extra", nargs="*", help="train.py flags after --")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be a positive number of env steps, got {args.steps}")
    return args


def loop_figures(metrics: list[dict]) -> dict:
    """The loop's speed from a run's metrics.jsonl records: the logged periods carrying
    `fps/env`, the first (compilation) left out when there are others."""
    periods = [m for m in metrics if "fps/env" in m]
    if not periods:
        raise ValueError("the run logged no fps/env period: run more --steps")
    steady = periods[1:] or periods
    fps = [m["fps/env"] for m in steady]
    updates = [m["fps/train"] for m in steady if "fps/train" in m]
    return {"periods": len(steady), "env_steps_per_s": statistics.median(fps),
            "replayed_steps_per_s": statistics.median(updates) if updates else None}


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="loop_speed_") as scratch:
        logdir = Path(scratch) / "run"
        extra = ["--run.steps", str(args.steps), "--run.log_every", "10", *args.extra]
        start = time.perf_counter()
        command, process = start_training(args.presets, args.task, logdir, extra)
        _, stderr = process.communicate()
        wall = time.perf_counter() - start
        if process.returncode != 0:
            print(stderr[-2000:], file=sys.stderr)
            print(f"error: train.py exited {process.returncode}", file=sys.stderr)
            return 1
        figures = loop_figures(read_jsonl(logdir / "metrics.jsonl"))
    row = {"presets": " ".join(args.presets), "task": args.task, "extra": " ".join(args.extra),
           "env_steps": args.steps, "wall_s": round(wall, 1), **figures}
    print(f"{row['presets']} {args.task} {row['extra']}: {figures['env_steps_per_s']:.1f} env steps/s "
          f"(median of {figures['periods']} periods), whole run {wall:.0f} s with compilation")
    record = {**run_metadata(["command", "date", "versions", "cpu_count", "load_average", "processor"],
                             packages=["jax", "jaxlib", "numpy"]),
              "train_command": command, "result": row}
    stem = args.out or RESULTS / ("loop_speed" + (f"_{args.tag}" if args.tag else ""))
    write_record(stem, record, [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
