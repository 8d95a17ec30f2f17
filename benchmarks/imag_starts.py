"""Train-step wall time vs `imag_starts`, the fraction of posterior states that start imagination.

R2I and DreamerV3 imagine `imag_horizon` steps from every one of the B*T posterior
states of a batch; on a CPU that rollout is most of an update. This times the full
update (`Agent.train`, median of timed steps after one compile) at the widths of the
given presets for each fraction, and records the speed-up over 1.0 with the exact
command, date, versions and machine in benchmarks/results/imag_starts.{json,csv}.

    python benchmarks/imag_starts.py                          # cpu tmaze widths, 1 .5 .25 .125
    python benchmarks/imag_starts.py --presets popgym cpu --obs-dim 4
"""

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, timed, write_record  # noqa: E402
from benchmarks.train_step import ACTIONS, agent_metadata, observation_space, synthetic_batch, widths  # noqa: E402
from recall2imagine.agent import Agent, rows_per_update  # noqa: E402
from recall2imagine.config import build_config  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "tmaze"], help="config presets fixing the widths")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.125])
    parser.add_argument("--obs-dim", type=int, default=2, help="vector observation width")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per fraction")
    parser.add_argument("--out", default=str(RESULTS / "imag_starts"))
    return parser.parse_args()


def measure(fraction, args):
    config = build_config(args.presets, {"imag_starts": fraction})
    agent = Agent(observation_space(["vector"], args.obs_dim), gym.spaces.Discrete(ACTIONS), config)
    state = agent.init(0)
    batch = synthetic_batch(rows_per_update(config), config.batch_length)  # as a run replays them
    batch["vector"] = np.resize(batch["vector"], batch["vector"].shape[:2] + (args.obs_dim,))
    first, times = timed(lambda i: agent.train(state, batch, jax.random.PRNGKey(i))[1], args.steps)
    starts = max(1, round(fraction * config.batch_size * config.batch_length))
    row = {"imag_starts": fraction, "starts": starts, "batch_size": config.batch_size,
           "batch_length": config.batch_length, "train_step_s": statistics.median(times),
           "train_step_min_s": min(times), "compile_s": first, "steps_timed": args.steps}
    print(f"imag_starts {fraction:5.3f} ({starts:5d} starts)  train step {row['train_step_s'] * 1e3:8.1f} ms  "
          f"(compile {first:.1f} s)", flush=True)
    return row, config


def main():
    args = parse_args()
    rows = []
    for fraction in args.fractions:
        row, config = measure(fraction, args)
        rows.append(row)
    full = next((r for r in rows if r["imag_starts"] == 1.0), None)
    for row in rows:
        row["speedup_vs_all"] = full["train_step_s"] / row["train_step_s"] if full else None
    record = {**agent_metadata(["python", "jax", "numpy"]),
              "widths": widths(config, args.presets, observation_space(["vector"], args.obs_dim)), "results": rows}
    write_record(args.out, record, rows)


if __name__ == "__main__":
    main()
