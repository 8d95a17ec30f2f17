"""The training loop: act in vectorised envs, store steps in replay, train at the train ratio.

The same command starts a run and resumes it: the step counters, agent state and
optimiser state come from the newest checkpoint in `<logdir>/ckpt`, the data from
the replay's last commit in `<logdir>/replay` (both restored from `lfs_dir` first
when the logdir is missing or older). Whether a logdir can be resumed is decided from
the model itself: the parameter tree this config builds must match the checkpoint's.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path

import numpy as np

from recall2imagine.config import ANY, Config, ConfigError, non_negative, one_of, positive
from env_wrappers import OBS_VARIANTS, obs_variants
from env_wrappers.vector import OUTCOME_KEYS
from replay.storage import COMPRESSIONS

__all__ = ["train", "TrainingError", "check_run_dir", "check_params"]


OPTIONS = {
    "seed": ANY, "task": ANY, "logdir": ANY, "wdb_name": ANY, "use_wandb": ANY,
    "use_lfs": ANY, "lfs_dir": ANY,
    "replay_size": positive, "replay.chunk": positive, "replay.compression": one_of(*COMPRESSIONS),
    "replay.prefetch": non_negative,
    "batch_size": positive, "batch_length": positive,
    "jax.platform": one_of("", "cpu", "gpu", "cuda", "rocm", "tpu"),
    "jax.precision": one_of("float32", "bfloat16"),
    "jax.prealloc": ANY, "jax.debug_nans": ANY, "jax.compile_cache": ANY,
    "jax.policy_devices": ANY, "jax.train_devices": ANY,
    "jax.distributed": ANY, "jax.coordinator_address": ANY,
    "jax.num_processes": positive, "jax.process_id": non_negative,
    "run.steps": positive, "run.train_ratio": non_negative, "run.model_updates": positive,
    "run.train_fill": non_negative,
    "run.log_every": non_negative, "run.save_every": non_negative, "run.eval_every": non_negative,
    "run.eval_eps": positive, "run.keep_ckpts": positive,
    # Stop once greedy evaluation's solved_metric (the mean return, or the fraction of episodes
    # the task counts as a success) is >= solved_score on solved_evals evaluations in a row (0: never).
    "run.solved_score": ANY, "run.solved_evals": non_negative, "run.solved_metric": one_of("score", "success"),
    "envs.amount": positive, "envs.parallel": one_of("none", "process"),
    # Observation variant of tasks that offer several ('': the task's default).
    "envs.obs": one_of("", *OBS_VARIANTS),
}
# Keys that change what a stored run means without changing a parameter shape: resuming
# with another value would mix two experiments. Shape changes are found from the model.
MEANING_KEYS = ("task", "envs.obs", "replay.chunk", "ssm_type", "ssm.prenorm", "ssm_cell.discretization",
                "encoder.symlog_inputs", "decoder.image_dist", "decoder.vector_dist",
                "reward_head.bin_limit", "critic.bin_limit", "rssm.act", "encoder.act", "decoder.act",
                "reward_head.act", "cont_head.act", "actor.act", "critic.act", "expl.act")


def check_options(config) -> None:
    for key in ("jax.train_devices", "jax.policy_devices"):
        if not config[key] or min(config[key]) < 0:
            raise ConfigError(f"Config key '{key}' must list device indices >= 0, got {config[key]}.")
    if config.use_lfs and not config.lfs_dir:
        raise ConfigError("use_lfs is True but lfs_dir is empty: pass --lfs_dir DIR (a durable directory).")
    if config.batch_size % len(config.jax.train_devices):
        raise ConfigError(f"batch_size ({config.batch_size}) must be divisible by the number of "
                          f"jax.train_devices ({len(config.jax.train_devices)}).")
    offered = obs_variants(config.task)
    if config.envs.obs and config.envs.obs not in offered:
        raise ConfigError(
            f"envs.obs is {config.envs.obs!r}, but task {config.task!r} "
            + (f"offers {', '.join(map(repr, offered))}" if offered else "has one observation layout")
            + ": pass one of those or '' (the task's default).")
    per_stream = config.replay_size // config.envs.amount
    if config.batch_length > per_stream:
        raise ConfigError(
            f"batch_length ({config.batch_length}) is longer than one env stream can keep in replay "
            f"(replay_size {config.replay_size} / envs.amount {config.envs.amount} = {per_stream} steps): "
            "no training window could ever be sampled. Lower batch_length or raise replay_size.")


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
        # Every compilation, not only those over a second: a rerun then compiles nothing.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
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


def check_logdir(logdir: Path) -> None:
    """The logdir must be a directory or not exist yet."""
    for path in (logdir, *logdir.parents):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--logdir {logdir}: {path} exists and is not a directory. "
                              "Pass a directory (it is created if missing).")


def check_run_dir(logdir: Path, config: Config) -> Config | None:
    """Refuses a logdir whose saved run differs in a MEANING_KEYS value.

    Returns the saved config (None for a new run) so that parameter differences can be
    traced to keys later. The logdir is not written: `save_config` does that once every
    check has passed, so a refused command leaves the run's own config in place."""
    saved_path = logdir / "config.yaml"
    saved = Config.load(saved_path) if saved_path.exists() else None
    if saved is not None:
        before, now = saved.flat(), config.flat()
        differing = [key for key in MEANING_KEYS if key in before and before[key] != now[key]]
        if differing:
            lines = [f"  {k}: saved {before[k]!r}, now {now[k]!r}" for k in differing]
            raise ConfigError(
                f"The logdir {logdir} holds a run with a different config:\n" + "\n".join(lines)
                + "\nResume it with its own settings, or pass --logdir elsewhere for a new run."
            )
    return saved


