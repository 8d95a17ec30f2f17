"""What a T-Maze agent believes at the junction: its policy there and, per action, what its
world model and critic predict.

A passive T-Maze episode pays only for the turn at the junction, on its last step. This
script plays `--episodes` episodes of a run's newest checkpoint side by side (fresh instances
seeded from `--seed`), with actions sampled as training collects them, and at the junction
step of the episodes that reach it on time reads, for each of the four actions: the actor's
probability of it (with the uniform mix), the world model's predicted reward of taking it
(also split by whether it is the turn the cue asked for), its predicted continuation, and the
critic's value of the imagined next state. A turn that the world model prices well above
"right" while the actor keeps it at the uniform mix's floor is an actor that cannot follow its
model.

    python benchmarks/tmaze_junction.py benchmarks/runs/suite/tmaze_passive_50_hcam_seed2

Writes benchmarks/results/tmaze_junction_<run name>.json and .csv (or --out): one row per
action, with the checkpoint's env step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.evaluate import parse_and_restore, run_parser, write_checkpoint_record  # noqa: E402

FIRST_SEED = 95_000  # away from training's, its evaluations' and the other scripts' seeds
ACTIONS = ("right", "up", "left", "down")  # env_wrappers.tmaze's moves; up is goal y = +1


def junction_beliefs(agent, state, config, envs: int, seed: int) -> dict:
    """{"on_time": episodes at the junction on their last step, "rows": one per action}."""
    import jax
    import jax.numpy as jnp

    from env_wrappers import make_vector
    from recall2imagine.run import env_kwargs

    wm, behavior = agent.wm, agent.behavior
    params = state["params"]

    @jax.jit
    def observe(carry, obs, key):
        """One acting step that also returns the posterior latent and the policy's probs."""
        obs_key, act_key = jax.random.split(key)
        embed = wm.encode(params["wm"], {k: obs[k] for k in wm.obs_keys})
        carry, latent = wm.obs_step(params["wm"], carry, embed, obs["is_first"], obs_key)
        policy = behavior.policy(params["actor"], latent)
        action = jax.lax.stop_gradient(policy.sample(act_key))
        return {**carry, "action": action}, latent, action, policy.probs

    @jax.jit
    def predict(latent, key):
        """(reward, cont, next value) per action, each (A, N)."""
        def one(action):
            following = wm.img_step(params["wm"], latent, jnp.broadcast_to(action, (envs, 4)), key)
            return (wm.head(params["wm"], following, "reward").mean(),
                    wm.head(params["wm"], following, "cont").mean(),
                    behavior.value(params["critic"], following).mean())
        return jax.vmap(one)(jnp.eye(4))

    length = int(config.task.rsplit("_", 1)[1])  # tmaze_passive_<L>: the junction is x = L
    env = make_vector(config.task, envs, seed=seed, parallel=False, **env_kwargs(config))
    try:
        obs = env.reset()
        carry, key = agent.initial_carry(envs), jax.random.PRNGKey(seed)
        cue = np.asarray(obs["vector"])[:, 1].copy()
        for step in range(length + 1):
            key, sub = jax.random.split(key)
            inputs = {k: np.asarray(obs[k]) for k in (*wm.obs_keys, "is_first")}
            carry, latent, action, probs = observe(carry, inputs, sub)
            if step == length:
                at = inputs["vector"][:, 0] > 0.5  # on the junction's cell on the last step
                reward, cont, value = (np.asarray(x) for x in predict(latent, sub))
                break
            obs = env.step(agent.env_action(np.asarray(action)))
    finally:
        env.close()
    probs = np.asarray(probs)
    rows = []
    for index, name in enumerate(ACTIONS):
        asked = (cue[at] > 0) if name == "up" else (cue[at] < 0) if name == "down" else np.zeros(at.sum(), bool)
        mean = lambda x, where=slice(None): round(float(x[at][where].mean()), 4) if x[at][where].size else None
        rows.append({"action": name, "policy": mean(probs[:, index]), "reward": mean(reward[index]),
                     "reward_cued_turn": mean(reward[index], asked), "reward_other": mean(reward[index], ~asked),
                     "cont": mean(cont[index]), "next_value": mean(value[index])})
    return {"on_time": int(at.sum()), "rows": rows}


def main(argv=None) -> int:
    parser = run_parser(__doc__, "a T-Maze run directory (config.yaml, ckpt/)", 64,
                        "episodes played side by side, one per fresh instance", "tmaze_junction", FIRST_SEED)
    args, config, agent, state, counters = parse_and_restore(parser, argv, task_prefix="tmaze_passive_")
    beliefs = junction_beliefs(agent, state, config, args.episodes, args.seed)
    print(f"{config.task} at env step {counters['step']:,}: {beliefs['on_time']} of {args.episodes} "
          "episodes at the junction on time")
    for row in beliefs["rows"]:
        print(f"{row['action']:6s} policy {row['policy']}  reward {row['reward']} (cued turn "
              f"{row['reward_cued_turn']}, other {row['reward_other']})  cont {row['cont']}  "
              f"next value {row['next_value']}", flush=True)
    write_checkpoint_record("tmaze_junction", args, argv, config, counters, beliefs, beliefs["rows"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
