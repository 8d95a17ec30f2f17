"""Train-step wall time of the R2I agent per sequence core: S5 (`mimo`), GRU RSSM (`gru`), HCAM (`hcam`).

Same widths for all (the `cpu` preset sizes by default), a synthetic vector-observation
batch, sequence lengths 64, 256 and 1024. For each it times the full update (world model
+ actor-critic, `Agent.train`) and the world-model gradient alone, reports medians, and
records each core's time over mimo's with the exact command, date, versions and machine in
benchmarks/results/train_step.{json,csv}.

    python benchmarks/train_step.py            # lengths 64 256 1024, 5 timed steps each
    python benchmarks/train_step.py --quick    # lengths 64 256, 2 timed steps
    python benchmarks/train_step.py --cores mimo gru   # a subset of the cores
    python benchmarks/train_step.py --set hcam.width=64 hcam.heads=2   # config overrides
    python benchmarks/train_step.py --compile-only   # compile times alone, nothing run
"""

import argparse
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, key_value, run_metadata, set_overrides, timed, write_record  # noqa: E402
from recall2imagine.agent import Agent, rows_per_update  # noqa: E402
from recall2imagine.config import build_config  # noqa: E402

OBS_DIM, ACTIONS = 16, 4
IMAGE = (64, 64, 3)  # Memory Maze's frames, for presets whose encoder reads only images


def observation_keys(config):
    """`vector`, or `image` where the presets' encoder reads images and no vector (mmaze)."""
    reads = lambda keys, name: re.match(keys, name) is not None  # noqa: E731
    if reads(config.encoder.mlp_keys, "vector"):
        return ["vector"]
    if reads(config.encoder.cnn_keys, "image"):
        return ["image"]
    raise SystemExit(f"error: presets {config.encoder.to_dict()} read neither 'vector' nor 'image'")


def observation_space(keys, obs_dim=OBS_DIM):
    """A Dict space of `keys`: `vector` (obs_dim floats) and/or `image` (IMAGE uint8)."""
    spaces = {"vector": gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
              "image": gym.spaces.Box(0, 255, IMAGE, np.uint8)}
    return gym.spaces.Dict({key: spaces[key] for key in keys})


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="lengths 64 256, 2 timed steps")
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rows", type=int, default=None,
                        help="at most this many rows (batch x length) per batch: fewer sequences at long lengths")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    parser.add_argument("--presets", nargs="+", default=["cpu"],
                        help="config presets fixing the widths (same for mimo and gru)")
    parser.add_argument("--scan", default="auto", choices=["auto", "parallel", "sequential"],
                        help="ssm.scan for mimo")
    parser.add_argument("--cores", nargs="+", default=["mimo", "gru", "hcam"],
                        choices=["mimo", "gru", "hcam"], help="ssm_type values to time (mimo first)")
    parser.add_argument("--set", nargs="*", default=[], type=key_value, metavar="KEY=VALUE",
                        help="config overrides on top of the presets (all cores)")
    parser.add_argument("--at-update", type=int, default=0, metavar="N",
                        help="the state's update count: past expl.until's the step leaves the "
                             "exploration ensemble out, as a run's does from then on")
    parser.add_argument("--compile-only", action="store_true",
                        help="compile both steps ahead of time and run neither: records compile "
                             "times and fills JAX_COMPILATION_CACHE_DIR, using no device memory "
                             "beyond the arguments (gpu_check.sh's warm-up beside other jobs)")
    parser.add_argument("--out", default=str(RESULTS / "train_step"))
    args = parser.parse_args()
    args.lengths = args.lengths or ([64, 256] if args.quick else [64, 256, 1024])
    args.steps = args.steps or (2 if args.quick else 5)
    return args


def synthetic_batch(batch, length, keys=("vector",), seed=0):
    rng = np.random.default_rng(seed)
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    is_first[rng.random((batch, length)) < 1 / 200] = True  # a few episode starts inside
    obs = {"vector": lambda: rng.normal(size=(batch, length, OBS_DIM)).astype(np.float32),
           "image": lambda: rng.integers(0, 256, (batch, length, *IMAGE), dtype=np.uint8)}
    return {**{key: obs[key]() for key in keys},
            "action": np.eye(ACTIONS, dtype=np.float32)[rng.integers(0, ACTIONS, (batch, length))],
            "reward": rng.normal(size=(batch, length)).astype(np.float32),
            "is_first": is_first, "is_last": np.zeros((batch, length), bool),
            "is_terminal": np.zeros((batch, length), bool)}


