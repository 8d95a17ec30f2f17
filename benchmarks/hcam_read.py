"""HCAM's two training reads of memory, timed side by side: dense or gathered.

A training pass can read the top_k chunks of each query densely (every row of the window
scored against every query, rows weighted by their chunk's softmax weight) or by gathering
each query's top_k chunks and reading them as acting does (`recall2imagine.hcam.gathers`
picks one by sequence length). Both give the same outputs and gradients; this script times
the world-model gradient (value and gradient of `WorldModel.loss`, as the train step takes
it) with each, interleaved in one process so that a machine's drift hits both alike, checks
that they agree, and records medians to <--out>.{json,csv} (default
benchmarks/results/hcam_read).

    python benchmarks/hcam_read.py                                  # cpu preset, T = 64 256 1024
    python benchmarks/hcam_read.py --presets cpu tmaze --batch 2 --lengths 64 256 \
        --out benchmarks/results/hcam_read_tmaze
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, key_value, run_metadata, set_overrides, write_record  # noqa: E402
from benchmarks.train_step import ACTIONS, observation_keys, observation_space, synthetic_batch  # noqa: E402
from recall2imagine.agent import Agent  # noqa: E402
from recall2imagine.config import build_config  # noqa: E402
from recall2imagine.hcam import gathers  # noqa: E402
from recall2imagine.world_model import WorldModel  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--steps", type=int, default=10, help="timed calls of each read per length")
    parser.add_argument("--set", nargs="*", default=[], type=key_value, metavar="KEY=VALUE",
                        help="config overrides")
    parser.add_argument("--out", default=str(RESULTS / "hcam_read"), help="record path without suffix")
    return parser.parse_args(argv)


def with_read(wm: WorldModel, read: str) -> WorldModel:
    """A copy of the world model whose HCAM core reads memory with `read` (same params)."""
    clone = copy.copy(wm)
    clone.net = wm.net.clone(core=wm.net.core.clone(read=read))
    return clone


def largest_gap(a, b):
    """Largest difference between two pytrees of arrays over the largest magnitude in a
    (leaves whose true value is zero, such as a key bias's gradient, hold rounding noise)."""
    pairs = [(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    scale = max(float(np.max(np.abs(x))) for x, _ in pairs)
    return max(float(np.max(np.abs(x - y))) for x, y in pairs) / max(scale, 1e-12)


def measure(length, args):
    config = build_config(args.presets, {**set_overrides(args.set), "ssm_type": "hcam",
                                         "batch_size": args.batch, "batch_length": length})
    keys = observation_keys(config)
    agent = Agent(observation_space(keys), gym.spaces.Discrete(ACTIONS), config)
    params = agent.init(0)["params"]["wm"]
    batch = {k: jax.numpy.asarray(v) for k, v in synthetic_batch(args.batch, length, keys).items()
             if k in agent.batch_keys}
    key = jax.random.PRNGKey(0)
    calls, compile_s, values = {}, {}, {}
    for read in ("dense", "gather"):
        wm = with_read(agent.wm, read)
        grad = jax.jit(jax.value_and_grad(lambda p, b, k, wm=wm: wm.loss(p, b, k), has_aux=True))
        start = time.perf_counter()
        (loss, _), grads = jax.block_until_ready(grad(params, batch, key))
        compile_s[read] = time.perf_counter() - start
        values[read] = (loss, grads)
        calls[read] = lambda grad=grad: jax.block_until_ready(grad(params, batch, key))
    times = {read: [] for read in calls}
    for _ in range(args.steps):
        for read, call in calls.items():
            start = time.perf_counter()
            call()
            times[read].append(time.perf_counter() - start)
    hcam = config.hcam
    row = {"batch_length": length, "batch_size": args.batch,
           "dense_s": statistics.median(times["dense"]), "gather_s": statistics.median(times["gather"]),
           "dense_compile_s": compile_s["dense"], "gather_compile_s": compile_s["gather"],
           "auto_gathers": gathers("auto", hcam.top_k, hcam.chunk, length),
           "loss_gap": abs(float(values["dense"][0]) - float(values["gather"][0])),
           "grad_gap": largest_gap(values["dense"][1], values["gather"][1]),
           "steps_timed": args.steps}
    row["dense_over_gather"] = row["dense_s"] / row["gather_s"]
    print(f"T={length:5d} B={args.batch}  world-model grad: dense {row['dense_s'] * 1e3:8.1f} ms, "
          f"gather {row['gather_s'] * 1e3:8.1f} ms (x{row['dense_over_gather']:.2f}); auto "
          f"{'gathers' if row['auto_gathers'] else 'reads densely'}; largest relative gradient gap "
          f"{row['grad_gap']:.1e}", flush=True)
    return row


def main(argv=None):
    args = parse_args(argv)
    rows = [measure(length, args) for length in args.lengths]
    config = build_config(args.presets, {**set_overrides(args.set), "ssm_type": "hcam"})
    record = {**run_metadata(["command", "date", "versions", "backend", "cpu_count", "load_average"],
                             packages=["jax", "jaxlib", "flax"],
                             argv=None if argv is None else ["benchmarks/hcam_read.py", *argv]),
              "presets": args.presets, "overrides": args.set, "hcam": config.hcam.to_dict(), "rssm": config.rssm.to_dict(),
              "results": rows}
    write_record(args.out, record, rows, columns=list(rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
