"""World-model probe: how many updates until the reward head learns a task's reward rule?

Collects steps from a task with a fixed policy (`--policy random`, or `walk` on T-Maze:
right along the corridor, a random turn at the junction), then trains the world model
alone (no actor, no critic) on uniformly sampled (B, T) windows and prints, every 250
updates (`--every`), every loss and two accuracies of the predicted reward:

    reward/sign_accuracy  its sign on steps whose reward is not zero (always predicting
                          the commoner sign scores that sign's share: 0.75 on
                          RepeatPrevious under random actions)
    reward/last_accuracy  which side of 0.5 it falls on at episode ends (T-Maze's goal
                          reward). An end whose episode began before the window holds no
                          cue, so a perfect model scores about 0.8 with T = 128 on L = 50

With `--policy seek` on Visual Match (random steps, then a walk to one of the three
objects drawn at random; `seek_apples` walks to the nearest apple in the middle room
instead of at random, `seek_middle` always to the middle object) it also prints, over the touches whose cue lies in the window:

    reward/touch_gap      mean predicted reward on touches that paid minus that on touches
                          that did not (0 without memory of the cue, 5 when exact)
    reward/touch_accuracy which side of half the final reward the prediction falls on
                          (2/3 without memory: "no reward" at every touch)

`--holdout N` also collects N more steps per env with the same policy and envs and never
trains on them: every printed row then scores the model on fixed held-out windows
(`heldout/...`, the same metrics), which tells a learned rule from memorised episodes.
`--replay RUN` trains on the steps a run stored in its replay instead of on policy data
(`--replay_steps A:B`: the env steps A to B, counted over all its streams); the held-out
windows then come from `--policy` (e.g. seek on Visual Match, with `--envs` as the run's
envs.amount for the same colour maps), which asks whether the agent's own data teaches the
rule that ideal data teaches. `--replay_grow S` replays those steps as the run met them:
update i samples only the first run.train_fill + (i + 1) * S of them (S = batch_size *
batch_length / train_ratio env steps per update), against all of them from the start.

`--rule` replaces the task's reward by a synthetic one with the same data, to separate
what is hard to learn:

    act      +1 if the previous action was 0, else -1 (needs the action only)
    card<N>  +1 if the card N + 1 steps back was the first suit, else -1 (memory only)
    lag<N>   +1 if the previous action equals the card (argmax of the observation's
             first 4 entries) N + 1 steps back, else -1; RepeatPreviousEasy's own rule
             is lag3 with rewards of +-1/48
    goal     T-Maze: 1 on the last step if the episode's cue showed the upper goal
             (memory only; the task's own rule also needs the turn taken)
    cue      Visual Match, `--policy seek`: the final reward at a touch if the cue was
             the first colour, whatever was touched (memory only)
    object   the same if the touched object has the first colour (no memory: it was in
             view on the step before); the task's rule is that colour against the cue's

    python benchmarks/reward_probe.py --rule lag0 --updates 1500
    python benchmarks/reward_probe.py --presets cpu tmaze --task tmaze_passive_50 \
        --policy walk --steps 3000 --envs 4 --rule goal --updates 3000 --name tmaze50_goal
    python benchmarks/reward_probe.py --run benchmarks/runs/visualmatch --policy seek \
        --steps 2000 --updates 250 --name vm30_run   (a trained run's world model, scored)
    python benchmarks/reward_probe.py --presets cpu visualmatch --task visualmatch_30 \
        --replay benchmarks/runs/visualmatch --replay_steps 0:240000 --policy seek --envs 4 \
        --holdout 3000 --updates 10000 --name vm30_replay   (a fresh model on a run's data)

Results go to benchmarks/results/reward_probe_<name or rule>.json with the command.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.common import RESULTS, key_value, run_metadata, set_overrides, write_record  # noqa: E402
from benchmarks.tmaze_visits import streams  # noqa: E402
from env_wrappers import make_vector  # noqa: E402
from env_wrappers.memory_rl import (  # noqa: E402
    APPLE, COLOURS, EAST, EXPLORE_STEPS, FINAL_REWARD, MOVES, NORTH, SOUTH, WEST, VisualMatch)
from recall2imagine.agent import Agent  # noqa: E402
from recall2imagine.config import build_config  # noqa: E402


POLICIES = ("random", "walk", "seek", "seek_apples", "seek_middle")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["popgym", "cpu"])
    parser.add_argument("--task", default="gym_popgym:popgym-RepeatPreviousEasy-v0")
    parser.add_argument("--rule", default="task", help="task, act, card<N> or lag<N>")
    parser.add_argument("--policy", default="random", choices=POLICIES,
                        help="data policy: uniform random; walk (T-Maze: right, then a random "
                             "turn); seek (Visual Match: random, then to a random object); "
                             "seek_apples (the same, collecting apples in the middle room); "
                             "seek_middle (always to the middle object)")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250, help="updates per printed row (their means)")
    parser.add_argument("--steps", type=int, default=4000, help="random-policy steps per env")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--name", default="", help="results file suffix (default: the rule)")
    parser.add_argument("--out", type=Path, default=None,
                        help="record path without suffix (default: benchmarks/results/reward_probe_<name>)")
    parser.add_argument("--set", nargs="*", default=[], type=key_value, metavar="KEY=VALUE",
                        help="config overrides")
    parser.add_argument("--holdout", type=int, default=0,
                        help="policy steps per env kept for scoring only (0: none)")
    parser.add_argument("--holdout_policy", default=None, choices=POLICIES,
                        help="policy of the held-out steps (default: --policy), e.g. seek to score "
                             "seek_middle's model on touches of every object")
    parser.add_argument("--holdout_batches", type=int, default=8,
                        help="fixed held-out batches scored at every printed row")
    parser.add_argument("--replay", type=Path, default=None,
                        help="train on this run directory's stored replay steps instead of "
                             "policy data (needs --holdout)")
    parser.add_argument("--replay_steps", default=None, metavar="A:B",
                        help="with --replay: only env steps A to B, counted over all streams")
    parser.add_argument("--replay_grow", type=float, default=None, metavar="S",
                        help="with --replay: update i trains on the first run.train_fill + "
                             "(i + 1) * S of its env steps only, as the run met them")
    parser.add_argument("--run", type=Path, default=None,
                        help="score the world model of this run directory's newest checkpoint "
                             "instead of training one: --updates batches, no update (its config "
                             "and task replace --presets, --task and --set)")
    args = parser.parse_args(argv)
    if args.holdout < 0 or args.holdout_batches < 1:
        parser.error("--holdout must be >= 0 and --holdout_batches >= 1")
    if args.holdout_policy not in (None, args.policy) and not (
            args.policy.startswith("seek") and args.holdout_policy.startswith("seek")):
        parser.error("--holdout_policy other than --policy: both must be seek policies (Visual Match)")
    if args.replay is not None and not args.holdout:
        parser.error("--replay needs --holdout: its steps carry no marks to score, so the "
                     "model is scored on held-out policy data")
    if args.replay is not None and args.run is not None:
        parser.error("--replay trains a fresh model; --run scores a trained one: give one of them")
    if args.replay_grow is not None and (args.replay is None or args.replay_grow <= 0):
        parser.error("--replay_grow needs --replay and a positive number of env steps per update")
    if args.replay_steps is not None:
        if args.replay is None:
            parser.error("--replay_steps needs --replay")
        try:
            args.replay_steps = tuple(int(v) for v in args.replay_steps.split(":"))
            assert len(args.replay_steps) == 2 and 0 <= args.replay_steps[0] < args.replay_steps[1]
        except (ValueError, AssertionError):
            parser.error(f"--replay_steps must be A:B with 0 <= A < B env steps, got {args.replay_steps!r}")
    return args


def steps_met(update: int, fill: int, per_update: float, streams: int, steps: int, length: int) -> int:
    """Steps per stream that a run had stored at its update ``update`` (0-based): ``fill``
    env steps before the first update and ``per_update`` more before each, over ``streams``
    streams; at least one window of ``length`` and at most the ``steps`` there are."""
    met = int((fill + (update + 1) * per_update) // streams)
    return min(max(met, length + 1), steps)


def replay_data(run: Path, keys, span=None) -> dict:
    """(streams, steps, ...) arrays of ``keys`` from a run's replay, every stream cut to the
    same length; ``span`` (A, B) keeps the env steps A to B counted over all streams (a
    stream's steps a / n to b / n of n streams)."""
    directory = run / "replay"
    if not (directory / "replay.json").exists():
        raise ValueError(f"{run} has no replay/replay.json: give a run directory of train.py")
    stored = streams(directory)
    missing = [k for k in keys if k not in next(iter(stored.values()))]
    if missing:
        raise ValueError(f"{directory} stores no {missing}: it is another task's replay")
    count = len(stored)
    begin, end = (0, None) if span is None else (span[0] // count, span[1] // count)
    cut = []
    for stream in stored.values():
        # Stream positions begin..end, shifted by the steps evicted before the stored ones.
        lo, hi = max(begin - stream["start"], 0), None if end is None else max(end - stream["start"], 0)
        cut.append({k: stream[k][lo:hi] for k in keys})
    length = min(len(part[keys[0]]) for part in cut)
    if length < 2:
        raise ValueError(f"{directory} holds no stored steps in {span}")
    return {k: np.stack([part[k][:length] for part in cut]) for k in keys}


def walk_policy(obs, rng):
    """T-Maze: step right along the corridor, turn up or down at random at the junction."""
    at_junction = np.asarray(obs["vector"])[:, 0] > 0.5
    return np.where(at_junction, rng.choice([1, 3], len(at_junction)), 0)


def apple_action(game, rng):
    """Visual Match's middle room: a step towards the nearest apple (random when none is
    left; the room is open inside its walls, so a straight step never blocks)."""
    apples = np.argwhere(game.room == APPLE)
    if not len(apples):
        return int(rng.integers(0, 4))
    row, col = game.player
    d_row, d_col = apples[np.abs(apples - (row, col)).sum(1).argmin()] - (row, col)
    if d_row and (not d_col or rng.random() < 0.5):
        return NORTH if d_row < 0 else SOUTH
    return WEST if d_col < 0 else EAST


def seek_action(game, goal, rng, apples=False):
    """Visual Match: a random step in phases 1-2 (``apples``: towards the nearest apple in
    phase 2); in phase 3 the way to object ``goal``.

    Returns (action, colour): the index in COLOURS of the object the step moves into,
    or -1.
    """
    if apples and game.phase == 1:
        return apple_action(game, rng), -1
    if game.phase != 2:
        return int(rng.integers(0, 4)), -1
    row, col = game.player
    goal_col = game.object_cells[goal][1]
    if row > 3 or col == goal_col:  # up through the gap, or up to the object
        action = NORTH
    else:
        action = WEST if col > goal_col else EAST
    d_row, d_col = MOVES[action]
    code = int(game.room[row + d_row, col + d_col])
    return action, COLOURS.index(code) if code in COLOURS else -1


def collect(env, steps, keys, act_dim, policy="random", seed=0):
    """(envs, steps, ...) arrays of policy data from a vector env, in replay's layout.

    With a seek policy the data also holds ``touch`` (the step an object
    was touched), ``episode_step`` (the step's index in its episode), ``cue`` (the index
    in COLOURS of the episode's target) and ``touched`` (that of the object touched, -1
    on other steps).
    """
    envs = env.num_envs
    rng = np.random.default_rng(seed)
    obs = env.reset()
    keys = keys + ("is_last",)
    data = {k: [] for k in keys}
    episode_step, cue = np.zeros((envs, steps), np.int64), np.zeros((envs, steps), np.int64)
    touched = np.full((envs, steps), -1, np.int64)
    games = [e.unwrapped for e in getattr(env.env, "envs", [])]
    if policy.startswith("seek") and not (games and all(isinstance(g, VisualMatch) for g in games)):
        raise ValueError(f"--policy {policy} needs a Visual Match task in this process (visualmatch_<L>)")
    goals, count = rng.integers(0, 3, envs), np.zeros(envs, np.int64)
    for t in range(steps):
        count = np.where(obs["is_first"], 0, count + 1)
        episode_step[:, t] = count
        goals = np.where(obs["is_first"], 1 if policy == "seek_middle" else rng.integers(0, 3, envs), goals)
        if policy == "walk":
            action = walk_policy(obs, rng)
        elif policy.startswith("seek"):
            cue[:, t] = [COLOURS.index(game.target) for game in games]
            moves = [seek_action(game, goal, rng, policy == "seek_apples") for game, goal in zip(games, goals)]
            action = np.array([move for move, _ in moves])
            if t + 1 < steps:  # after a last step the env resets and ignores the action
                touched[:, t + 1] = np.where(obs["is_last"], -1, [colour for _, colour in moves])
        else:
            action = rng.integers(0, act_dim, envs)
        for key in keys:
            data[key].append(np.eye(act_dim, dtype=np.float32)[action] if key == "action" else np.asarray(obs[key]))
        obs = env.step(action)
    data = {k: np.stack(v, 1) for k, v in data.items()}
    if policy.startswith("seek"):
        data.update(touch=touched >= 0, episode_step=episode_step, cue=cue, touched=touched)
    return data


def collect_parts(env, keys, act_dim, parts, seed=0):
    """`collect` of consecutive (steps, policy) parts in the same envs, joined along the
    steps; one run of the policy when every part has the same one (the data then equals
    that of a single `collect`), else one per part, each from a reset of the envs (which
    go on to new episodes) with the policy's draws seeded by ``seed``."""
    parts = [(steps, policy) for steps, policy in parts if steps]
    if len({policy for _, policy in parts}) == 1:
        return collect(env, sum(steps for steps, _ in parts), keys, act_dim, parts[0][1], seed)
    done = [collect(env, steps, keys, act_dim, policy, seed) for steps, policy in parts]
    return {k: np.concatenate([part[k] for part in done], 1) for k in done[0]}


def split(arrays: dict, at: int) -> tuple[dict, dict]:
    """Each (envs, steps, ...) array cut into its first ``at`` steps and the rest."""
    return {k: v[:, :at] for k, v in arrays.items()}, {k: v[:, at:] for k, v in arrays.items()}


def touch_predictions(marks, reward, predicted):
    """(n, 2) rows [true reward, predicted reward] of a batch's touches whose cue (the
    episode's first 15 steps, phase 1) lies inside the window."""
    position = np.arange(reward.shape[1])[None]
    cue_seen = marks["episode_step"] - position < EXPLORE_STEPS
    keep = marks["touch"] & cue_seen
    return np.stack([reward[keep], predicted[keep]], -1)


def touch_metrics(rows, final_reward):
    """touch_gap and touch_accuracy (see the module's doc) of [true, predicted] rows."""
    target = rows[:, 0] > final_reward / 2
    if not target.any() or target.all():
        return {"reward/touches": len(rows)}
    gap = rows[target, 1].mean() - rows[~target, 1].mean()
    accuracy = ((rows[:, 1] > final_reward / 2) == target).mean()
    return {"reward/touch_gap": round(float(gap), 4), "reward/touch_accuracy": round(float(accuracy), 4),
            "reward/touches": len(rows)}


def synthetic_reward(data, rule):
    action = data["action"].argmax(-1)
    previous = np.concatenate([np.zeros_like(action[:, :1]), action[:, :-1]], 1)
    if rule == "act":
        return np.where(previous == 0, 1.0, -1.0).astype(np.float32)
    if rule == "goal":
        # T-Maze: 1 on an episode's last step if its start showed the upper goal.
        cue = np.zeros(action.shape[0])
        reward = np.zeros(action.shape, np.float32)
        for t in range(action.shape[1]):
            first = data["is_first"][:, t].astype(bool)
            cue = np.where(first, data["vector"][:, t, 1], cue)
            reward[:, t] = np.where(data["is_last"][:, t].astype(bool) & (cue > 0), 1.0, 0.0)
        return reward
    lag = int(rule[4:] if rule.startswith("card") else rule[3:])
    card = data["vector"][..., :4].argmax(-1)
    past = np.concatenate([np.zeros_like(card[:, :1 + lag]), card[:, :-1 - lag]], 1)
    if rule.startswith("card"):
        return np.where(past == 0, 1.0, -1.0).astype(np.float32)
    return np.where(previous == past, 1.0, -1.0).astype(np.float32)


def main(argv=None):
    args = parse_args(argv)
    if args.run is not None:
        from benchmarks.evaluate import restore_run

        try:
            config, agent, state, counters = restore_run(args.run)
        except ValueError as error:
            raise SystemExit(f"--run: {error}")
        args.task = config.task
    else:
        config = build_config(args.presets, {"task": args.task, **set_overrides(args.set)})
    env = make_vector(args.task, args.envs, seed=0, parallel=False)
    if args.run is None:
        agent = Agent(env.obs_space, env.act_space, config)
        state = agent.init(config.seed)
    collected = 0 if args.replay is not None else args.steps
    held_policy = args.holdout_policy or args.policy
    try:
        data = collect_parts(env, agent.batch_keys, agent.act_dim,
                             [(collected, args.policy), (args.holdout, held_policy)], config.seed)
    except ValueError as error:
        raise SystemExit(str(error))
    finally:
        env.close()
    marks = {k: data.pop(k) for k in ("touch", "episode_step", "cue", "touched") if k in data}
    if args.rule in ("cue", "object"):
        if not marks:
            raise SystemExit(f"--rule {args.rule} needs --policy seek on a Visual Match task")
        colour = marks["cue"] if args.rule == "cue" else marks["touched"]
        data["reward"] = np.where(marks["touch"], np.where(colour == 0, FINAL_REWARD, 0.0), data["reward"]).astype(np.float32)
    elif args.rule != "task":
        data["reward"] = synthetic_reward(data, args.rule)
    batch, length = config.batch_size, config.batch_length
    # Training windows from the first `collected` steps (or the replay), held-out ones after.
    (train, held), (train_marks, held_marks) = split(data, collected), split(marks, collected)
    if args.replay is not None:
        if args.rule != "task":
            raise SystemExit("--replay trains on the run's own rewards: use --rule task")
        try:
            train = replay_data(args.replay, list(data), args.replay_steps)
        except ValueError as error:
            raise SystemExit(f"--replay: {error}")
        train_marks = {}
        for key, value in data.items():
            if train[key].shape[2:] != value.shape[2:]:
                raise SystemExit(f"--replay: its {key!r} has shape {train[key].shape[2:]}, this task's "
                                 f"{value.shape[2:]}: give --task and --presets as the run trained")
    if train["reward"].shape[1] <= length or (args.holdout and args.holdout <= length):
        raise SystemExit(f"the steps per env to train on ({train['reward'].shape[1]}) and --holdout "
                         f"({args.holdout}) must exceed batch_length {length}")
    rng = np.random.default_rng(config.seed + 1)

    def sample(arrays, arrays_marks, rng=rng, steps=None):
        """A batch of windows from the first ``steps`` steps of each stream (default: all)."""
        env = rng.integers(0, arrays["reward"].shape[0], batch)
        start = rng.integers(0, (steps or arrays["reward"].shape[1]) - length, batch)
        window = lambda v: np.stack([v[i, j:j + length] for i, j in zip(env, start)])  # noqa: E731
        out = {k: window(v) for k, v in arrays.items()}
        out["is_first"] = out["is_first"].astype(bool)
        out["is_last"] = out["is_last"].astype(bool)
        out["is_first"][:, 0] = True
        return out, {k: window(arrays_marks[k]) for k in ("touch", "episode_step") if k in arrays_marks}

    held_rng = np.random.default_rng(config.seed + 2)
    heldout = [sample(held, held_marks, held_rng) for _ in range(args.holdout_batches if args.holdout else 0)]

    params, opt_state = state["params"]["wm"], state["opt"]["wm"]
    optimizer = agent.opts["wm"]
    learn = args.run is None

    def readout(params, batch, outs, metrics):
        """The predicted reward and the metrics with its two accuracies added."""
        predicted = agent.wm.head(params, outs, "reward").mean()
        scored = jnp.abs(batch["reward"]) > 1e-6
        agree = (jnp.sign(predicted) == jnp.sign(batch["reward"])) & scored
        metrics["reward/sign_accuracy"] = agree.sum() / jnp.maximum(scored.sum(), 1)
        # Episode ends (T-Maze's goal reward): is the prediction on the right side of 0.5?
        last = batch["is_last"]
        hit = ((predicted > 0.5) == (batch["reward"] > 0.5)) & last
        metrics["reward/last_accuracy"] = hit.sum() / jnp.maximum(last.sum(), 1)
        return metrics, predicted

    @jax.jit
    def update(params, opt_state, batch, key):
        (_, (outs, metrics)), grads = jax.value_and_grad(agent.wm.loss, has_aux=True)(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics, predicted = readout(params, batch, outs, metrics)
        if learn:
            params = optax.apply_updates(params, updates)
        return params, opt_state, metrics, predicted

    @jax.jit
    def evaluate(params, batch, key):
        return readout(params, batch, *agent.wm.loss(params, batch, key)[1])

    def heldout_row(params):
        """The held-out windows' mean metrics (and touch metrics), without an update."""
        results = [evaluate(params, b, jax.random.PRNGKey(k)) for k, (b, _) in enumerate(heldout)]
        row = {k: round(float(np.mean([m[k] for m, _ in results])), 4)
               for k in results[0][0] if k.startswith(("loss/", "reward/"))}
        if marks:
            rows = [touch_predictions(m, b["reward"], np.asarray(p)) for (b, m), (_, p) in zip(heldout, results)]
            row.update(touch_metrics(np.concatenate(rows), FINAL_REWARD))
        return {f"heldout/{k}": v for k, v in row.items()}

    def grown(i):
        """Steps per stream that update i may sample with --replay_grow (None: all)."""
        if args.replay_grow is None:
            return None
        return steps_met(i, config.run.train_fill, args.replay_grow, *train["reward"].shape[:2], length)

    start, history, curve, touches = time.time(), [], [], []
    for i in range(args.updates):
        batch_data, batch_marks = sample(train, train_marks, steps=grown(i))
        params, opt_state, metrics, predicted = update(params, opt_state, batch_data, jax.random.PRNGKey(i))
        history.append({k: float(v) for k, v in metrics.items()})
        if train_marks:
            touches.append(touch_predictions(batch_marks, batch_data["reward"], np.asarray(predicted)))
        if (i + 1) % args.every == 0:
            row = {"updates": i + 1, "seconds": round(time.time() - start, 1)}
            row.update({k: round(float(np.mean([h[k] for h in history[-args.every:]])), 4)
                        for k in history[-1] if k.startswith(("loss/", "reward/", "model/"))})
            if train_marks:
                row.update(touch_metrics(np.concatenate(touches[-args.every:]), FINAL_REWARD))
            if heldout:
                row.update(heldout_row(params))
            curve.append(row)
            print(row, flush=True)
    source = ({"run": str(args.run), "checkpoint_env_step": counters["step"]} if args.run is not None
              else {"presets": args.presets, "overrides": args.set})
    if args.replay is not None:
        source.update(replay=str(args.replay), replay_steps=list(args.replay_steps or ()),
                      replay_streams=list(train["reward"].shape[:2]), replay_grow=args.replay_grow)
    source["holdout"] = [args.envs, args.holdout]
    source["holdout_policy"] = held_policy
    line = ["benchmarks/reward_probe.py", *(sys.argv[1:] if argv is None else argv)]
    record = {**run_metadata(["command"], argv=line), "task": args.task, "rule": args.rule, "policy": args.policy,
              **source, "batch": [batch, length],
              **run_metadata(["date", "jax", "backend", "machine"]), "curve": curve}
    write_record(args.out or RESULTS / f"reward_probe_{args.name or args.rule}", record)


if __name__ == "__main__":
    main()
