"""Greedy evaluation of a run's newest checkpoint on many fresh episodes, with 95% intervals.

Training evaluates every `run.eval_every` env steps on `run.eval_eps` episodes (10 in the
memory presets): a success rate of 0.9 in one such evaluation is also what a policy that
succeeds 70% of the time scores now and then (in 15% of evaluations). This script plays
`--episodes` greedy episodes of the run's task from its newest checkpoint, one on each of
as many fresh env instances (seeded from `--seed`, away from the seeds training and its
evaluations use), and reports the mean score and each outcome rate (`success`,
`key_taken`, ...) with its Wilson 95% interval.

    python benchmarks/evaluate.py benchmarks/runs/suite/keytodoor_30 --episodes 200

Writes benchmarks/results/evaluate_<run name>.json and .csv (or --out), with the
checkpoint's env step and the command.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import RESULTS, run_metadata, write_record  # noqa: E402

FIRST_SEED = 70_000  # above training's seed + i and its evaluations' seed + 10,000 + episodes


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate observed over n episodes."""
    if n < 1:
        raise ValueError(f"an interval needs at least one episode, got n={n}")
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def restore_run(run: Path, task_prefix: str = ""):
    """(config, agent, state, counters) of a run directory's newest checkpoint, with JAX set
    up as the run's config says. Raises ValueError naming what is missing, or the run's task
    when it does not start with `task_prefix` (a script that reads one task's runs)."""
    for needed in ("config.yaml", "ckpt"):
        if not (run / needed).exists():
            raise ValueError(f"{run / needed} does not exist: give a run directory that training wrote")
    from env_wrappers import make_vector
    from recall2imagine.agent import Agent
    from recall2imagine.checkpoint import Checkpointer
    from recall2imagine.config import Config
    from recall2imagine.run import env_kwargs, setup_jax

    config = Config.load(run / "config.yaml")
    if not config.task.startswith(task_prefix):
        raise ValueError(f"{run} trained task {config.task!r}; this script reads {task_prefix}<L> runs")
    setup_jax(config)
    env = make_vector(config.task, 1, seed=config.seed, **env_kwargs(config))
    agent = Agent(env.obs_space, env.act_space, config)
    env.close()
    checkpoints = Checkpointer(run / "ckpt")
    try:
        restored = checkpoints.restore(agent.init(config.seed))
    finally:
        checkpoints.close()
    if restored is None:
        raise ValueError(f"{run / 'ckpt'} holds no checkpoint yet")
    state, counters, _ = restored
    return config, agent, state, counters


def run_parser(doc: str, run_help: str, episodes: int, episodes_help: str, out: str,
               first_seed: int | None = FIRST_SEED) -> argparse.ArgumentParser:
    """The arguments of a script that plays a run's checkpoint greedily: the run directory,
    --episodes, --seed of the first fresh instance (default first_seed; none if None) and --out."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("run", type=Path, help=run_help)
    parser.add_argument("--episodes", type=int, default=episodes, help=episodes_help)
    if first_seed is not None:
        parser.add_argument("--seed", type=int, default=first_seed, help="seed of the first instance")
    parser.add_argument("--out", type=Path, default=None, help=f"output stem (default results/{out}_<run>)")
    return parser


def parse_and_restore(parser: argparse.ArgumentParser, argv=None, task_prefix: str = ""):
    """(args, config, agent, state, counters): `run_parser`'s arguments checked and the run
    restored (`restore_run`); a bad value or run exits with the parser's usage message."""
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    try:
        return (args, *restore_run(args.run, task_prefix))
    except ValueError as error:
        parser.error(str(error))


def write_checkpoint_record(script: str, args, argv, config, counters, fields: dict, rows: list,
                            columns=None) -> None:
    """Writes results/<script>_<run name> (or --out): the run, its task, the checkpoint's env
    step, --episodes and --seed, ``fields``, the command and the date; ``rows`` go to the CSV."""
    record = {"run": str(args.run), "task": config.task, "checkpoint_env_step": counters["step"],
              "episodes": args.episodes, "first_instance_seed": args.seed, **fields,
              **run_metadata(["command", "date"], argv=[f"benchmarks/{script}.py",
                                                        *(sys.argv[1:] if argv is None else argv)])}
    write_record(args.out or RESULTS / f"{script}_{args.run.name}", record, rows, columns=columns)


def main(argv=None) -> int:
    parser = run_parser(__doc__, "a run directory that training wrote (config.yaml, ckpt/)", 100,
                        "greedy episodes, one per fresh env instance", "evaluate")
    args, config, agent, state, counters = parse_and_restore(parser, argv)
    from recall2imagine.run import evaluate

    scores = evaluate(agent, state, config, args.episodes, seed=args.seed)
    rows = []
    for name, value in scores.items():
        row = {"metric": name.removeprefix("eval/episode/"), "value": round(value, 4), "episodes": args.episodes}
        if row["metric"] not in ("score", "length"):  # outcome rates: fractions of episodes
            low, high = wilson_interval(value, args.episodes)
            row.update(low_95=round(low, 4), high_95=round(high, 4))
        rows.append(row)
        interval = f"  (95%: {row['low_95']:.2f}-{row['high_95']:.2f})" if "low_95" in row else ""
        print(f"{row['metric']:12s} {row['value']:8.3f}{interval}", flush=True)
    print(f"{config.task} at env step {counters['step']:,}, {args.episodes} greedy episodes")
    write_checkpoint_record("evaluate", args, argv, config, counters, {"metrics": rows}, rows,
                            columns=["metric", "value", "low_95", "high_95", "episodes"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
