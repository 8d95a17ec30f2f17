"""T-Maze runs from their replay: does the agent fetch the cue, and does it use it?

Active T-Maze starts one cell right of the oracle; only a step left shows the cue. A greedy
success near 0.5 can mean "never looks" or "looks but forgets", and the two need different
fixes (exploration against memory). This reads a run's stored steps and reports, per window
of env steps: episodes, the share paid the goal reward (success), the share that saw the
cue, the share that turned to the cued goal, and that share among the episodes that saw it.

    python benchmarks/tmaze_visits.py benchmarks/runs/suite/tmaze_active_20 --every 50000

A step shows the cue when its observation is [0, +-1] (the oracle cell on the first visit);
the final observation [1, y] is the goal cell reached. Env steps are counted over all
streams (envs): window k holds the episodes that began in steps [k * every, (k + 1) * every).
Writes benchmarks/results/tmaze_visits_<run name>.json and .csv (or --out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import RESULTS, run_metadata, write_record  # noqa: E402
from replay.metadata import read_state  # noqa: E402
from replay.storage import Storage  # noqa: E402


def streams(directory: Path) -> dict[int, dict]:
    """Stored steps per stream (worker), oldest first: worker -> key -> array, plus "start"
    (the stream position of the first stored step; earlier ones were evicted)."""
    state = read_state(directory)
    if state is None or state.spec is None:
        raise SystemExit(f"{directory} holds no replay steps (no replay.json with a spec)")
    storage = Storage.open(directory, state.spec, state.chunk_size, state.num_slots)
    parts: dict[int, list] = {}
    for chunk in sorted(state.chunks, key=lambda c: (c.worker, c.start)):
        parts.setdefault(chunk.worker, []).append((chunk.start, storage.read_slot(chunk.slot, chunk.length)))
    out = {}
    for worker, chunks in parts.items():
        arrays = {key: np.concatenate([c[1][i] for c in chunks]) for i, key in enumerate(state.spec.keys)}
        arrays["start"] = chunks[0][0]
        out[worker] = arrays
    return out


def episodes(stream: dict) -> list[dict]:
    """Whole episodes of one stream: position of the first step, cue seen, cue value, goal
    reached (0 when the episode ended elsewhere), success (the final reward paid). An
    episode cut by eviction is skipped."""
    vector, first, last = stream["vector"], stream["is_first"], stream["is_last"]
    begins, ends = np.flatnonzero(first), np.flatnonzero(last)
    found = []
    # Each episode ends at the first is_last from its first step on.
    for begin, at in zip(begins, np.searchsorted(ends, begins)):
        if at == len(ends):
            break
        end = ends[at]
        steps = vector[begin:end + 1]
        cue = steps[(steps[:, 0] == 0) & (steps[:, 1] != 0)]
        goal = steps[-1, 1] if steps[-1, 0] == 1 else 0.0
        found.append({"position": int(stream["start"] + begin), "saw_cue": bool(len(cue)),
                      "cue": float(cue[0, 1]) if len(cue) else 0.0, "goal": float(goal),
                      "success": bool(stream["reward"][end] > 0.5)})
    return found


def by_window(per_stream: dict[int, list[dict]], every: int) -> dict[int, list[dict]]:
    """Rows with a stream "position", grouped by window index: window k holds env steps
    [k * every, (k + 1) * every), counted over all streams."""
    count = len(per_stream)
    groups: dict[int, list[dict]] = {}
    for found in per_stream.values():
        for row in found:
            groups.setdefault(row["position"] * count // every, []).append(row)
    return groups


def windows(per_stream: dict[int, list[dict]], every: int) -> list[dict]:
    """One row per window of env steps, counting env steps over all streams."""
    groups = by_window(per_stream, every)
    rows = []
    for index in sorted(groups):
        group = groups[index]
        seen = [e for e in group if e["saw_cue"]]
        rows.append({
            "from_step": index * every, "to_step": (index + 1) * every, "episodes": len(group),
            "success": round(sum(e["success"] for e in group) / len(group), 4),
            "saw_cue": round(len(seen) / len(group), 4),
            "cued_goal": round(sum(e["saw_cue"] and e["goal"] == e["cue"] for e in group) / len(group), 4),
            "cued_goal_when_seen": round(sum(e["goal"] == e["cue"] for e in seen) / len(seen), 4) if seen else None,
        })
    return rows


def window_args(doc: str, argv, needed=("replay/replay.json",)):
    """(parser, args) of a script that reads a run's replay per window of env steps: `run`,
    `--every`, `--out`; the run must hold each of `needed`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory of train.py (holds replay/)")
    parser.add_argument("--every", type=int, default=50000, help="env steps per window")
    parser.add_argument("--out", type=Path, default=None, help="record path without suffix")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error(f"--every must be a positive number of env steps, got {args.every}")
    for name in needed:
        if not (args.run / name).exists():
            parser.error(f"{args.run} has no {name}: pass a run directory of train.py")
    return parser, args


def main(argv=None):
    _, args = window_args(__doc__, argv)
    directory = args.run / "replay"
    per_stream = {worker: episodes(stream) for worker, stream in streams(directory).items()}
    rows = windows(per_stream, args.every)
    record = {**run_metadata(["command", "date"]), "run": str(args.run), "every": args.every,
              "streams": len(per_stream), "windows": rows}
    write_record(args.out or RESULTS / f"tmaze_visits_{args.run.name}", record, rows)
    return rows


if __name__ == "__main__":
    main()
