"""World-model probe: how many updates until the reward head learns a task's reward rule?

Collects random-policy steps from a task, then trains the world model alone (no actor,
no critic) on uniformly sampled (B, T) windows and prints, every 250 updates, the reward
loss and the sign accuracy of the predicted reward on steps whose reward is not zero
(always predicting the commoner sign scores that sign's share, 0.75 on RepeatPrevious
under random actions). `--rule` replaces the task's reward by a synthetic one with
the same data, to separate what is hard to learn:

    act      +1 if the previous action was 0, else -1 (needs the action only)
    lag<N>   +1 if the previous action equals the card (argmax of the observation's
             first 4 entries) N + 1 steps back, else -1; RepeatPreviousEasy's own rule
             is lag3 with rewards of +-1/48

    python benchmarks/reward_probe.py --updates 3000
    python benchmarks/reward_probe.py --rule act --updates 1500

Results go to benchmarks/results/reward_probe_<rule>.json with the command.
"""

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from env_wrappers import make_vector  # noqa: E402
from recall2imagine.agent import Agent  # noqa: E402
from recall2imagine.config import build_config  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["popgym", "cpu"])
    parser.add_argument("--task", default="gym_popgym:popgym-RepeatPreviousEasy-v0")
    parser.add_argument("--rule", default="task", help="task, act or lag<N>")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=4000, help="random-policy steps per env")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    return parser.parse_args()


def collect(env, steps, keys, act_dim, seed=0):
    """(envs, steps, ...) arrays of random-policy data from a vector env, in replay's layout."""
    envs = env.num_envs
    rng = np.random.default_rng(seed)
    obs = env.reset()
    data = {k: [] for k in keys}
    for _ in range(steps):
        action = rng.integers(0, act_dim, envs)
        for key in keys:
            data[key].append(np.eye(act_dim, dtype=np.float32)[action] if key == "action" else np.asarray(obs[key]))
        obs = env.step(action)
    return {k: np.stack(v, 1) for k, v in data.items()}


def synthetic_reward(data, rule):
    action = data["action"].argmax(-1)
    previous = np.concatenate([np.zeros_like(action[:, :1]), action[:, :-1]], 1)
    if rule == "act":
        return np.where(previous == 0, 1.0, -1.0).astype(np.float32)
    lag = int(rule[3:])
    card = data["vector"][..., :4].argmax(-1)
    past = np.concatenate([np.zeros_like(card[:, :1 + lag]), card[:, :-1 - lag]], 1)
    return np.where(previous == past, 1.0, -1.0).astype(np.float32)


def main():
    args = parse_args()
    overrides = dict((k, [v]) for k, v in (item.split("=", 1) for item in args.set))
    config = build_config(args.presets, {"task": args.task, **overrides})
    env = make_vector(args.task, args.envs, seed=0, parallel=False)
    agent = Agent(env.obs_space, env.act_space, config)
    try:
        data = collect(env, args.steps, agent.batch_keys, agent.act_dim)
    finally:
        env.close()
    if args.rule != "task":
        data["reward"] = synthetic_reward(data, args.rule)
    batch, length = config.batch_size, config.batch_length
    rng = np.random.default_rng(1)

    def sample():
        env = rng.integers(0, args.envs, batch)
        start = rng.integers(0, args.steps - length, batch)
        out = {k: np.stack([v[i, j:j + length] for i, j in zip(env, start)]) for k, v in data.items()}
        out["is_first"] = out["is_first"].astype(bool)
        out["is_first"][:, 0] = True
        return out

    state = agent.init(0)
    params, opt_state = state["params"]["wm"], state["opt"]["wm"]
    optimizer = agent.opts["wm"]

    @jax.jit
    def update(params, opt_state, batch, key):
        (_, (outs, metrics)), grads = jax.value_and_grad(agent.wm.loss, has_aux=True)(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        predicted = agent.wm.head(params, outs, "reward").mean()
        scored = jnp.abs(batch["reward"]) > 1e-6
        agree = (jnp.sign(predicted) == jnp.sign(batch["reward"])) & scored
        metrics["reward/sign_accuracy"] = agree.sum() / jnp.maximum(scored.sum(), 1)
        return optax.apply_updates(params, updates), opt_state, metrics

    start, history, curve = time.time(), [], []
    for i in range(args.updates):
        params, opt_state, metrics = update(params, opt_state, sample(), jax.random.PRNGKey(i))
        history.append({k: float(v) for k, v in metrics.items()})
        if (i + 1) % 250 == 0:
            row = {"updates": i + 1, "seconds": round(time.time() - start, 1)}
            row.update({k: round(float(np.mean([h[k] for h in history[-250:]])), 4)
                        for k in ("loss/reward", "reward/sign_accuracy", "loss/model")})
            curve.append(row)
            print(row, flush=True)
    record = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "task": args.task, "rule": args.rule,
              "presets": args.presets, "overrides": args.set, "batch": [batch, length],
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "jax": jax.__version__, "backend": jax.default_backend(), "machine": platform.machine(),
              "curve": curve}
    out = ROOT / "benchmarks" / "results" / f"reward_probe_{args.rule}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
