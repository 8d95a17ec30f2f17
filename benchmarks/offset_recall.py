"""How many updates each sequence core needs to recall the input seen k steps back.

POPGym's RepeatPrevious asks, at every step, for the suit of the card dealt k = 4 steps
earlier (RepeatFirst: the first card of the episode). Inside the agent only the reward loss
teaches a core that rule, mixed with everything else the world model learns; here the core
learns it alone, supervised, at the preset's widths, windows and optimiser:

    one-hot suit (4) -> Dense(rssm.units) -> core -> Dense(4): the suit k steps back

Episodes of `--episode` steps (RepeatPreviousEasy: 52 cards) lie end to end in windows of
`batch_length` steps with random phases, and a window's first step is an episode start, as
the agent's replay gives them. Steps fewer than k into their episode are not scored. Every
`--every` updates the accuracy on a fresh batch is recorded; the record says at which update
each core first reached `--target`.

    python benchmarks/offset_recall.py --presets popgym popgym_cpu --offsets 4 --updates 4000

The same optimiser as the world model's (`model_opt`, `ssm_opt` for S5's parameters),
`--set KEY=VALUE` overrides on top of the presets (all cores), `--cores` picks them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.common import RESULTS, key_value, run_metadata, set_overrides, write_record  # noqa: E402
from recall2imagine.config import build_config  # noqa: E402
from recall2imagine.cores import KINDS  # noqa: E402
from recall2imagine.optim import make_optimizer  # noqa: E402
from recall2imagine.world_model import build_sequence_core  # noqa: E402

SUITS = 4


def batch(rng: np.random.Generator, size: int, length: int, episode: int):
    """Suits (T, B) int, resets (T, B) bool and each step's index in its episode (T, B): episodes
    of `episode` steps end to end at a random phase per row; the window's first step starts one
    (the part of an episode before the window is unseen)."""
    suits = rng.integers(0, SUITS, (length, size))
    t = np.arange(length)[:, None]
    phase = rng.integers(0, episode, size)[None]
    first_start = (episode - phase) % episode  # the first whole episode's start in the window
    estep = np.where(t < first_start, t, (t + phase) % episode)
    return suits, estep == 0, estep


def targets(suits, estep, offset: int, first: bool):
    """The suit to recall at each step (`offset` steps back, or the episode's first with `first`)
    and whether that step is scored (the suit lies in the step's episode)."""
    length = suits.shape[0]
    if first:
        start = np.arange(length)[:, None] - estep
        return np.take_along_axis(suits, start, 0), estep >= 1
    back = np.clip(np.arange(length)[:, None] - offset, 0, None)
    return np.take_along_axis(suits, np.broadcast_to(back, suits.shape), 0), estep >= offset


def answers(rule: str) -> int:
    """How many answers the rule's head chooses from: a suit, or match / no match."""
    return 2 if rule == "match" else SUITS


def match_actions(rng: np.random.Generator, recalled):
    """The match rule's actions and answers: the recalled suit half of the time, another suit
    otherwise; the answer (int 0/1) says whether the action is the recalled suit."""
    other = (recalled + rng.integers(1, SUITS, recalled.shape)) % SUITS
    action = np.where(rng.random(recalled.shape) < 0.5, recalled, other)
    return action, (action == recalled).astype(np.int32)


class Recaller(nn.Module):
    core: nn.Module
    units: int
    parallel: bool
    classes: int

    @nn.compact
    def __call__(self, x, reset):
        u = nn.Dense(self.units)(x)
        if self.parallel:
            y, _ = self.core(u, reset, None)
        else:
            scan = nn.scan(lambda core, carry, inputs: core.step(inputs[0], inputs[1], carry),
                           variable_broadcast="params", split_rngs={"params": False})
            _, y = scan(self.core, self.core.initial_state(u.shape[1:2]), (u, reset))
        return nn.Dense(self.classes)(y)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["popgym", "popgym_cpu"])
    parser.add_argument("--cores", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--offsets", nargs="+", type=int, default=[4],
                        help="steps back to recall; 0 means the episode's first input (RepeatFirst)")
    parser.add_argument("--rule", choices=["recall", "match"], default="recall",
                        help="recall: name the suit k steps back; match: say whether the step's action "
                             "(the suit k back half of the time) is that suit, the reward rule's form")
    parser.add_argument("--episode", type=int, default=52, help="episode length (RepeatPreviousEasy: 52)")
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--stop", action="store_true", help="stop each core at its first accuracy >= target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", type=key_value, default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(RESULTS / "offset_recall"))
    return parser.parse_args(argv)


def run(config, core_name: str, offset: int, args) -> dict:
    core = build_sequence_core(config, jnp.float32)
    match = args.rule == "match"
    model = Recaller(core, config["rssm.units"], KINDS[core_name].parallel, answers(args.rule))
    rng = np.random.default_rng(args.seed)
    size, length = config["batch_size"], config["batch_length"]
    first = offset == 0

    def data():
        suits, reset, estep = batch(rng, size, length, args.episode)
        target, mask = targets(suits, estep, offset, first)
        x = jax.nn.one_hot(suits, SUITS)
        if match:
            action, target = match_actions(rng, target)
            x = jnp.concatenate([x, jax.nn.one_hot(action, SUITS)], -1)
        return x, jnp.asarray(reset), jnp.asarray(target), jnp.asarray(mask, jnp.float32)

    x, reset, _, _ = data()
    params = model.init(jax.random.key(args.seed), x, reset)
    optimizer = make_optimizer(config.model_opt, config.ssm_opt)
    opt_state = optimizer.init(params)

    def loss_fn(params, x, reset, target, mask):
        logits = model.apply(params, x, reset)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, target)
        correct = (logits.argmax(-1) == target).astype(jnp.float32)
        return (loss * mask).sum() / mask.sum(), (correct * mask).sum() / mask.sum()

    @jax.jit
    def update(params, opt_state, *batch_):
        (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *batch_)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy

    evaluate = jax.jit(loss_fn)
    curve, reached, start = [], None, time.perf_counter()
    for i in range(1, args.updates + 1):
        params, opt_state, loss, _ = update(params, opt_state, *data())
        if i % args.every == 0:
            loss, accuracy = (float(v) for v in evaluate(params, *data()))
            curve.append({"updates": i, "loss": round(loss, 4), "accuracy": round(accuracy, 4)})
            print(f"  {core_name:5s} offset {offset}: {i:6d} updates, loss {loss:.3f}, accuracy {accuracy:.3f}",
                  flush=True)
            if reached is None and accuracy >= args.target:
                reached = i
                if args.stop:
                    break
    return {"core": core_name, "offset": offset, "first": first, "rule": args.rule, "updates_to_target": reached,
            "final_accuracy": curve[-1]["accuracy"] if curve else None,
            "seconds": round(time.perf_counter() - start, 1), "curve": curve}


def main(argv=None) -> int:
    args = parse_args(argv)
    meta = run_metadata(["command", "date", "versions", "cpu_count", "load_average"], packages=["python", "jax"])
    results = []
    for core_name in args.cores:
        config = build_config(args.presets, {**set_overrides(args.set), "ssm_type": [core_name]})
        for offset in args.offsets:
            results.append(run(config, core_name, offset, args))
    chance = 1.0 / answers(args.rule)
    record = {"meta": meta, "presets": args.presets, "set": args.set, "rule": args.rule, "episode": args.episode,
              "target": args.target, "chance": chance, "results": results}
    rows = [{k: v for k, v in r.items() if k != "curve"} for r in results]
    for row in rows:
        print(f"{row['core']:5s} offset {row['offset']}: accuracy {row['final_accuracy']} "
              f"(chance {chance}); >= {args.target} at {row['updates_to_target']} updates, {row['seconds']} s")
    write_record(args.out, record, rows, comments=[meta["command"], meta["date"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