def save_config(logdir: Path, config: Config) -> None:
    """Writes <logdir>/config.yaml atomically."""
    logdir.mkdir(parents=True, exist_ok=True)
    path = logdir / "config.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    config.save(tmp)
    os.replace(tmp, path)


def _shape_differences(stored: dict, built: dict) -> list[str]:
    """Lines naming each path whose (shape, dtype) differs; shapes that differ only in axes of
    size 1 are the same (the checkpoint restores with a reshape)."""
    from recall2imagine.checkpoint import unit_axes_apart

    lines = []
    for path in sorted(set(stored) | set(built)):
        old, new = stored.get(path), built.get(path)
        if old != new and not (old and new and old[1] == new[1] and unit_axes_apart(old[0], new[0])):
            show = lambda leaf: "absent" if leaf is None else f"{leaf[0]} {leaf[1]}"
            lines.append(f"  {path}: checkpoint {show(old)}, this config {show(new)}")
    return lines


def check_params(stored: dict, built: dict, logdir: Path, saved: Config | None, config: Config,
                 shapes_of) -> None:
    """Refuses to resume when the checkpoint's parameter tree differs from the one `config` builds.

    stored, built: {path: (shape, dtype)}; shapes_of(config) -> such a tree, used to name the
    config keys whose saved values would rebuild the stored shapes."""
    lines = _shape_differences(stored, built)
    if not lines:
        return
    causes = []
    if saved is not None:
        now = config.flat()
        for key, value in saved.flat().items():
            if key in now and value != now[key]:
                reverted = shapes_of(config.update({key: value}))
                if _shape_differences(stored, reverted) != lines:
                    causes.append(f"  {key}: saved {value!r}, now {now[key]!r}")
    shown = lines[:20] + ([f"  ... and {len(lines) - 20} more"] if len(lines) > 20 else [])
    raise ConfigError(
        f"The checkpoint in {logdir} has other parameter shapes than this config builds:\n"
        + "\n".join(shown)
        + ("\nProduced by these config keys:\n" + "\n".join(causes) if causes else "")
        + "\nResume it with its own settings, or pass --logdir elsewhere for a new run."
    )


class _Stop:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps; a second signal acts
    as it would without this (SIGTERM ends the process, SIGINT raises KeyboardInterrupt)."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            self.restore()
            signal.raise_signal(signum)
            return
        self.requested = True

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def mean_metrics(metrics: list) -> dict:
    """Each metric's mean over the updates that report it (the exploration ensemble's stop
    when `expl.until` passes: the step leaves the ensemble out from then on)."""
    keys = dict.fromkeys(key for update in metrics for key in update)
    return {key: float(np.mean([update[key] for update in metrics if key in update])) for key in keys}


def _check_finite(metrics: dict, step: int) -> None:
    bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
    if bad:
        raise TrainingError(
            f"Non-finite training loss at env step {step}: {', '.join(sorted(bad))}. "
            "The last good checkpoint is saved; try a lower learning rate or --jax.debug_nans True."
        )


def env_kwargs(config: Config) -> dict:
    """The config's arguments for `env_wrappers.make` beyond task and seed."""
    return {"obs": config.envs.obs} if config.envs.obs else {}


