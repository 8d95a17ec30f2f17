"""End to end: train.py trains, writes the run directory, resumes after kills, restores from LFS.

Each run is a subprocess, as a user would start it. They share the suite's
persistent compilation cache, so only the first run of each model compiles.
"""

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".jax_cache"
TRAIN = [sys.executable, str(ROOT / "recall2imagine" / "train.py")]
DEBUG = ["--configs", "debug", "--jax.compile_cache", str(CACHE)]
TMAZE = DEBUG + ["--task", "tmaze_passive_5"]


def environ(devices: int = 1) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", MUJOCO_GL="egl")
    if devices > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    return env


def train(args, timeout=300, devices=1, check=True):
    result = subprocess.run(TRAIN + list(args), capture_output=True, text=True, cwd=ROOT, env=environ(devices),
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def logged(logdir):
    """The run's metrics records; none before its first line is written."""
    path = Path(logdir) / "metrics.jsonl"
    return read_jsonl(path) if path.exists() else []


def last_checkpoint_step(logdir):
    steps = [int(p.name) for p in (Path(logdir) / "ckpt").iterdir() if p.name.isdigit()]
    return max(steps) if steps else None


def wait_for(predicate, timeout, what, interval=0.5):
    start = time.time()
    while time.time() - start < timeout:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def tmaze_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("tmaze")
    train(TMAZE + ["--run.steps", "400", "--logdir", str(logdir)])
    return logdir


def test_a_debug_run_writes_every_documented_file(tmaze_run):
    logdir = tmaze_run
    assert (logdir / "config.yaml").is_file()
    assert list(logdir.glob("events.out.tfevents.*"))
    assert (logdir / "replay").is_dir() and last_checkpoint_step(logdir) >= 400
    metrics = read_jsonl(logdir / "metrics.jsonl")
    assert metrics and all("step" in m for m in metrics)
    trained = [m for m in metrics if "loss/vector" in m]
    assert trained, "no training metrics were logged"
    for key in ("loss/reward", "loss/cont", "loss/dyn", "loss/rep", "loss/actor", "loss/critic", "fps/env",
                "fps/train", "train/ratio"):
        assert key in trained[-1], key
    scores = read_jsonl(logdir / "scores.jsonl")
    assert len(scores) >= 10
    for record in scores:
        assert set(record) == {"step", "episode/score", "episode/length"}
        assert record["episode/length"] == 6  # passive T-Maze of corridor 5: L + 1 steps


def test_rerunning_a_finished_run_exits_cleanly_and_resuming_it_needs_no_second_prefill(tmaze_run, tmp_path):
    logdir = tmp_path / "resume"
    shutil.copytree(tmaze_run, logdir)
    steps = last_checkpoint_step(logdir)
    # The finished run's rerun saves at its last step, which already has a checkpoint.
    result = train(TMAZE + ["--run.steps", "400", "--logdir", str(logdir)])
    assert "Finished" in result.stdout and last_checkpoint_step(logdir) == steps
    before = read_jsonl(logdir / "metrics.jsonl")[-1]
    # Resumed for 40 env steps, fewer than the debug preset's train_fill of 64: a second
    # prefill would train nothing. --run.save_every 0 saves on every loop and again at the end
    # (a step that then has a checkpoint); log_every changes neither a parameter nor what the
    # run means, so resuming with another value is allowed.
    result = train(TMAZE + ["--run.steps", str(steps + 40), "--run.save_every", "0", "--run.log_every", "7",
                            "--logdir", str(logdir)])
    assert "Resuming" in result.stdout and "Finished" in result.stdout
    after = read_jsonl(logdir / "metrics.jsonl")[-1]
    assert after["step"] >= steps + 40 and after["train/updates"] > before["train/updates"]
    assert after["replay/steps"] > before["replay/steps"] and last_checkpoint_step(logdir) >= steps + 40


def test_other_parameter_shapes_in_the_same_logdir_are_refused_naming_paths_and_keys(tmaze_run, tmp_path):
    logdir = tmp_path / "other"
    shutil.copytree(tmaze_run, logdir)
    result = train(TMAZE + ["--rssm.deter", "48", "--logdir", str(logdir)], check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "params/wm/" in result.stderr and "(32," in result.stderr and "(48," in result.stderr
    assert "rssm.deter: saved 32, now 48" in result.stderr and "--logdir" in result.stderr
    assert "Traceback" not in result.stderr


def test_another_task_in_the_same_logdir_is_refused(tmaze_run, tmp_path):
    logdir = tmp_path / "other_task"
    shutil.copytree(tmaze_run, logdir)
    result = train(DEBUG + ["--task", "tmaze_passive_6", "--logdir", str(logdir)], check=False)
    assert result.returncode == 2
    assert "task: saved 'tmaze_passive_5', now 'tmaze_passive_6'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_solved_run_stops_saying_so_and_rerunning_it_trains_no_further(tmaze_run, tmp_path):
    logdir = tmp_path / "solved"
    shutil.copytree(tmaze_run, logdir)
    # Any score clears -10: two evaluations after the resume end the run long before run.steps.
    args = TMAZE + ["--run.steps", "100000", "--run.eval_every", "40", "--run.solved_score", "-10",
                    "--run.solved_evals", "2", "--logdir", str(logdir)]
    result = train(args)
    assert "Solved: greedy evaluation score >= -10 on 2 evaluations in a row" in result.stdout
    stopped = last_checkpoint_step(logdir)
    assert 400 < stopped < 1000
    result = train(args)
    assert "Solved" in result.stdout and last_checkpoint_step(logdir) == stopped
    result = train(TMAZE + ["--run.steps", str(stopped + 20), "--logdir", str(logdir)])
    assert f"Finished: the budget of run.steps = {stopped + 20} env steps is spent" in result.stdout


def test_a_visual_match_run_logs_success_and_stops_on_it(tmp_path, capsys):
    # Episodes log success, and a success target of 0 (any evaluation clears it) ends the run
    # at the first evaluation.
    result = train(DEBUG + ["--task", "visualmatch_2", "--run.steps", "100000",
                            "--run.eval_every", "100", "--run.solved_metric", "success", "--run.solved_score", "0",
                            "--run.solved_evals", "1", "--logdir", str(tmp_path)])
    assert "Solved: greedy evaluation success >= 0 on 1 evaluations in a row" in result.stdout
    evals = [m for m in read_jsonl(tmp_path / "metrics.jsonl") if "eval/episode/success" in m]
    assert len(evals) == 1 and 0.0 <= evals[0]["eval/episode/success"] <= 1.0
    scores = read_jsonl(tmp_path / "scores.jsonl")
    assert scores and all(s["episode/success"] in (0.0, 1.0) for s in scores)
    assert all(s["episode/length"] == 32 for s in scores)
    # The run's checkpoint plays each of the 6 colour-to-column maps; the maps of its training
    # instances are marked.
    # The analysis scripts run in this process, through the entry points their command lines
    # call (a subprocess each cost a second start of Python and JAX).
    from benchmarks import reward_probe, visualmatch_choices, visualmatch_maps
    assert visualmatch_maps.main([str(tmp_path), "--episodes", "1", "--out", str(tmp_path / "maps")]) == 0
    record = json.loads((tmp_path / "maps.json").read_text())
    assert sorted(row["map"] for row in record["maps"]) == sorted(
        "-".join(p) for p in itertools.permutations(["red", "green", "blue"]))
    assert all(0.0 <= row["success"] <= 1.0 and row["episodes"] == 1 for row in record["maps"])
    # Consecutive instance seeds play consecutive maps (seed % 6).
    assert sum(row["trained_on"] for row in record["maps"]) == min(record["training_instances"], 6)
    assert record["checkpoint_env_step"] > 0
    # The reward probe scores the run's world model on touches without training it.
    reward_probe.main(["--run", str(tmp_path), "--policy", "seek", "--envs", "2", "--steps", "200",
                       "--updates", "2", "--every", "1", "--out", str(tmp_path / "probe")])
    scored = json.loads((tmp_path / "probe.json").read_text())
    assert scored["run"] == str(tmp_path) and scored["checkpoint_env_step"] == record["checkpoint_env_step"]
    assert scored["task"] == "visualmatch_2" and [row["updates"] for row in scored["curve"]] == [1, 2]
    assert all("reward/touches" in row and "loss/reward" in row for row in scored["curve"])
    # It also trains a fresh model on the run's stored steps (the first 80 env steps: 40 per
    # stream) and scores it on held-out seek windows only, as those steps carry no touch marks.
    probe_args = ["--presets", "debug",
                  "--task", "visualmatch_2", "--policy", "seek_middle", "--holdout_policy", "seek",
                  "--envs", "2", "--holdout", "60",
                  "--holdout_batches", "1", "--updates", "2", "--every", "1", "--out", str(tmp_path / "fresh")]
    # (--replay_grow 8: as the run met them, 8 env steps more per update.)
    reward_probe.main(probe_args + ["--replay", str(tmp_path), "--replay_steps", "0:80", "--replay_grow", "8"])
    fresh = json.loads((tmp_path / "fresh.json").read_text())
    assert fresh["replay"] == str(tmp_path) and fresh["replay_streams"] == [2, 40]
    assert fresh["replay_grow"] == 8.0
    assert fresh["holdout"] == [2, 60] and fresh["holdout_policy"] == "seek" and len(fresh["curve"]) == 2
    for row in fresh["curve"]:
        assert "loss/reward" in row and "reward/touches" not in row
        assert "heldout/loss/reward" in row and "heldout/reward/touches" in row
    # Which object the run's episodes touched, read from its stored observations.
    visualmatch_choices.main([str(tmp_path), "--every", "1000", "--out", str(tmp_path / "choices")])
    (window,) = json.loads((tmp_path / "choices.json").read_text())["windows"]
    assert window["episodes"] >= 2 and window["touches"] <= window["episodes"]  # one touch at most each
    if window["touches"]:
        assert abs(window["left"] + window["middle"] + window["right"] - 1.0) < 1e-3
    # A directory without a replay gets one line naming it (in this process: the script's
    # exit message, no traceback), and so does a held-out policy that is not a seek policy.
    with pytest.raises(SystemExit) as stopped:
        reward_probe.main(probe_args + ["--replay", str(tmp_path / "out")])
    assert "has no replay/replay.json" in str(stopped.value.code)
    with pytest.raises(SystemExit) as stopped:
        reward_probe.main(probe_args + ["--policy", "random"])
    assert stopped.value.code == 2 and "both must be seek policies" in capsys.readouterr().err
    # The suite confirms an evaluation at the target on more episodes of the checkpoint
    # (benchmarks/evaluate.py): a success rate with its 95% interval, recorded by its step.
    from benchmarks import suite
    entry = suite.Entry("vm", "visualmatch_2", ("debug",), 1, "success", 0.0, "1/3", "none")
    confirmation = suite.confirm(entry, tmp_path, tmp_path / "out", "vm", episodes=4)
    step = record["checkpoint_env_step"]
    assert confirmation["step"] == step and confirmation["episodes"] == 4 and confirmation["met"]
    assert confirmation["low_95"] <= confirmation["value"] <= confirmation["high_95"]
    assert confirmation["value"] * 4 == round(confirmation["value"] * 4)  # a fraction of 4 episodes
    evaluated = json.loads((tmp_path / "out" / "confirm" / f"vm_confirm_{step}.json").read_text())
    assert evaluated["task"] == "visualmatch_2" and {r["metric"] for r in evaluated["metrics"]} >= {
        "score", "length", "success"}


def start(args):
    return subprocess.Popen(TRAIN + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=environ())


def test_sigkill_mid_training_then_the_same_command_continues_and_a_sigterm_saves_and_exits(tmp_path):
    command = TMAZE + ["--logdir", str(tmp_path), "--run.save_every", "1", "--run.steps", "100000"]
    process = start(command)
    try:
        wait_for(lambda: (tmp_path / "ckpt").is_dir() and (last_checkpoint_step(tmp_path) or 0) > 0, 240,
                 "a checkpoint")
        time.sleep(1.0)
    finally:
        process.kill()
        process.wait()
    killed_at = last_checkpoint_step(tmp_path)
    records = logged(tmp_path)
    replay_steps = records[-1]["replay/steps"] if records else 0

    # The same command continues; 200 env steps on, a SIGTERM saves at the step it stopped and
    # exits cleanly (one process for both checks: every start imports, traces and lowers again).
    def last_logged_step():  # -1 before the first metrics line (the killed run may have written none)
        records = logged(tmp_path)
        return records[-1]["step"] if records else -1

    process = start(command)
    try:
        wait_for(lambda: last_logged_step() >= killed_at + 200, 240, f"env step {killed_at + 200}")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err[-2000:]
    assert "Resuming" in out
    stopped = re.search(r"Stopped by signal at env step (\d+)", out)
    assert stopped, out[-2000:]
    assert last_checkpoint_step(tmp_path) == int(stopped.group(1)) >= killed_at + 200
    records = logged(tmp_path)
    assert records[-1]["replay/steps"] >= replay_steps and any("loss/vector" in m for m in records)


def signal_during_set_up(logdir, signals):
    """Starts a run and sends SIGTERM `signals` times once its replay directory appears: the
    handler is in place before that directory is made, and the model is not yet compiled."""
    process = start(TMAZE + ["--run.steps", "100000", "--logdir", str(logdir)])
    try:
        wait_for(lambda: (logdir / "replay").exists(), 240, "the replay directory", interval=0.02)
        for sent in range(signals):
            if sent:
                time.sleep(0.5)  # two signals at once would reach Python's handler as one
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=240)
    finally:
        process.kill()
    return process.returncode, out, err


def test_sigterm_during_set_up_stops_once_set_up_and_a_second_one_at_once(tmp_path):
    returncode, out, err = signal_during_set_up(tmp_path / "once", 1)
    assert returncode == 0, err[-2000:]
    assert "Stopped by signal at env step 0" in out
    assert last_checkpoint_step(tmp_path / "once") == 0 and (tmp_path / "once" / "config.yaml").is_file()

    returncode, out, err = signal_during_set_up(tmp_path / "twice", 2)
    assert returncode == -signal.SIGTERM and "Stopped by signal" not in out


def test_lfs_run_restores_a_deleted_logdir_and_continues(tmp_path):
    logdir, lfs = tmp_path / "scratch" / "run", tmp_path / "durable"
    args = TMAZE + ["--use_lfs", "True", "--lfs_dir", str(lfs), "--logdir", str(logdir)]
    train(args + ["--run.steps", "200"])
    first = last_checkpoint_step(logdir)
    shutil.rmtree(logdir.parent)
    result = train(args + ["--run.steps", "320"])
    assert "Resuming" in result.stdout
    assert last_checkpoint_step(logdir) >= 320 > first >= 200


# The small overrides, plus a low train ratio: a handful of updates proves training runs.
SMALL = ["--envs.amount", "1", "--run.steps", "120", "--batch_size", "2", "--batch_length", "16",
         "--run.train_ratio", "2", "--jax.compile_cache", str(CACHE)]


def r2i_command(preset, task, name, logdir):
    # The debug sizes after the R2I preset: the command's flags and preset at test cost.
    return ["--configs", preset, "debug", "--task", task, "--wdb_name", name, "--logdir", str(logdir)] + SMALL


@pytest.mark.slow
def test_r2i_readme_memory_maze_command_trains_on_cpu(tmp_path):
    args = r2i_command("mmaze", "gym_memory_maze:MemoryMaze-9x9-v0", "memory_maze_9x9", tmp_path / "run")
    train(args, timeout=600)
    assert any("loss/image" in m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl"))


@pytest.mark.slow
def test_r2i_readme_memory_maze_command_trains_on_two_devices_mirroring_to_lfs(tmp_path):
    # The README's two other flag sets in one run (each Memory Maze run is among the suite's
    # costliest): data parallel over two host devices, and the durable mirror.
    args = r2i_command("mmaze", "gym_memory_maze:MemoryMaze-9x9-v0", "memory_maze_9x9", tmp_path / "run")
    lfs = tmp_path / "durable"
    train(args + ["--jax.train_devices", "0", "1", "--jax.policy_devices", "0",
                  "--use_lfs", "True", "--lfs_dir", str(lfs)], devices=2, timeout=600)
    assert any("loss/image" in m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl"))
    assert list(lfs.rglob("config.yaml")) and list(lfs.rglob("ckpt")), sorted(lfs.rglob("*"))[:20]


@pytest.mark.slow
def test_r2i_readme_popgym_command_trains_on_cpu_and_logs_episodes(tmp_path):
    # Two world-model updates per update: the run replays two batches' rows for each.
    args = r2i_command("popgym", "gym_popgym:popgym-RepeatPreviousEasy-v0", "popgym_repeat_previous_easy",
                       tmp_path / "run")
    train(args + ["--run.model_updates", "2"])
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert any("loss/vector" in m and "loss/model_only" in m for m in metrics)
    scores = read_jsonl(tmp_path / "run" / "scores.jsonl")
    assert scores and all(-1.0 <= s["episode/score"] <= 1.0 for s in scores)


def first_trained_record(logdir):
    return next(m for m in read_jsonl(Path(logdir) / "metrics.jsonl") if "loss/model" in m)


def test_two_host_devices_match_the_one_device_losses_on_the_first_update(tmp_path):
    args = TMAZE + ["--run.steps", "80", "--run.log_every", "0"]
    train(args + ["--logdir", str(tmp_path / "one")])
    train(args + ["--jax.train_devices", "0", "1", "--jax.policy_devices", "0", "--logdir", str(tmp_path / "two")],
          devices=2)
    one, two = first_trained_record(tmp_path / "one"), first_trained_record(tmp_path / "two")
    assert one["step"] == two["step"]
    for key in ("loss/vector", "loss/reward", "loss/cont", "loss/dyn", "loss/rep", "loss/actor", "loss/critic"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key


def test_a_non_finite_loss_stops_naming_it_after_saving_the_last_good_state(tmp_path, monkeypatch):
    import gc

    from recall2imagine import agent as agent_module
    from recall2imagine.config import build_config, validate
    from recall2imagine.run import TrainingError
    from recall2imagine.run import train as run_train

    real_train = agent_module.Agent.train
    calls = []

    def poisoned(self, state, batch, key):
        state, metrics = real_train(self, state, batch, key)
        calls.append(gc.get_freeze_count())
        if len(calls) == 3:
            metrics = dict(metrics, **{"loss/reward": np.float32("nan")})
        return state, metrics

    monkeypatch.setattr(agent_module.Agent, "train", poisoned)
    config = validate(build_config(["debug"], {"task": ["tmaze_passive_5"], "logdir": [str(tmp_path)],
                                              "jax.compile_cache": [str(CACHE)]}))
    with pytest.raises(TrainingError, match=r"loss/reward") as error:
        run_train(config)
    assert "env step" in str(error.value)
    assert last_checkpoint_step(tmp_path) is not None
    # The loop keeps its set-up's objects out of the collector's scans, and hands them back.
    assert calls[0] > 10_000, calls
    assert gc.get_freeze_count() == 0


class CueFollower:
    """A scripted stand-in for the agent in `evaluate`: walks right along a T-Maze corridor and
    turns towards the cue it saw at the start (the optimal policy); counts its policy steps."""

    def __init__(self):
        self.steps = 0

    def initial_carry(self, n):
        return np.zeros(n)

    def policy(self, state, carry, obs, key, mode):
        assert mode == "eval"
        self.steps += 1
        vector = np.asarray(obs["vector"])
        carry = np.where(obs["is_first"], vector[:, 1], carry)  # the cue, seen at the first step
        at_junction = vector[:, 0] == 1
        action = np.where(at_junction, np.where(carry > 0, 1, 3), 0)  # right, else up / down to the cue
        return np.eye(4)[action], carry

    def env_action(self, action):
        return np.asarray(action).argmax(-1)


def test_logged_metrics_average_each_key_over_the_updates_that_report_it():
    from recall2imagine.run import mean_metrics

    # The exploration ensemble's metrics stop when expl.until passes, mid-period.
    means = mean_metrics([{"loss/model": 1.0, "loss/expl": 4.0}, {"loss/model": 3.0}, {"loss/model": 5.0}])
    assert means == {"loss/model": 3.0, "loss/expl": 4.0}
    assert mean_metrics([]) == {}


def test_evaluation_plays_its_episodes_side_by_side_and_scores_each_once():
    from recall2imagine.config import build_config
    from recall2imagine.run import evaluate

    config = build_config(["debug"], {"task": ["tmaze_passive_5"]})
    agent = CueFollower()
    scores = evaluate(agent, None, config, episodes=3, seed=7)
    assert scores["eval/episode/score"] == pytest.approx(1.0)  # every episode paid
    assert scores["eval/episode/length"] == 6
    assert agent.steps == 6  # one policy step serves the three envs (one after another: 20, below)
    agent = CueFollower()
    assert evaluate(agent, None, config, episodes=3, seed=7, envs=1)["eval/episode/score"] == pytest.approx(1.0)
    assert agent.steps == 20  # envs=1: one instance plays them one after another (6, then 1 + 6 after each reset)
    agent = CueFollower()
    evaluate(agent, None, config, episodes=5, seed=7, envs=2)
    assert agent.steps == 20  # shares of 3 and 2 episodes: the longer share sets the steps
    with pytest.raises(ValueError, match="1 <= envs <= episodes"):
        evaluate(CueFollower(), None, config, episodes=2, seed=7, envs=3)
