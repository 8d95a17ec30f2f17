"""Train-step wall time of the R2I agent: S5 world model (`mimo`) vs the GRU RSSM (`gru`).

Same widths for both (the `cpu` preset sizes by default), a synthetic vector-observation
batch, sequence lengths 64, 256 and 1024. For each it times the full update (world model
+ actor-critic, `Agent.train`) and the world-model gradient alone, reports medians, and
records the gru/mimo ratio with the exact command, date, versions and machine in
benchmarks/results/train_step.{json,csv}.

    python benchmarks/train_step.py            # lengths 64 256 1024, 5 timed steps each
    python benchmarks/train_step.py --quick    # lengths 64 256, 2 timed steps
"""

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax  # noqa: E402
import gymnasium as gym  # noqa: E402
import jax  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from recall2imagine.agent import Agent  # noqa: E402
from recall2imagine.config import build_config  # noqa: E402

OBS_DIM, ACTIONS = 16, 4


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="lengths 64 256, 2 timed steps")
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    parser.add_argument("--presets", nargs="+", default=["cpu"],
                        help="config presets fixing the widths (same for mimo and gru)")
    parser.add_argument("--scan", default="auto", choices=["auto", "parallel", "sequential"],
                        help="ssm.parallel for mimo")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_step"))
    args = parser.parse_args()
    args.lengths = args.lengths or ([64, 256] if args.quick else [64, 256, 1024])
    args.steps = args.steps or (2 if args.quick else 5)
    return args


def synthetic_batch(batch, length, seed=0):
    rng = np.random.default_rng(seed)
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    is_first[rng.random((batch, length)) < 1 / 200] = True  # a few episode starts inside
    return {"vector": rng.normal(size=(batch, length, OBS_DIM)).astype(np.float32),
            "action": np.eye(ACTIONS, dtype=np.float32)[rng.integers(0, ACTIONS, (batch, length))],
            "reward": rng.normal(size=(batch, length)).astype(np.float32),
            "is_first": is_first, "is_last": np.zeros((batch, length), bool),
            "is_terminal": np.zeros((batch, length), bool)}


def timed(fn, steps):
    """(first call seconds incl. compile, [seconds of each later call])."""
    start = time.perf_counter()
    jax.block_until_ready(fn(0))
    first = time.perf_counter() - start
    times = []
    for i in range(1, steps + 1):
        start = time.perf_counter()
        jax.block_until_ready(fn(i))
        times.append(time.perf_counter() - start)
    return first, times


def measure(ssm_type, length, args):
    config = build_config(args.presets, {"ssm_type": ssm_type, "ssm.parallel": args.scan,
                                         "batch_size": args.batch, "batch_length": length})
    obs_space = gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)})
    agent = Agent(obs_space, gym.spaces.Discrete(ACTIONS), config)
    state = agent.init(0)
    batch = synthetic_batch(args.batch, length)
    arrays = {k: jax.numpy.asarray(batch[k]) for k in agent.batch_keys}
    wm_grad = jax.jit(jax.grad(lambda p, b, k: agent.wm.loss(p, b, k)[0]))
    wm_first, wm_times = timed(
        lambda i: wm_grad(state["params"]["wm"], arrays, jax.random.PRNGKey(i)), args.steps)
    first, times = timed(lambda i: agent.train(state, batch, jax.random.PRNGKey(i)), args.steps)
    row = {"ssm_type": ssm_type, "batch_length": length, "batch_size": args.batch,
           "train_step_s": statistics.median(times), "train_step_min_s": min(times),
           "train_compile_s": first, "wm_grad_s": statistics.median(wm_times),
           "wm_compile_s": wm_first, "steps_timed": args.steps}
    print(f"{ssm_type:5s} T={length:5d}  train {row['train_step_s'] * 1e3:9.1f} ms  "
          f"world-model grad {row['wm_grad_s'] * 1e3:9.1f} ms  (compile {first:.1f} s)",
          flush=True)
    return row


def main():
    args = parse_args()
    rows = [measure(t, length, args) for length in args.lengths for t in ("mimo", "gru")]
    ratios = []
    for length in args.lengths:
        mimo, gru = [next(r for r in rows if r["ssm_type"] == t and r["batch_length"] == length)
                     for t in ("mimo", "gru")]
        ratios.append({"batch_length": length,
                       "train_gru_over_mimo": gru["train_step_s"] / mimo["train_step_s"],
                       "wm_grad_gru_over_mimo": gru["wm_grad_s"] / mimo["wm_grad_s"]})
        print(f"T={length:5d}  gru/mimo: train step x{ratios[-1]['train_gru_over_mimo']:.2f}, "
              f"world-model grad x{ratios[-1]['wm_grad_gru_over_mimo']:.2f}")
    config = build_config(args.presets)
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                     "optax": optax.__version__, "numpy": np.__version__},
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
        "processor": platform.processor() or platform.machine(),
        "widths": {"presets": args.presets, "rssm": config.rssm.to_dict(),
                   "ssm.n_layers": config.ssm.n_layers, "ssm.parallel": args.scan,
                   "mlp": f"{config.actor.layers} x {config.actor.units}",
                   "imag_horizon": config.imag_horizon, "obs": f"vector {OBS_DIM}",
                   "actions": f"discrete {ACTIONS}"},
        "results": rows, "ratios": ratios}
    write_record(args.out, record, rows)


def write_record(out, record, rows):
    """Writes `record` as <out>.json and its result `rows` as <out>.csv."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