def evaluate(agent, state, config: Config, episodes: int, seed: int, envs: int | None = None) -> dict:
    """`episodes` greedy episodes on `envs` fresh envs side by side (default: one episode on each
    of `episodes` envs; a policy step serves them all), env i seeded seed + i and playing its
    share of the episodes one after another (`envs=1`: all on one env instance, e.g. one Visual
    Match colour map). Returns eval/ metrics."""
    import jax

    from env_wrappers import make_vector

    envs = episodes if envs is None else envs
    if not 1 <= envs <= episodes:
        raise ValueError(f"evaluate needs 1 <= envs <= episodes, got envs={envs} for {episodes} episodes")
    quota = [episodes // envs + (i < episodes % envs) for i in range(envs)]
    env = make_vector(config.task, envs, seed=seed, parallel=False, **env_kwargs(config))
    try:
        obs = env.reset()
        carry = agent.initial_carry(envs)
        results = {i: [] for i in range(envs)}
        key = jax.random.PRNGKey(seed)
        while any(len(results[i]) < quota[i] for i in range(envs)):
            key, sub = jax.random.split(key)
            action, carry = agent.policy(state, carry, obs, sub, mode="eval")
            obs = env.step(agent.env_action(np.asarray(action)))
            for episode in env.episodes:  # an env's episodes beyond its share are not scored
                if len(results[episode["env"]]) < quota[episode["env"]]:
                    results[episode["env"]].append(episode)
    finally:
        env.close()
    results = [episode for played in results.values() for episode in played]
    scores = {"eval/episode/score": float(np.mean([e["return"] for e in results])),
              "eval/episode/length": float(np.mean([e["length"] for e in results]))}
    for name in OUTCOME_KEYS:
        if any(name in e for e in results):
            scores[f"eval/episode/{name}"] = float(np.mean([e.get(name, False) for e in results]))
    return scores


def train(config: Config) -> int:
    """Runs (or resumes) training as configured. Returns the process exit status."""
    logdir = Path(config.logdir).expanduser().resolve()
    check_logdir(logdir)
    setup_jax(config)

    from env_wrappers import make_vector
    from recall2imagine.agent import Agent
    from recall2imagine.checkpoint import Checkpointer
    from recall2imagine.logger import Logger
    from replay import Replay

    # From here on a SIGTERM or Ctrl-C (a scheduler's preemption while the replay restores
    # from lfs_dir or the model compiles) lets set-up finish, then the loop saves and exits;
    # a second signal stops at once.
    stop, resources = _Stop(), []
    try:
        lfs_dir = Path(config.lfs_dir).expanduser().resolve() if config.use_lfs else None
        # The replay restores itself, the checkpoints and the config from lfs_dir when the logdir is missing or older.
        replay = Replay(
            logdir / "replay", capacity=config.replay_size, chunk_size=config.replay.chunk,
            compression=config.replay.compression, prefetch=config.replay.prefetch,
            lfs_dir=lfs_dir, seed=config.seed,
        )
        resources.append(replay)
        if lfs_dir:
            for path in (logdir / "ckpt", logdir / "config.yaml"):
                replay.register_lfs_path(path)
        saved = check_run_dir(logdir, config)
        try:
            env = make_vector(config.task, config.envs.amount, seed=config.seed,
                              parallel=config.envs.parallel == "process", **env_kwargs(config))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"Cannot make task {config.task!r}: {e}") from None
        resources.append(env)
        env.act_space.seed(config.seed)  # reproducible prefill actions
        agent = Agent(env.obs_space, env.act_space, config)
        checkpoints = Checkpointer(logdir / "ckpt", keep=config.run.keep_ckpts)
        resources.append(checkpoints)
        stored = checkpoints.stored_params()
        if stored is not None:
            check_params(stored, agent.param_shapes(), logdir, saved, config,
                         lambda other: Agent(env.obs_space, env.act_space, other).param_shapes())
        save_config(logdir, config)
        logger = Logger(logdir, total_steps=config.run.steps, config=config)
        resources.append(logger)
        return Loop(config, logdir, env, agent, replay, checkpoints, logger, stop).run()
    finally:
        for resource in reversed(resources):
            resource.close()
        stop.restore()
        gc.unfreeze()  # what the loop froze can be collected again (several runs in one process)


