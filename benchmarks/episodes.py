"""A run's training episodes per window of env steps: how many, mean score, the shares of
scores above, at and below zero, success rate, mean length, and how many ended before the
task's time limit with what success.

The last two separate "chooses at random" from "never chooses": on Ballet an episode that
reaches no dancer runs to its limit and fails, so a success rate under the chance level
can hide choices that are exactly at chance. On Key-to-Door the windows also give the rate
of episodes that took the key and the success of those: which half of the task fails.

    python benchmarks/episodes.py benchmarks/runs/ballet --every 50000 --limit 320

Reads <run>/scores.jsonl (one row per finished training episode: step, episode/score,
episode/length, and episode/success and episode/key_taken where the task reports them) and writes
benchmarks/results/episodes_<run name>.json and .csv (or --out), with the command.
`--metrics KEY ...` adds, per window, the mean, least and greatest value that
<run>/metrics.jsonl logged for each training metric (e.g. expl/bonus imag/reward
retnorm/scale); a key the run never logged is refused with the keys it did log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import RESULTS, read_jsonl, run_metadata, write_record  # noqa: E402


def mean(values):
    """The mean rounded to 4 places, or None for no values."""
    return round(sum(values) / len(values), 4) if values else None


def windows(scores: list[dict], every: int, limit: int | None = None) -> list[dict]:
    """One row per window [k * every, (k + 1) * every) of env steps that holds episodes."""
    groups: dict[int, list[dict]] = {}
    for row in scores:
        groups.setdefault(int(row["step"]) // every, []).append(row)
    rows = []
    for index in sorted(groups):
        episodes = groups[index]
        row = {"from_step": index * every, "to_step": (index + 1) * every, "episodes": len(episodes),
               "mean_score": mean([e["episode/score"] for e in episodes]),
               "mean_length": mean([e["episode/length"] for e in episodes])}
        # Shares of scores above, at and below 0: on T-Maze, found the goal / reached the
        # junction on time and missed it / fell behind the walk (a penalty).
        for name, test in (("above", lambda x: x > 0), ("zero", lambda x: x == 0), ("below", lambda x: x < 0)):
            row[f"score_{name}_0"] = mean([float(test(e["episode/score"])) for e in episodes])
        reported = [e for e in episodes if "episode/success" in e]
        row["success"] = mean([float(e["episode/success"]) for e in reported])
        keyed = [e for e in episodes if "episode/key_taken" in e]
        if keyed:
            taken = [e for e in keyed if e["episode/key_taken"]]
            row["key_taken"] = mean([float(e["episode/key_taken"]) for e in keyed])
            row["success_of_key_taken"] = mean([float(e.get("episode/success", 0.0)) for e in taken])
        if limit is not None:
            early = [e for e in reported if e["episode/length"] < limit]
            row["ended_before_limit"] = len([e for e in episodes if e["episode/length"] < limit])
            row["success_of_those"] = mean([float(e["episode/success"]) for e in early])
        rows.append(row)
    return rows


def metric_windows(rows: list[dict], metrics: list[dict], keys: list[str]) -> None:
    """Adds to each window row `<key>` (mean), `<key>_min` and `<key>_max` of the metrics
    logged in that window of env steps (None where none was)."""
    for row in rows:
        logged = [m for m in metrics if row["from_step"] <= m["step"] < row["to_step"]]
        for key in keys:
            values = [float(m[key]) for m in logged if key in m]
            row[key] = mean(values)
            row[f"{key}_min"] = round(min(values), 4) if values else None
            row[f"{key}_max"] = round(max(values), 4) if values else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory (holding scores.jsonl)")
    parser.add_argument("--every", type=int, default=50_000, help="env steps per window")
    parser.add_argument("--limit", type=int, default=None,
                        help="the task's episode time limit: also count the episodes that ended sooner")
    parser.add_argument("--metrics", nargs="+", default=[], metavar="KEY",
                        help="metrics.jsonl keys to average per window too")
    parser.add_argument("--out", type=Path, default=None, help="output stem (default results/episodes_<run>)")
    args = parser.parse_args(argv)
    if args.every <= 0:
        parser.error(f"--every must be a positive number of env steps, got {args.every}")
    path = args.run / "scores.jsonl"
    if not path.is_file():
        parser.error(f"{path} does not exist: give a run directory that holds scores.jsonl")
    rows = windows(read_jsonl(path), args.every, args.limit)
    if not rows:
        parser.error(f"{path} holds no finished episodes yet")
    if args.metrics:
        logged_path = args.run / "metrics.jsonl"
        logged = read_jsonl(logged_path) if logged_path.is_file() else []
        known = sorted({key for m in logged for key in m} - {"step"})
        unknown = [key for key in args.metrics if key not in known]
        if unknown:
            parser.error(f"{logged_path} logs no {', '.join(unknown)}; it logs: {', '.join(known) or 'nothing'}")
        metric_windows(rows, logged, args.metrics)
    for row in rows:
        print("  ".join(f"{key} {value}" for key, value in row.items()), flush=True)
    record = {"run": str(args.run), "every": args.every, "limit": args.limit, "metrics": args.metrics, "windows": rows,
              **run_metadata(["command", "date"], argv=["benchmarks/episodes.py", *(sys.argv[1:] if argv is None else argv)])}
    write_record(args.out or RESULTS / f"episodes_{args.run.name}", record, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