def batch_size(length, args):
    """--batch, cut to --rows // length sequences (at least one) where --rows is given."""
    return args.batch if args.rows is None else max(1, min(args.batch, args.rows // length))


def measure(ssm_type, length, args):
    batch_count = batch_size(length, args)
    config = build_config(args.presets, {**set_overrides(args.set), "ssm_type": ssm_type, "ssm.scan": args.scan,
                                         "batch_size": batch_count, "batch_length": length})
    keys = observation_keys(config)
    agent = Agent(observation_space(keys), gym.spaces.Discrete(ACTIONS), config)
    state = agent.init(0)
    state["step"] = jax.device_put(np.int32(args.at_update), state["step"].sharding)
    batch = synthetic_batch(rows_per_update(config), length, keys)  # as a run replays them
    arrays = {k: jax.numpy.asarray(batch[k][:batch_count]) for k in agent.batch_keys}  # one update's rows
    wm_grad = jax.jit(jax.grad(lambda p, b, k: agent.wm.loss(p, b, k)[0]))
    if args.compile_only:
        first, wm_first = compile_times(agent, wm_grad, state, batch, arrays)
        print(f"{ssm_type:5s} T={length:5d} B={batch_count}  compiled: train {first:.1f} s, "
              f"world-model grad {wm_first:.1f} s (nothing run)", flush=True)
        return {"ssm_type": ssm_type, "batch_length": length, "batch_size": batch_count,
                "train_compile_s": first, "wm_compile_s": wm_first, "compile_only": True}
    wm_first, wm_times = timed(
        lambda i: wm_grad(state["params"]["wm"], arrays, jax.random.PRNGKey(i)), args.steps)
    first, times = timed(lambda i: agent.train(state, batch, jax.random.PRNGKey(i)), args.steps)
    row = {"ssm_type": ssm_type, "batch_length": length, "batch_size": batch_count,
           "at_update": args.at_update, "exploring": agent.exploring(state),
           "train_step_s": statistics.median(times), "train_step_min_s": min(times),
           "train_compile_s": first, "wm_grad_s": statistics.median(wm_times),
           "wm_compile_s": wm_first, "steps_timed": args.steps}
    print(f"{ssm_type:5s} T={length:5d} B={batch_count}  train {row['train_step_s'] * 1e3:9.1f} ms  "
          f"world-model grad {row['wm_grad_s'] * 1e3:9.1f} ms  (compile {first:.1f} s)",
          flush=True)
    return row


def compile_times(agent, wm_grad, state, batch, arrays):
    """Seconds to compile the train step and the world-model gradient for these shapes,
    running neither."""
    key = jax.random.PRNGKey(0)
    first, _ = timed(lambda i: agent.lower_train(state, batch, key).compile(), 0)
    wm_first, _ = timed(lambda i: wm_grad.lower(state["params"]["wm"], arrays, key).compile(), 0)
    return first, wm_first


def measure_or_record(ssm_type, length, args):
    """`measure`, or a row naming the error where building or compiling the step fails (a
    compiler's refusal on one backend, memory), so that one setting loses no other."""
    try:
        return measure(ssm_type, length, args)
    except Exception as error:  # noqa: BLE001 - recorded and reported by the exit status
        first_line = (str(error).strip().splitlines() or [""])[0]
        message = f"{type(error).__name__}: {first_line}"
        print(f"{ssm_type:5s} T={length:5d}  FAILED  {message}", flush=True)
        return {"ssm_type": ssm_type, "batch_length": length, "batch_size": batch_size(length, args),
                "error": message}


def main():
    args = parse_args()
    rows = [measure_or_record(t, length, args) for length in args.lengths for t in args.cores]
    failed = [r for r in rows if "error" in r]
    ratios = []
    for length in args.lengths:
        row = {r["ssm_type"]: r for r in rows if r["batch_length"] == length and "train_step_s" in r}
        if "mimo" not in row:
            continue
        ratio = {"batch_length": length}
        for core in (c for c in args.cores if c != "mimo" and c in row):
            ratio[f"train_{core}_over_mimo"] = row[core]["train_step_s"] / row["mimo"]["train_step_s"]
            ratio[f"wm_grad_{core}_over_mimo"] = row[core]["wm_grad_s"] / row["mimo"]["wm_grad_s"]
            print(f"T={length:5d}  {core}/mimo: train step x{ratio[f'train_{core}_over_mimo']:.2f}, "
                  f"world-model grad x{ratio[f'wm_grad_{core}_over_mimo']:.2f}")
        ratios.append(ratio)
    config = build_config(args.presets, set_overrides(args.set))
    record = {
        **agent_metadata(["python", "jax", "jaxlib", "flax", "optax", "numpy"], devices=True),
        "widths": widths(config, args.presets, observation_space(observation_keys(config)), **{"ssm.scan": args.scan},
                         hcam=config.hcam.to_dict(), overrides=args.set),
        "results": rows, "ratios": ratios}
    columns = list(dict.fromkeys(key for r in rows for key in r))
    write_record(args.out, record, rows, columns=columns)
    if failed:
        print(f"error: {len(failed)} of {len(rows)} settings failed (recorded with their error)", file=sys.stderr)
        return 1
    return 0


def agent_metadata(packages, devices=False):
    """The metadata of an agent train-step record (this script's and imag_starts.py's)."""
    names = ["command", "date", "versions", "backend", *(["devices"] if devices else []),
             "cpu_count", "load_average", "processor"]
    return run_metadata(names, packages=packages)


def widths(config, presets, obs_space, **settings):
    """The sizes a train-step time depends on (and `settings`), as recorded next to it."""
    return {"presets": presets, "rssm": config.rssm.to_dict(), "ssm.n_layers": config.ssm.n_layers,
            **settings, "mlp": f"{config.actor.layers} x {config.actor.units}",
            "imag_horizon": config.imag_horizon, "obs": {key: list(space.shape) for key, space in obs_space.spaces.items()},
            "actions": f"discrete {ACTIONS}"}


if __name__ == "__main__":
    sys.exit(main())
