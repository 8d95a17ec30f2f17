"""Greedy success of a Visual Match run's newest checkpoint on each colour-to-column map.

Visual Match fixes the colours of its three object columns per env instance (map
`seed % 6`), so training sees only the maps of its `envs.amount` instances (all six from
six on) and every greedy evaluation plays a fresh instance. This script plays `--episodes` greedy
episodes on one instance of each of the 6 maps and says which maps training saw: a policy
that remembers the colour but learned where each colour stands only on the training maps
succeeds there and fails elsewhere.

    python benchmarks/visualmatch_maps.py benchmarks/runs/visualmatch --episodes 20

Writes benchmarks/results/visualmatch_maps_<run name>.json and .csv (or --out), with the
checkpoint's env step and the command.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import RESULTS, run_metadata, write_record  # noqa: E402
from benchmarks.evaluate import parse_and_restore, run_parser  # noqa: E402

FIRST_SEED = 50_000  # instance seeds searched from here, away from training (seed + i) and evaluation ones


def colour_names(colours) -> str:
    from env_wrappers.memory_rl import BLUE, GREEN, RED

    names = {RED: "red", GREEN: "green", BLUE: "blue"}
    return "-".join(names[c] for c in colours)


def instance_map(task: str, seed: int, **kwargs) -> tuple:
    """The colours of the object columns (left to right) of `task`'s instance with `seed`."""
    from env_wrappers import make

    env = make(task, seed, **kwargs)
    try:
        return tuple(env.unwrapped.object_colours)
    finally:
        env.close()


def seeds_per_map(task: str, **kwargs) -> dict:
    """One instance seed for each of the 6 maps: {colours: seed}."""
    from env_wrappers.memory_rl import COLOURS

    wanted, found = set(itertools.permutations(COLOURS)), {}
    seed = FIRST_SEED
    while len(found) < len(wanted):
        found.setdefault(instance_map(task, seed, **kwargs), seed)
        seed += 1
        if seed > FIRST_SEED + 10_000:
            raise RuntimeError(f"no instance seed in {FIRST_SEED}..{seed} gives maps {sorted(wanted - set(found))}")
    return found


def main(argv=None) -> int:
    parser = run_parser(__doc__, "a Visual Match run directory (config.yaml, ckpt/)", 20,
                        "greedy episodes per map", "visualmatch_maps", first_seed=None)
    args, config, agent, state, counters = parse_and_restore(parser, argv, task_prefix="visualmatch_")
    from recall2imagine.run import env_kwargs, evaluate
    kwargs = env_kwargs(config)

    trained = {instance_map(config.task, config.seed + i, **kwargs) for i in range(config.envs.amount)}
    rows = []
    for colours, seed in sorted(seeds_per_map(config.task, **kwargs).items(), key=lambda item: item[1]):
        scores = evaluate(agent, state, config, args.episodes, seed=seed, envs=1)  # one map: one instance
        rows.append({"map": colour_names(colours), "trained_on": colours in trained, "instance_seed": seed,
                     "episodes": args.episodes, "success": round(scores["eval/episode/success"], 4),
                     "mean_score": round(scores["eval/episode/score"], 4)})
        print(f"{rows[-1]['map']:16s} {'trained on' if rows[-1]['trained_on'] else 'unseen':10s} "
              f"success {rows[-1]['success']:.2f}  score {rows[-1]['mean_score']:.2f}", flush=True)
    record = {"run": str(args.run), "task": config.task, "checkpoint_env_step": counters["step"],
              "training_instances": config.envs.amount, "maps": rows,
              **run_metadata(["command", "date"], argv=["benchmarks/visualmatch_maps.py",
                                                        *(sys.argv[1:] if argv is None else argv)])}
    write_record(args.out or RESULTS / f"visualmatch_maps_{args.run.name}", record, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