class Loop:
    """One run of the loop; each step of `run` is a method below, in the order it happens."""

    def __init__(self, config, logdir, env, agent, replay, checkpoints, logger, stop):
        import jax

        from recall2imagine.agent import env_steps_per_update, rows_per_update

        self.jax = jax
        self.config, self.logdir, self.env, self.agent = config, logdir, env, agent
        self.replay, self.checkpoints, self.logger, self.stop = replay, checkpoints, logger, stop
        self.batch, self.length, self.amount = config.batch_size, config.batch_length, config.envs.amount
        self.per_update = env_steps_per_update(config)
        self.rows = rows_per_update(config)
        self.policy_key = jax.random.PRNGKey(config.seed + 1)
        self.train_key = jax.random.PRNGKey(config.seed + 2)
        # Jitted: op by op, each fold_in costs a quarter millisecond, one to three per env step.
        self.fold_in = jax.jit(jax.random.fold_in)
        self.warned_no_window = False

    def run(self) -> int:
        self.restore()
        # The set-up's objects (modules, the model, compiled functions; ~200k) live to the end:
        # frozen, the collector stops rescanning them in each full collection (~0.1 s each, a
        # dozen a minute in a `cpu tmaze` run, as every update leaves hundreds of arrays).
        gc.freeze()
        while (self.counters["step"] < self.config.run.steps and not self.stop.requested
               and not self.solved()):
            prefill = self.prefilling()
            self.act(prefill)
            if not prefill:
                self.train()
            self.show_progress()
            self.evaluate_if_due()
            self.log_if_due()
            self.save_if_due()
        return self.finish()

    def restore(self) -> None:
        """State and counters from the newest checkpoint, or fresh ones."""
        fresh = self.agent.init(self.config.seed)
        restored = self.checkpoints.restore(fresh)
        if restored is None:
            self.state = fresh
            self.counters = {"step": 0, "updates": 0, "credit": 0.0, "episodes": 0, "last_eval": 0,
                             "solved_streak": 0}
            self.logger.message(f"Starting a new run in {self.logdir}")
        else:
            self.state, self.counters, _ = restored
            self.counters.setdefault("solved_streak", 0)  # checkpoints written before the option
            self.logger.message(f"Resuming {self.logdir} at env step {self.counters['step']} "
                                f"({self.counters['updates']} updates, {len(self.replay)} replay steps)")
        # The counters of the newest checkpoint (none for a new run): saving it again is a no-op.
        self.saved_at = None if restored is None else (self.counters["step"], self.counters["updates"])
        self.obs = self.env.reset()
        self.carry = self.agent.initial_carry(self.amount)
        now = time.time()
        self.window = {"metrics": [], "t": now, "step": self.counters["step"],
                       "updates": self.counters["updates"]}
        self.updates_at_start = self.counters["updates"]
        self.last_save, self.last_progress = now, 0.0

    def prefilling(self) -> bool:
        """Random actions until train_fill steps and one batch_length window per env stream exist."""
        return self.replay.steps_added < max(self.config.run.train_fill, self.length * self.amount)

    def act(self, prefill: bool) -> None:
        """One step of every env: store (obs, action) in replay, then step and count episodes."""
        if prefill:
            env_action = np.stack([self.env.act_space.sample() for _ in range(self.amount)])
            action = self.agent.replay_action(env_action)
        else:
            key = self.fold_in(self.policy_key, np.uint32(self.counters["step"] % 2**32))
            action, self.carry = self.agent.policy(self.state, self.carry, self.obs, key, mode="train")
            action = np.asarray(action)
            env_action = self.agent.env_action(action)
        for i in range(self.amount):
            record = {key: value[i] for key, value in self.obs.items()}
            record["action"] = action[i]
            self.replay.add(record, worker=i)
        self.obs = self.env.step(env_action)
        self.counters["step"] += self.amount
        for episode in self.env.episodes:
            self.counters["episodes"] += 1
            self.logger.episode(self.counters["step"], episode["return"], episode["length"],
                                **{name: episode[name] for name in OUTCOME_KEYS if name in episode})

    def train(self) -> None:
        """As many updates as the train ratio has earned since the last one."""
        if not self.replay.can_sample(self.length):
            # Steps become sampleable when their chunk is committed; commit the partial ones.
            self.replay.flush()
        if not self.replay.can_sample(self.length):
            self.warn_if_no_window()
            return
        self.counters["credit"] += self.amount
        while self.counters["credit"] >= self.per_update and not self.stop.requested:
            key = self.fold_in(self.train_key, np.uint32(self.counters["updates"] % 2**32))
            new_state, metrics = self.agent.train(self.state, self.replay.sample(self.rows, self.length), key)
            metrics = self.jax.device_get(metrics)
            try:
                _check_finite(metrics, self.counters["step"])
            except TrainingError:
                self.save()
                raise
            self.state = new_state
            if self.counters["updates"] == self.updates_at_start:
                gc.freeze()  # again after the first update: its compilation's objects
            self.counters["updates"] += 1
            self.counters["credit"] -= self.per_update
            self.window["metrics"].append(metrics)

    def warn_if_no_window(self) -> None:
        """Once: the replay should hold a training window by now and does not."""
        if self.warned_no_window or self.replay.steps_added < 2 * self.length * self.amount:
            return
        self.warned_no_window = True
        self.logger.message(
            f"Warning: no training window of batch_length {self.config.batch_length} steps yet after "
            f"{self.replay.steps_added} env steps ({self.replay.stats()['streams']} steps per env stream); "
            "no update has run. A window needs that many consecutive steps of one env stream: "
            "lower batch_length or raise replay_size.")

    def show_progress(self) -> None:
        now = time.time()
        if now - self.last_progress > 0.5:
            elapsed = max(now - self.window["t"], 1e-6)
            self.logger.progress(
                self.counters["step"], fps=(self.counters["step"] - self.window["step"]) / elapsed,
                train_fps=(self.counters["updates"] - self.window["updates"]) * self.batch * self.length / elapsed)
            self.last_progress = now

    def evaluate_if_due(self) -> None:
        every, counters = self.config.run.eval_every, self.counters
        if every and counters["step"] - counters["last_eval"] >= every and counters["updates"] > 0:
            counters["last_eval"] = counters["step"]
            scores = evaluate(self.agent, self.state, self.config, self.config.run.eval_eps,
                              seed=self.config.seed + 10_000 + counters["episodes"])
            self.logger.scalars(counters["step"], scores)
            measure = scores.get(f"eval/episode/{self.config.run.solved_metric}")
            at_target = measure is not None and measure >= self.config.run.solved_score
            counters["solved_streak"] = counters["solved_streak"] + 1 if at_target else 0

    def solved(self) -> bool:
        needed = self.config.run.solved_evals
        return needed > 0 and self.counters["solved_streak"] >= needed

    def log_if_due(self) -> None:
        if time.time() - self.window["t"] >= self.config.run.log_every:
            self.log_period()

    def save_if_due(self) -> None:
        now = time.time()
        if now - self.last_save >= self.config.run.save_every:
            self.save()
            self.last_save = now

    def save(self) -> None:
        """Commits the replay, checkpoints the state unless unchanged, mirrors to lfs_dir."""
        self.replay.save()
        at = (self.counters["step"], self.counters["updates"])
        if self.saved_at != at:
            self.checkpoints.save(self.counters["step"], self.state, dict(self.counters))
            self.saved_at = at
        if self.replay.lfs_dir is not None:
            self.replay.sync()

    def finish(self) -> int:
        self.save()
        self.logger.progress(self.counters["step"])
        self.log_period()
        run, step = self.config.run, self.counters["step"]
        if self.solved():
            why = (f"Solved: greedy evaluation {run.solved_metric} >= {run.solved_score:g} on {run.solved_evals} "
                   f"evaluations in a row, at env step {step}")
        elif self.stop.requested:
            why = f"Stopped by signal at env step {step}"
        else:
            why = f"Finished: the budget of run.steps = {run.steps} env steps is spent"
        self.logger.message(f"{why}; saved to {self.logdir}")
        return 0

    def log_period(self) -> None:
        """Averages the period's train metrics and writes them with speed and ratio figures."""
        counters, window = self.counters, self.window
        now = time.time()
        elapsed = max(now - window["t"], 1e-6)
        steps_per_update = self.batch * self.length
        record = mean_metrics(window["metrics"])
        record["fps/env"] = (counters["step"] - window["step"]) / elapsed
        record["fps/train"] = (counters["updates"] - window["updates"]) * steps_per_update / elapsed
        record["train/updates"] = counters["updates"]
        record["train/ratio"] = counters["updates"] * steps_per_update / max(counters["step"], 1)
        record["replay/steps"] = len(self.replay)
        record["episodes"] = counters["episodes"]
        self.logger.scalars(counters["step"], record)
        self.logger.summary(counters["step"], record, keys=[k for k in (
            "fps/env", "fps/train", "train/ratio", "loss/image", "loss/vector", "loss/reward", "loss/actor",
            "loss/critic") if k in record])
        window.update(metrics=[], t=now, step=counters["step"], updates=counters["updates"])
