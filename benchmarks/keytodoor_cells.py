"""Where a Key-to-Door policy looks for the key: greedy key taking per key cell and start cell.

The key lies in 1 of 10 cells of the key room's top two rows; the player starts in 1 of 10
cells of its bottom two rows, from where the 5x5 view does not reach row 1, and sees the
whole top area from the gap in the middle wall (row 3). A policy that reads the key's place
from its view takes it from every cell; one that walks a fixed route takes it only where the
route passes. This script plays `--episodes` greedy episodes of a Key-to-Door run's newest
checkpoint (instance seeds from `--seed`, one episode each) and reports, per key cell and per
start cell, the share of episodes that took the key, where the player stood on the key
room's last step, and how many episodes took the same first moves as the most common route
from their start cell whatever the key's place.

It also reads the critic: its value of the state on the first step of the apple room and of
the door room, averaged over the episodes that took the key and over those that did not.
Only the remembered key tells the two apart there (the indicator shows for one step, in the
key room), and the door pays `final_reward` (5) about 40 steps later, so a critic that
knows the key values it near 5 x 0.997^40 = 4.4 higher in the apple room; one that does not
gives the actor no reason to go to a key off its route.

    python benchmarks/keytodoor_cells.py benchmarks/runs/suite/keytodoor_30 --episodes 200

Writes benchmarks/results/keytodoor_cells_<run name>.json and .csv (or --out): one row per
key cell, the start cells and end cells in the JSON, with the checkpoint's env step.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.evaluate import parse_and_restore, run_parser, write_checkpoint_record  # noqa: E402

FIRST_SEED = 90_000  # away from training's, its evaluations' and evaluate.py's instance seeds
ROUTE_MOVES = 4  # moves compared between episodes: start row to the top area


def play(agent, state, config, seed: int, value=None) -> dict:
    """One greedy episode on a fresh instance: {"key", "start", "end" (cells, room
    coordinates; end: where the player stood on the key room's last step), "taken",
    "step_taken" (the move that took it, or None), "moves" (the key room's actions),
    "success", "values"}. With `value` (carry -> the critic's value of the state the
    carry holds), "values" maps each later room (1: apples, 2: door) to the value on its
    first observation; else it is empty."""
    import jax

    from env_wrappers import make
    from env_wrappers.memory_rl import KEY
    from recall2imagine.run import env_kwargs

    env = make(config.task, seed, **env_kwargs(config))
    game = env.unwrapped
    obs, _ = env.reset(seed=seed)
    key_cell = tuple(int(x) for x in np.argwhere(game.room == KEY)[0])
    start, moves, taken_at, end = game.player, [], None, game.player
    carry, key = agent.initial_carry(1), jax.random.PRNGKey(seed)
    first, info, done, values = True, {}, False, {}
    while not done:
        inputs = {k: np.asarray(v)[None] for k, v in obs.items()}
        inputs["is_first"] = np.array([first])
        key, sub = jax.random.split(key)
        action, carry = agent.policy(state, carry, inputs, sub, mode="eval")
        if value is not None and game.phase >= 1 and game.phase not in values:
            values[game.phase] = float(value(carry))  # the carry now holds this room's first step
        move = int(agent.env_action(np.asarray(action))[0])
        in_key_room = game.phase == 0
        obs, _, terminated, truncated, info = env.step(move)
        done, first = terminated or truncated, False
        if in_key_room:
            moves.append(move)
            if taken_at is None and game.has_key:
                taken_at = len(moves)
            if game.phase == 0:  # the move that ends the room shows the next one
                end = game.player
    env.close()
    return {"key": key_cell, "start": start, "end": end, "taken": bool(info["key_taken"]), "step_taken": taken_at,
            "moves": moves, "success": bool(info["success"]), "values": values}


def critic_value(agent, state):
    """carry -> the critic's value (a float) of the state in a policy carry of one env."""
    import jax

    names = agent.behavior.critic_inputs
    if "deter" in names:
        raise ValueError(f"the critic reads {names}; a policy carry holds stoch and the core, not deter")
    params = state["params"]["critic"]
    value = jax.jit(lambda carry: agent.behavior.value(params, carry).mean()[0])
    return lambda carry: value({"core": carry["core"], "stoch": carry["stoch"]})


def summarise(episodes: list) -> dict:
    """Rows per key cell and per start cell, the end cells, and the fixed-route share."""
    route = {}  # most common first moves from each start cell
    for start in {e["start"] for e in episodes}:
        routes = collections.Counter(tuple(e["moves"][:ROUTE_MOVES]) for e in episodes if e["start"] == start)
        route[start] = routes.most_common(1)[0][0]

    def rows(field):
        out = []
        for cell in sorted({e[field] for e in episodes}):
            mine = [e for e in episodes if e[field] == cell]
            steps = [e["step_taken"] for e in mine if e["step_taken"] is not None]
            out.append({field: f"{cell[0]},{cell[1]}", "episodes": len(mine),
                        "key_taken": round(float(np.mean([e["taken"] for e in mine])), 4),
                        "success": round(float(np.mean([e["success"] for e in mine])), 4),
                        "mean_step_taken": round(float(np.mean(steps)), 2) if steps else None})
        return out

    ends = collections.Counter(f"{e['end'][0]},{e['end'][1]}" for e in episodes if e["end"] is not None)
    same = np.mean([tuple(e["moves"][:ROUTE_MOVES]) == route[e["start"]] for e in episodes])
    critic = {}
    for phase, room in ((1, "apples"), (2, "door")):
        for taken, group in ((True, "key"), (False, "no_key")):
            got = [e["values"][phase] for e in episodes if e["taken"] == taken and phase in e["values"]]
            critic[f"{room}_{group}"] = round(float(np.mean(got)), 4) if got else None
        if critic[f"{room}_key"] is not None and critic[f"{room}_no_key"] is not None:
            critic[f"{room}_gap"] = round(critic[f"{room}_key"] - critic[f"{room}_no_key"], 4)
    return {"key_cells": rows("key"), "start_cells": rows("start"), "end_cells": dict(ends.most_common()),
            "key_taken": round(float(np.mean([e["taken"] for e in episodes])), 4),
            "on_the_start_cells_route": round(float(same), 4), "critic_first_step": critic}


def main(argv=None) -> int:
    parser = run_parser(__doc__, "a Key-to-Door run directory (config.yaml, ckpt/)", 200,
                        "greedy episodes, one per fresh instance", "keytodoor_cells", FIRST_SEED)
    args, config, agent, state, counters = parse_and_restore(parser, argv, task_prefix="keytodoor_")
    try:
        value = critic_value(agent, state)
    except ValueError as error:  # a gru run's critic reads deter: play without the values
        print(f"critic not read: {error}", flush=True)
        value = None
    episodes = [play(agent, state, config, args.seed + i, value) for i in range(args.episodes)]
    summary = summarise(episodes)
    for row in summary["key_cells"]:
        print(f"key at {row['key']}: taken {row['key_taken']:.2f} of {row['episodes']}", flush=True)
    print(f"key taken {summary['key_taken']:.3f}; first {ROUTE_MOVES} moves those most common from the start "
          f"cell in {summary['on_the_start_cells_route']:.0%} of episodes; on the key room's last step at "
          + ", ".join(f"{cell} ({n})" for cell, n in list(summary["end_cells"].items())[:3]))
    print("critic on each room's first step, key taken / not: " + ", ".join(
        f"{k} {v}" for k, v in summary["critic_first_step"].items()))
    write_checkpoint_record("keytodoor_cells", args, argv, config, counters, summary, summary["key_cells"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
