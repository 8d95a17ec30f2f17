"""The training loop: act in vectorised envs, store steps in replay, train at the train ratio.

The same command starts a run and resumes it: the step counters, agent state and
optimiser state come from the newest checkpoint in `<logdir>/ckpt`, the data from
the replay's last commit in `<logdir>/replay` (both restored from `lfs_dir` first
when the logdir is missing or older).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from recall2imagine.config import Config, ConfigError

__all__ = ["train", "TrainingError"]

# Keys whose change makes an existing run directory unusable (model shapes, task, data layout).
STRUCTURAL_KEYS = (
    r"task", r"ssm_type", r"rssm\..*", r"ssm\.n_layers", r"ssm\.glu", r"ssm\.mlp", r"ssm_cell\.n_blocks",
    r"ssm_cell\.conj_sym", r"encoder\..*", r"decoder\..*", r"reward_head\..*", r"cont_head\..*",
    r"actor\.(layers|units|inputs|act|norm)", r"critic\.(layers|units|inputs|bins|bin_limit|act|norm)",
    r"replay\.chunk",
)
REPLAY_KEYS = ("reward", "is_first", "is_last", "is_terminal")


class TrainingError(RuntimeError):
    """A run cannot go on; the message names why. The last good checkpoint is on disk."""


def setup_jax(config: Config) -> None:
    """Platform, memory, cache and multi-host settings; must run before JAX touches a device."""
    if not config.jax.prealloc:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    if config.jax.platform:
        jax.config.update("jax_platforms", {"gpu": "cuda"}.get(config.jax.platform, config.jax.platform))
    if config.jax.compile_cache:
        jax.config.update("jax_compilation_cache_dir", str(Path(config.jax.compile_cache).expanduser()))
    if config.jax.debug_nans:
        jax.config.update("jax_debug_nans", True)
    if config.jax.distributed:
        jax.distributed.initialize(
            coordinator_address=config.jax.coordinator_address or None,
            num_processes=config.jax.num_processes,
            process_id=config.jax.process_id,
        )
    count = len(jax.devices())
    wanted = sorted(set(config.jax.train_devices) | set(config.jax.policy_devices))
    if wanted[-1] >= count:
        raise ConfigError(
            f"jax.train_devices {config.jax.train_devices} / jax.policy_devices {config.jax.policy_devices} "
            f"name device {wanted[-1]}, but JAX sees {count} device(s) on backend '{jax.default_backend()}'."
        )


def check_run_dir(logdir: Path, config: Config) -> None:
    """Refuses a logdir whose saved config differs in structural keys; then saves this config."""
    import re

    saved_path = logdir / "config.yaml"
    if saved_path.exists():
        saved = Config.load(saved_path).flat()
        current = config.flat()
        differing = [
            key for key in sorted(set(saved) | set(current))
            if any(re.fullmatch(p, key) for p in STRUCTURAL_KEYS) and saved.get(key) != current.get(key)
        ]
        # The exploration ensemble is in the checkpoint only when expl.scale > 0.
        if (saved.get("expl.scale", 0.0) > 0) != (current["expl.scale"] > 0):
            differing.append("expl.scale")
        elif current["expl.scale"] > 0:
            differing += [k for k in ("expl.heads", "expl.layers", "expl.units", "expl.act", "expl.norm")
                          if saved.get(k) != current.get(k)]
        if differing:
            lines = [f"  {k}: saved {saved.get(k)!r}, now {current.get(k)!r}" for k in differing]
            raise ConfigError(
                f"The logdir {logdir} holds a run with a different config:\n" + "\n".join(lines)
                + "\nResume it with its own settings, or pass --logdir elsewhere for a new run."
            )
    logdir.mkdir(parents=True, exist_ok=True)
    tmp = saved_path.with_suffix(".yaml.tmp")
    config.save(tmp)
    os.replace(tmp, saved_path)


class _Stop:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _check_finite(metrics: dict, step: int) -> None:
    bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
    if bad:
        raise TrainingError(
            f"Non-finite training loss at env step {step}: {', '.join(sorted(bad))}. "
            "The last good checkpoint is saved; try a lower learning rate or --jax.debug_nans True."
        )


def _step_record(obs: dict, action: np.ndarray, index: int) -> dict:
    """What replay stores for env `index`: observation keys, flags, reward and the action taken."""
    record = {key: value[index] for key, value in obs.items()}
    record["action"] = action[index]
    return record


def evaluate(agent, state, config: Config, episodes: int, seed: int) -> dict:
    """Greedy episodes on a fresh env; returns eval/ metrics."""
    import jax

    from env_wrappers import make_vector

    env = make_vector(config.task, 1, seed=seed, parallel=False)
    try:
        obs = env.reset()
        carry = agent.initial_carry(1)
        results = []
        key = jax.random.PRNGKey(seed)
        while len(results) < episodes:
            key, sub = jax.random.split(key)
            action, carry = agent.policy(state, carry, obs, sub, mode="eval")
            obs = env.step(agent.env_action(np.asarray(action)))
            results += env.episodes
    finally:
        env.close()
    return {"eval/episode/score": float(np.mean([e["return"] for e in results])),
            "eval/episode/length": float(np.mean([e["length"] for e in results]))}


def train(config: Config) -> int:
    """Runs (or resumes) training as configured. Returns the process exit status."""
    logdir = Path(config.logdir).expanduser().resolve()
    setup_jax(config)
    import jax

    from env_wrappers import make_vector
    from recall2imagine.agent import Agent
    from recall2imagine.checkpoint import Checkpointer
    from recall2imagine.logger import Logger
    from replay import Replay

    lfs_dir = Path(config.lfs_dir).expanduser().resolve() if config.use_lfs else None
    # The replay restores itself, the checkpoints and the config from lfs_dir when the logdir is missing or older.
    replay = Replay(
        logdir / "replay", capacity=config.replay_size, chunk_size=config.replay.chunk,
        compression=config.replay.compression, prefetch=config.replay.prefetch,
        lfs_dir=lfs_dir, seed=config.seed,
    )
    if lfs_dir:
        for path in (logdir / "ckpt", logdir / "config.yaml"):
            replay.register_lfs_path(path)
    check_run_dir(logdir, config)
    try:
        env = make_vector(config.task, config.envs.amount, seed=config.seed,
                          parallel=config.envs.parallel == "process")
    except (ValueError, TypeError) as e:
        raise ConfigError(f"Cannot make task {config.task!r}: {e}") from None
    env.act_space.seed(config.seed)  # reproducible prefill actions
    agent = Agent(env.obs_space, env.act_space, config)
    checkpoints = Checkpointer(logdir / "ckpt", keep=config.run.keep_ckpts)
    logger = Logger(logdir, total_steps=config.run.steps, config=config)
    stop = _Stop()
    try:
        return _loop(config, logdir, env, agent, replay, checkpoints, logger, stop, jax)
    finally:
        stop.restore()
        logger.close()
        env.close()
        replay.close()
        checkpoints.close()


def _loop(config, logdir, env, agent, replay, checkpoints, logger, stop, jax) -> int:
    batch, length = config.batch_size, config.batch_length
    fresh = agent.init(config.seed)
    restored = checkpoints.restore(fresh)
    if restored is None:
        state, counters = fresh, {"step": 0, "updates": 0, "credit": 0.0, "episodes": 0, "last_eval": 0}
        logger.message(f"Starting a new run in {logdir}")
    else:
        state, counters, _ = restored
        logger.message(f"Resuming {logdir} at env step {counters['step']} ({counters['updates']} updates, "
                       f"{len(replay)} replay steps)")
    del fresh
    policy_key = jax.random.PRNGKey(config.seed + 1)
    train_key = jax.random.PRNGKey(config.seed + 2)
    per_update = batch * length / config.run.train_ratio if config.run.train_ratio > 0 else float("inf")
    amount = config.envs.amount
    obs = env.reset()
    carry = agent.initial_carry(amount)
    window = {"metrics": [], "t": time.time(), "step": counters["step"], "updates": counters["updates"]}
    last_save = time.time()
    last_progress = 0.0
    # The counters of the newest checkpoint (none for a new run): saving it again is a no-op.
    saved_at = None if restored is None else (counters["step"], counters["updates"])

    def save(current_state):
        nonlocal saved_at
        replay.save()
        if saved_at != (counters["step"], counters["updates"]):
            checkpoints.save(counters["step"], current_state, dict(counters))
            saved_at = (counters["step"], counters["updates"])
        if replay.lfs_dir is not None:
            replay.sync()

    while counters["step"] < config.run.steps and not stop.requested:
        # Random actions until train_fill steps and one batch_length window per env stream exist.
        prefill = replay.steps_added < max(config.run.train_fill, length * amount)
        if prefill:
            env_action = np.stack([env.act_space.sample() for _ in range(amount)])
            action = agent.replay_action(env_action)
        else:
            key = jax.random.fold_in(policy_key, counters["step"])
            action, carry = agent.policy(state, carry, obs, key, mode="train")
            action = np.asarray(action)
            env_action = agent.env_action(action)
        for i in range(amount):
            replay.add(_step_record(obs, action, i), worker=i)
        obs = env.step(env_action)
        counters["step"] += amount
        for episode in env.episodes:
            counters["episodes"] += 1
            logger.episode(counters["step"], episode["return"], episode["length"])

        if not prefill and not replay.can_sample(length):
            # Steps become sampleable when their chunk is committed; commit the partial ones once.
            replay.flush()
        if not prefill and replay.can_sample(length):
            counters["credit"] += amount
            while counters["credit"] >= per_update and not stop.requested:
                key = jax.random.fold_in(train_key, counters["updates"])
                new_state, metrics = agent.train(state, replay.sample(batch, length), key)
                metrics = {k: np.asarray(v) for k, v in metrics.items()}
                try:
                    _check_finite(metrics, counters["step"])
                except TrainingError:
                    save(state)
                    raise
                state = new_state
                counters["updates"] += 1
                counters["credit"] -= per_update
                window["metrics"].append(metrics)

        now = time.time()
        if now - last_progress > 0.5:
            elapsed = max(now - window["t"], 1e-6)
            logger.progress(counters["step"], fps=(counters["step"] - window["step"]) / elapsed,
                            train_fps=(counters["updates"] - window["updates"]) * batch * length / elapsed)
            last_progress = now
        if config.run.eval_every and counters["step"] - counters["last_eval"] >= config.run.eval_every \
                and counters["updates"] > 0:
            counters["last_eval"] = counters["step"]
            logger.scalars(counters["step"], evaluate(agent, state, config, config.run.eval_eps,
                                                      seed=config.seed + 10_000 + counters["episodes"]))
        if now - window["t"] >= config.run.log_every:
            _log_period(logger, counters, window, replay, batch * length)
        if now - last_save >= config.run.save_every:
            save(state)
            last_save = now

    save(state)
    logger.progress(counters["step"])
    _log_period(logger, counters, window, replay, batch * length)
    logger.message(("Stopped by signal" if stop.requested else "Finished") +
                   f" at env step {counters['step']}; saved to {logdir}")
    return 0


def _log_period(logger, counters, window, replay, steps_per_update) -> None:
    """Averages the period's train metrics and writes them with speed and ratio figures."""
    now = time.time()
    elapsed = max(now - window["t"], 1e-6)
    record = {}
    if window["metrics"]:
        for key in window["metrics"][0]:
            record[key] = float(np.mean([m[key] for m in window["metrics"]]))
    env_steps = counters["step"] - window["step"]
    updates = counters["updates"] - window["updates"]
    record["fps/env"] = env_steps / elapsed
    record["fps/train"] = updates * steps_per_update / elapsed
    record["train/updates"] = counters["updates"]
    record["train/ratio"] = counters["updates"] * steps_per_update / max(counters["step"], 1)
    record["replay/steps"] = len(replay)
    record["episodes"] = counters["episodes"]
    logger.scalars(counters["step"], record)
    logger.summary(counters["step"], record, keys=[k for k in ("fps/env", "fps/train", "train/ratio", "loss/image",
                   "loss/vector", "loss/reward", "loss/actor", "loss/critic") if k in record])
    window.update(metrics=[], t=now, step=counters["step"], updates=counters["updates"])
