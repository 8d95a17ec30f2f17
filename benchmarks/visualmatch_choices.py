"""Visual Match runs from their replay: which of the three objects does the agent touch?

A memoryless agent that always touches the same object succeeds in 1/3 of episodes; one
that remembers the colour but never tries one of the three places succeeds in at most 2/3
(the target stands there in a third of episodes). Training success alone cannot tell the
two limits apart. This reads a run's stored steps (vector observations): a touch is a move
into a coloured cell next to the player after which no coloured cell is left in view (the
objects vanish when one is touched; the first room's painted wall blocks and stays, and
the first room's 15 steps are skipped, as its last move leaves the wall behind). Its
place (left, middle, right) follows from the colour and the stream's colour-to-place map
(the instance built with the run's seed + stream index). Every final reward in the
replay must follow a touch found so, or the script stops. Per window of env steps it
reports the episodes begun, the touches, the share of touches on each place, the success
among touches and the best success the places tried allow in expectation (1/3 for each
place with at least 5% of the touches).

    python benchmarks/visualmatch_choices.py benchmarks/runs/visualmatch --every 50000

Env steps are counted over all streams, as in `tmaze_visits.py`; steps evicted from the
replay are missing from their windows. Writes
benchmarks/results/visualmatch_choices_<run name>.json and .csv (or --out).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import RESULTS, run_metadata, write_record  # noqa: E402
from benchmarks.tmaze_visits import by_window, streams, window_args  # noqa: E402
from benchmarks.visualmatch_maps import instance_map  # noqa: E402

PLACES = ("left", "middle", "right")
TRIED = 0.05  # a place with at least this share of a window's touches counts as tried


def touches(stream: dict, places: tuple, final_reward: float) -> list[dict]:
    """One row per touch in a stream: its stream position, the place touched (0-2, the
    index of its colour in ``places``) and whether it paid. Raises ValueError when a
    final reward follows no touch found (the observations are not Visual Match's).

    A replay that has dropped its oldest steps (past `replay_size`) begins a stream inside
    an episode whose start, and maybe its touch, went with them: the steps before the
    stream's first episode start are left out."""
    from env_wrappers.memory_rl import COLOURS, EXPLORE_STEPS, MOVES, PALETTE, VIEW

    vector, reward = stream["vector"], stream["reward"]
    cells = vector.reshape(len(vector), 3, VIEW * VIEW).transpose(0, 2, 1)  # (steps, cells, rgb)
    colour_of = np.full(cells.shape[:2], -1)
    for colour in COLOURS:
        colour_of[np.abs(cells - PALETTE[colour] / 255.0).max(-1) < 1e-3] = colour
    moves = np.array(MOVES)[stream["action"].argmax(-1)]
    centre = VIEW // 2  # the player's cell in its view
    ahead = (centre + moves[:, 0]) * VIEW + centre + moves[:, 1]
    touched = colour_of[np.arange(len(vector)), ahead]
    cleared = ~(colour_of >= 0).any(1)
    # Steps since the episode began: the first room's last move also leaves the colour behind.
    first = stream["is_first"].astype(bool)
    begun = np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))
    late = np.arange(len(first)) - begun >= EXPLORE_STEPS
    whole = np.logical_or.accumulate(first)  # from the stream's first episode start on
    found, paid_at = [], set()
    for t in np.flatnonzero((touched[:-1] >= 0) & cleared[1:] & ~first[1:] & late[:-1] & whole[:-1]):
        paid = bool(abs(reward[t + 1] - final_reward) < 1e-6)
        found.append({"position": int(stream["start"] + t), "place": places.index(touched[t]), "paid": paid})
        paid_at.add(t + 1)
    unexplained = set(np.flatnonzero((np.abs(reward - final_reward) < 1e-6) & whole).tolist()) - paid_at
    if unexplained:
        raise ValueError(f"{len(unexplained)} final rewards (first at stream step {min(unexplained)}) follow "
                         "no touch found: these are not Visual Match's vector observations")
    return found


def windows(per_stream: dict[int, list[dict]], episodes: dict[int, np.ndarray], every: int) -> list[dict]:
    """One row per window of `every` env steps counted over all streams."""
    groups = by_window(per_stream, every)
    begun = {index: len(group) for index, group in by_window(
        {w: [{"position": int(p)} for p in starts] for w, starts in episodes.items()}, every).items()}
    rows = []
    for index in sorted(set(groups) | set(begun)):
        group = groups.get(index, [])
        shares = [sum(t["place"] == p for t in group) / len(group) if group else 0.0 for p in range(3)]
        rows.append({
            "from_step": index * every, "to_step": (index + 1) * every,
            "episodes": begun.get(index, 0), "touches": len(group),
            **{place: round(share, 4) for place, share in zip(PLACES, shares)},
            "success_of_touches": round(sum(t["paid"] for t in group) / len(group), 4) if group else None,
            "best_for_places_tried": round(sum(share >= TRIED for share in shares) / 3, 4),
        })
    return rows


def main(argv=None):
    parser, args = window_args(__doc__, argv, ("config.yaml", "replay/replay.json"))
    from recall2imagine.config import Config
    from recall2imagine.run import env_kwargs

    config = Config.load(args.run / "config.yaml")
    if not config.task.startswith("visualmatch_"):
        parser.error(f"{args.run} trained {config.task!r}; this script reads visualmatch_<L> runs")
    if config.envs.obs not in ("", "vector"):
        parser.error(f"{args.run} trained on envs.obs {config.envs.obs!r}; this script reads vector observations")
    from env_wrappers.memory_rl import FINAL_REWARD

    stored = streams(args.run / "replay")
    try:
        per_stream = {w: touches(s, instance_map(config.task, config.seed + w, **env_kwargs(config)), FINAL_REWARD)
                      for w, s in sorted(stored.items())}
    except ValueError as error:
        raise SystemExit(f"{args.run}: {error}")
    episodes = {w: s["start"] + np.flatnonzero(s["is_first"]) for w, s in stored.items()}
    rows = windows(per_stream, episodes, args.every)
    for row in rows:
        print(row)
    record = {**run_metadata(["command", "date"]), "run": str(args.run), "task": config.task,
              "every": args.every, "streams": len(stored), "tried_share": TRIED, "windows": rows}
    write_record(args.out or RESULTS / f"visualmatch_choices_{args.run.name}", record, rows)
    return rows


if __name__ == "__main__":
    main()
