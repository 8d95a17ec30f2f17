"""Benchmark scripts that a user runs as they are: the GPU check, at debug sizes on CPU."""

import json
from dataclasses import replace
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"


# The suite's persistent compilation cache for the scripts' own processes (JAX reads these
# variables at import): a second train.py run of the same model loads its programs instead of
# compiling them again.
CACHED = {"JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def gpu_check(*args):
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu", **CACHED)
    return subprocess.run(["bash", str(GPU_CHECK), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_gpu_check_tiny_runs_on_cpu_and_records_device_train_steps_and_popgym(tmp_path):
    out = tmp_path / "gpu"
    result = gpu_check("--tiny", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "backend: cpu" in (out / "device.txt").read_text()
    steps = json.loads((out / "train_step.json").read_text())
    assert {(r["ssm_type"], r["batch_length"]) for r in steps["results"]} == {
        ("mimo", 16), ("gru", 16)}
    assert all(r["train_step_s"] > 0 for r in steps["results"]) and steps["widths"]["ssm.scan"] == "parallel"
    learning = json.loads((out / "learning_popgym_tiny.json").read_text())
    assert learning["task"] == "gym_popgym:popgym-RepeatPreviousEasy-v0"
    assert "--configs popgym debug" in learning["train_command"] and learning["exit_status"] == 0
    assert (out / "runs" / "popgym_tiny" / "config.yaml").is_file()
    assert (out / "summary.txt").read_text().splitlines() == [
        "device: exit 0", "compile, mimo T=16: exit 0", "compile, gru T=16: exit 0", "POPGym RepeatPreviousEasy: exit 0",
        "train step, mimo (parallel scan) and gru: exit 0"]
    # The warm-up pass (compiling while POPGym trains) keeps its own record apart from the timings:
    # compile times only, since it runs nothing on the device the POPGym run is using.
    warmup = json.loads((out / "warmup" / "train_step_mimo_T16.json").read_text())["results"][0]
    assert warmup["compile_only"] and warmup["train_compile_s"] > 0 and "train_step_s" not in warmup
    assert "versions: jax " in (out / "device.txt").read_text()


def test_a_recorded_command_leads_with_the_xla_flags_it_ran_under(monkeypatch):
    from benchmarks.common import command

    argv = ["benchmarks/train_step.py", "--set", "hcam.width=64 2"]
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert command(argv) == f"{Path(sys.executable).name} benchmarks/train_step.py --set 'hcam.width=64 2'"
    monkeypatch.setenv("XLA_FLAGS", "--xla_a=0 --xla_b=false")
    assert command(argv) == ("XLA_FLAGS='--xla_a=0 --xla_b=false' "
                             f"{Path(sys.executable).name} benchmarks/train_step.py --set 'hcam.width=64 2'")
    assert command(["evaluate.py", "run"], module="benchmarks.evaluate").endswith(" -m benchmarks.evaluate run")


def test_train_step_rows_cut_the_batch_at_long_lengths():
    from types import SimpleNamespace

    from benchmarks.train_step import batch_size
    args = SimpleNamespace(batch=4, rows=4096)
    assert [batch_size(length, args) for length in (256, 1024, 4096, 8192)] == [4, 4, 1, 1]
    assert batch_size(8192, SimpleNamespace(batch=4, rows=None)) == 4


def test_train_step_feeds_each_preset_the_observation_its_encoder_reads():
    from benchmarks.train_step import IMAGE, observation_keys, observation_space, synthetic_batch
    from recall2imagine.config import build_config

    assert observation_keys(build_config(["mmaze"])) == ["image"]  # R2I's Memory Maze widths: CNN only
    assert observation_keys(build_config(["debug"])) == ["vector"]
    assert observation_space(["image"])["image"].shape == IMAGE
    batch = synthetic_batch(2, 3, ["image"])
    assert batch["image"].shape == (2, 3, *IMAGE) and batch["image"].dtype == "uint8" and "vector" not in batch


def test_train_step_records_a_failing_setting_and_times_the_others(tmp_path, monkeypatch):
    import benchmarks.train_step as train_step

    def measure(ssm_type, length, args):
        if ssm_type == "gru":
            raise RuntimeError("INTERNAL: the compiler refused\nsecond line")
        return {"ssm_type": ssm_type, "batch_length": length, "batch_size": args.batch, "train_step_s": 0.5,
                "wm_grad_s": 0.25}

    monkeypatch.setattr(train_step, "measure", measure)
    monkeypatch.setattr(sys, "argv", ["train_step.py", "--presets", "debug", "--lengths", "16", "32",
                                      "--cores", "mimo", "gru", "--out", str(tmp_path / "steps")])
    assert train_step.main() == 1
    rows = json.loads((tmp_path / "steps.json").read_text())["results"]
    assert [(r["ssm_type"], r["batch_length"], "error" in r) for r in rows] == [
        ("mimo", 16, False), ("gru", 16, True), ("mimo", 32, False), ("gru", 32, True)]
    assert rows[1]["error"] == "RuntimeError: INTERNAL: the compiler refused"
    assert "error" in (tmp_path / "steps.csv").read_text().splitlines()[0]


def test_train_step_applies_set_overrides_to_every_core_and_refuses_a_bare_key(tmp_path, monkeypatch, capsys):
    import benchmarks.train_step as train_step

    seen = []
    monkeypatch.setattr(train_step, "measure", lambda ssm_type, length, args: seen.append(
        train_step.build_config(args.presets, train_step.set_overrides(args.set))) or {
        "ssm_type": ssm_type, "batch_length": length, "batch_size": args.batch, "train_step_s": 0.5, "wm_grad_s": 0.25})
    argv = ["train_step.py", "--presets", "debug", "--lengths", "16", "--cores", "mimo", "hcam",
            "--out", str(tmp_path / "steps")]
    monkeypatch.setattr(sys, "argv", argv + ["--set", "hcam.width=32", "hcam.heads=2"])
    assert train_step.main() == 0
    assert [(c.hcam.width, c.hcam.heads) for c in seen] == [(32, 2), (32, 2)]
    record = json.loads((tmp_path / "steps.json").read_text())
    assert record["widths"]["overrides"] == ["hcam.width=32", "hcam.heads=2"]
    monkeypatch.setattr(sys, "argv", argv + ["--set", "hcam.width"])
    with pytest.raises(SystemExit) as stopped:
        train_step.main()
    assert stopped.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_train_step_gives_each_world_model_update_its_own_rows(monkeypatch):
    # With run.model_updates 2 a run replays 2 x batch_size rows per update; so does the timing.
    import benchmarks.train_step as train_step

    monkeypatch.setattr(sys, "argv", ["train_step.py", "--presets", "debug", "--batch", "3", "--steps", "1",
                                      "--set", "run.model_updates=2"])
    shapes = []
    monkeypatch.setattr(train_step.Agent, "train",
                        lambda self, state, batch, key: shapes.append(batch["is_first"].shape) or (state, {}))
    row = train_step.measure("mimo", 16, train_step.parse_args())
    assert shapes and set(shapes) == {(6, 16)} and row["batch_size"] == 3


def test_train_step_at_an_update_past_expl_until_times_the_step_without_the_ensemble(monkeypatch):
    import benchmarks.train_step as train_step

    # debug: one env step per update, so expl.until 2 stops the bonus at update 2.
    monkeypatch.setattr(sys, "argv", ["train_step.py", "--presets", "debug", "--steps", "1", "--at-update", "5",
                                      "--set", "expl.scale=1", "expl.until=2"])
    steps = []
    monkeypatch.setattr(train_step.Agent, "train",
                        lambda self, state, batch, key: steps.append(int(state["step"])) or (state, {}))
    row = train_step.measure("mimo", 16, train_step.parse_args())
    assert set(steps) == {5} and row["at_update"] == 5 and row["exploring"] is False


def test_gpu_check_refuses_an_unknown_option():
    result = gpu_check("--huge")
    assert result.returncode == 2 and "unknown option --huge" in result.stderr


SUITE = [sys.executable, str(ROOT / "benchmarks" / "suite.py")]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def processes_naming(text):
    """Pids of the processes whose command line contains `text` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(cmdline.parent.name)
        except OSError:  # the process ended meanwhile
            pass
    return pids


@pytest.mark.slow
def test_suite_stopped_by_sigterm_continues_with_its_minutes_finishes_and_writes_the_scoreboard(tmp_path):
    out, runs = tmp_path / "results" / "suite", tmp_path / "runs"
    args = SUITE + ["--only", "tmaze_passive_50", "--preset", "debug", "--runs", str(runs), "--out", str(out),
                    "--poll", "1"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", **CACHED)
    record_path, board_path = out / "tmaze_passive_50.json", tmp_path / "results" / "SCOREBOARD.md"
    suite = subprocess.Popen(args + ["--minutes", "10"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        # The record is rewritten at every progress line: wait for one that counts env steps.
        while not (record_path.exists() and json.loads(record_path.read_text())["env_steps"] > 0):
            assert suite.poll() is None, suite.communicate()[1][-3000:]
            assert time.time() < deadline, "no progress record within 300 s"
            time.sleep(0.5)
        running = json.loads(record_path.read_text())
        assert running["stopped"] == "running" and not running["finished"] and running["wall_seconds"] > 0
        suite.send_signal(signal.SIGTERM)
        stdout, stderr = suite.communicate(timeout=300)
        assert suite.returncode == 143, stderr[-3000:]
        record = json.loads(record_path.read_text())
        assert record["stopped"] == "interrupted" and not record["finished"]
        assert record["wall_seconds"] >= running["wall_seconds"] and record["env_steps"] >= running["env_steps"]
        assert "rerun the same command to continue" in stdout
        # train.py got the signal too and saved on its way out.
        assert processes_naming(str(runs)) == []
        assert any((runs / "tmaze_passive_50" / "ckpt").iterdir())
        assert "not yet (unfinished)" in board_path.read_text()
    finally:  # a failing check leaves no training behind
        suite.kill()
        for pid in processes_naming(str(runs)):
            os.kill(int(pid), signal.SIGKILL)

    budget = round(record["wall_seconds"] / 60 + 0.2, 2)
    run = lambda: subprocess.run(args + ["--minutes", str(budget)], cwd=ROOT, env=env, capture_output=True,
                                 text=True, timeout=600)
    last_step = lambda: read_jsonl(runs / "tmaze_passive_50" / "metrics.jsonl")[-1]["step"]
    before = last_step()
    # The interrupted entry continues with the minutes it had, for 0.2 minutes more.
    again = run()
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"continuing ({record['wall_seconds'] / 60:.1f} of {budget:g} min used)" in again.stdout, again.stdout[-2000:]
    resumed = json.loads(record_path.read_text())
    assert resumed["finished"] and resumed["stopped"] == "budget" and resumed["metric"] == "greedy success"
    assert resumed["wall_seconds"] >= record["wall_seconds"] + 12 and last_step() > before
    board = board_path.read_text()
    assert "| [tmaze_passive_50](suite/tmaze_passive_50.json) seed 0 |" in board and "Memory-RL" in board
    assert "| no |" in board
    # A finished entry is skipped.
    assert "finished earlier" in run().stdout


def test_suite_continues_an_unfinished_entry_only_from_a_checkpoint(tmp_path, capsys):
    from benchmarks.suite import seconds_to_continue

    record, logdir = {"wall_seconds": 888.0, "finished": False}, tmp_path / "keytodoor_30"
    # No run directory (a fresh clone has the record only), then one without a checkpoint.
    assert seconds_to_continue(record, logdir, "keytodoor_30") == 0.0
    (logdir / "ckpt").mkdir(parents=True)
    assert seconds_to_continue(record, logdir, "keytodoor_30") == 0.0
    assert "14.8 min" in capsys.readouterr().out
    (logdir / "ckpt" / "100").mkdir()
    assert seconds_to_continue(record, logdir, "keytodoor_30") == 888.0
    assert seconds_to_continue({}, logdir, "keytodoor_30") == 0.0


def test_suite_digest_ignores_the_options_of_cores_a_run_does_not_use():
    import dataclasses

    from benchmarks.suite import CPU_SUITE, config_digest
    mimo = next(e for e in CPU_SUITE if e.name == "tmaze_passive_50")
    hcam = next(e for e in CPU_SUITE if e.name == "tmaze_passive_50_hcam")
    assert "hcam" in hcam.args
    with_args = lambda entry, *extra: dataclasses.replace(entry, args=entry.args + extra)
    # An hcam option leaves a mimo run's digest, not an hcam run's; an ssm option the reverse.
    assert config_digest(with_args(mimo, "--hcam.n_layers", "3"), 0) == config_digest(mimo, 0)
    assert config_digest(with_args(hcam, "--hcam.n_layers", "3"), 0) != config_digest(hcam, 0)
    assert config_digest(with_args(hcam, "--ssm.n_layers", "3"), 0) == config_digest(hcam, 0)
    assert config_digest(with_args(mimo, "--ssm.n_layers", "3"), 0) != config_digest(mimo, 0)


def test_scoreboard_rows_name_an_entrys_flags(tmp_path):
    from benchmarks.suite import CPU_SUITE, config_digest, scoreboard
    out = tmp_path / "suite"
    out.mkdir()
    for name in ("tmaze_passive_50", "tmaze_passive_50_hcam"):
        entry = next(e for e in CPU_SUITE if e.name == name)
        record = {"entry": name, "task": entry.task, "seed": 1, "presets": list(entry.presets),
                  "config_digest": config_digest(entry, 1), "score": 0.5, "metric": "greedy success",
                  "target": 0.95, "steps_at_target": None, "finished": True, "confirmations": [],
                  "env_steps": 1000, "wall_seconds": 60.0}
        (out / f"{name}_seed1.json").write_text(json.dumps(record))
    scoreboard(out, tmp_path / "SCOREBOARD.md")
    rows = [line for line in (tmp_path / "SCOREBOARD.md").read_text().splitlines() if "seed 1 |" in line]
    assert rows[0].startswith("| [tmaze_passive_50](suite/tmaze_passive_50_seed1.json) seed 1 | 0.500")
    assert rows[1].startswith("| [tmaze_passive_50](suite/tmaze_passive_50_hcam_seed1.json) `--ssm_type hcam` "
                              "seed 1 | 0.500")
    assert all("| no |" in row for row in rows)  # current digests: no "presets changed since"


def test_suite_lists_the_cpu_entries_with_their_metrics():
    listed = subprocess.run(SUITE + ["--list"], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    for name in ("tmaze_passive_100", "tmaze_passive_50_hcam", "tmaze_active_20", "popgym_repeat_first_easy",
                 "bsuite_memory_len_50", "visualmatch_30", "keytodoor_30"):
        assert name in listed
    # An entry's own train.py flags (the sequence core it compares) are listed with its presets.
    lines = {line.split()[0]: line for line in listed.splitlines() if line.strip()}
    assert "--configs cpu bsuite --ssm_type gru " in lines["bsuite_memory_len_50_gru"]
    assert "--ssm_type" not in lines["bsuite_memory_len_50"]
    assert "MMER >= 0.36" in listed and "bsuite accuracy" in listed
    assert "greedy success rate (final reward collected) >= 0.9" in listed


def test_episodes_splits_a_runs_episodes_into_windows_and_counts_those_that_ended_early(tmp_path):
    from benchmarks.episodes import main

    run = tmp_path / "ballet"
    run.mkdir()
    rows = [{"step": 10, "episode/score": 1.0, "episode/length": 60, "episode/success": 1.0},
            {"step": 90, "episode/score": 0.0, "episode/length": 320, "episode/success": 0.0},
            {"step": 120, "episode/score": 0.0, "episode/length": 70, "episode/success": 0.0},
            {"step": 180, "episode/score": 1.0, "episode/length": 80, "episode/success": 1.0},
            {"step": 260, "episode/score": 0.0, "episode/length": 320, "episode/success": 0.0}]
    (run / "scores.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main([str(run), "--every", "100", "--limit", "320", "--out", str(tmp_path / "episodes")]) == 0
    record = json.loads((tmp_path / "episodes.json").read_text())
    assert [(w["from_step"], w["episodes"], w["success"], w["ended_before_limit"], w["success_of_those"])
            for w in record["windows"]] == [(0, 2, 0.5, 1, 1.0), (100, 2, 0.5, 2, 0.5), (200, 1, 0.0, 0, None)]
    assert record["windows"][0]["mean_length"] == 190.0 and "--limit 320" in record["command"]
    assert [(w["score_above_0"], w["score_zero_0"], w["score_below_0"]) for w in record["windows"]] == [
        (0.5, 0.5, 0.0), (0.5, 0.5, 0.0), (0.0, 1.0, 0.0)]
    assert "key_taken" not in record["windows"][0]
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing")])
    # Training metrics per window: mean, least and greatest; a key never logged is refused.
    logged = [{"step": 50, "expl/bonus": 0.2, "imag/reward": 0.1}, {"step": 70, "expl/bonus": 0.4},
              {"step": 150, "expl/bonus": 1.0}, {"step": 160, "loss/model": 3.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in logged))
    assert main([str(run), "--every", "100", "--metrics", "expl/bonus", "imag/reward",
                 "--out", str(tmp_path / "metrics")]) == 0
    windows = json.loads((tmp_path / "metrics.json").read_text())["windows"]
    assert [(w["expl/bonus"], w["expl/bonus_min"], w["expl/bonus_max"], w["imag/reward"]) for w in windows] == [
        (0.3, 0.2, 0.4, 0.1), (1.0, 1.0, 1.0, None), (None, None, None, None)]
    with pytest.raises(SystemExit):
        main([str(run), "--metrics", "expl/bonuses"])


def test_episode_windows_split_key_to_door_into_taking_the_key_and_opening_the_door():
    from benchmarks.episodes import windows

    rows = [{"step": 5, "episode/score": 6.0, "episode/length": 55, "episode/success": 1.0, "episode/key_taken": 1.0},
            {"step": 6, "episode/score": 1.0, "episode/length": 55, "episode/success": 0.0, "episode/key_taken": 1.0},
            {"step": 7, "episode/score": 2.0, "episode/length": 55, "episode/success": 0.0, "episode/key_taken": 0.0},
            {"step": 8, "episode/score": 3.0, "episode/length": 55, "episode/success": 0.0, "episode/key_taken": 0.0},
            {"step": 15, "episode/score": 3.0, "episode/length": 55, "episode/success": 0.0, "episode/key_taken": 0.0}]
    first, second = windows(rows, every=10)
    assert (first["success"], first["key_taken"], first["success_of_key_taken"]) == (0.25, 0.5, 0.5)
    assert (second["key_taken"], second["success_of_key_taken"]) == (0.0, None)


def test_tmaze_visits_tells_episodes_that_fetched_the_cue_from_those_that_never_looked(tmp_path):
    """Active T-Maze L = 3 through the replay: stream 0 steps left to the oracle and turns to
    the cued goal, stream 1 runs straight to the junction and always turns up."""
    import numpy as np

    import replay
    from benchmarks.tmaze_visits import main
    from env_wrappers import make

    buffer = replay.Replay(tmp_path / "run" / "replay", capacity=64, chunk_size=8, prefetch=0, fsync=False)
    paid_blind = 0
    for worker in (0, 1):
        env = make("tmaze_active_3", seed=worker)
        for episode in range(4):
            obs, _ = env.reset(seed=10 * worker + episode)
            plan = [2, 0, 0, 0, 0, None] if worker == 0 else [0, 0, 0, 1, 1, 1]
            step = {"vector": obs["vector"], "reward": 0.0, "is_first": True, "is_last": False,
                    "is_terminal": False, "action": np.zeros(4, np.float32)}
            for action in plan:
                if action is None:  # turn to the cue seen at the oracle
                    action = 1 if cue > 0 else 3
                obs, reward, terminated, truncated, _ = env.step(action)
                if worker == 0 and action == 2:
                    cue = obs["vector"][1]
                step["action"] = np.eye(4, dtype=np.float32)[action]
                buffer.add(step, worker)
                step = {"vector": obs["vector"], "reward": float(reward), "is_first": False,
                        "is_last": terminated or truncated, "is_terminal": terminated,
                        "action": np.zeros(4, np.float32)}
            assert step["is_last"]
            paid_blind += worker == 1 and reward > 0.5
            buffer.add(step, worker)
    buffer.flush()
    buffer.close()
    rows = main([str(tmp_path / "run"), "--every", "28", "--out", str(tmp_path / "visits")])
    assert [(r["from_step"], r["episodes"], r["saw_cue"], r["cued_goal"], r["cued_goal_when_seen"])
            for r in rows] == [(0, 4, 0.5, 0.5, 1.0), (28, 4, 0.5, 0.5, 1.0)]
    # Stream 0 is paid every time, stream 1's "up" only when the goal was up.
    assert sum(r["success"] * r["episodes"] for r in rows) == 4 + paid_blind
    assert json.loads((tmp_path / "visits.json").read_text())["streams"] == 2
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing")])


def test_learning_trains_the_task_given_instead_of_the_entrys(tmp_path, monkeypatch):
    import benchmarks.learning as learning

    started = []

    class Finished:
        returncode, stderr = 0, None

        def poll(self):
            return 0

    def start_training(configs, task, logdir, extra=()):
        started.append((configs, task, list(extra)))
        return f"train.py --task {task}", Finished()

    monkeypatch.setattr(learning, "start_training", start_training)
    common = ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--minutes", "0.01"]
    assert learning.main(["tmaze", *common]) == 0
    assert learning.main(["tmaze", "--task", "tmaze_passive_100", "--tag", "L100", *common,
                          "--", "--batch_length", "256"]) == 0
    assert started == [(["cpu", "tmaze"], "tmaze_passive_50", []),
                       (["cpu", "tmaze"], "tmaze_passive_100", ["--batch_length", "256"])]
    record = json.loads((tmp_path / "out" / "learning_tmaze_L100.json").read_text())
    assert record["task"] == "tmaze_passive_100" and learning.TASKS["tmaze"]["task"] == "tmaze_passive_50"
    assert record["note"].startswith("tmaze_passive_100, given instead of the entry's tmaze_passive_50")


def test_learning_stopped_by_sigterm_stops_its_training_and_writes_the_record(tmp_path, monkeypatch):
    import benchmarks.learning as learning

    class Running:
        returncode, stderr, terminated = None, None, False

        def poll(self):
            return self.returncode

        def terminate(self):  # train.py saves and exits on SIGTERM
            self.terminated, self.returncode = True, -signal.SIGTERM

        def wait(self, timeout=None):
            return self.returncode

    process = Running()
    monkeypatch.setattr(learning, "start_training", lambda *a, **k: ("train.py", process))
    # The signal arrives while the script waits between two looks at the run.
    monkeypatch.setattr(learning.time, "sleep", lambda seconds: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    code = learning.main(["tmaze", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert code == 143 and process.terminated
    record = json.loads((tmp_path / "out" / "learning_tmaze.json").read_text())
    assert record["interrupted"] and record["budget_minutes"] == 30.0
    assert signal.getsignal(signal.SIGTERM) is before


def test_suite_starts_over_an_entry_whose_presets_changed_and_keeps_the_old_record(tmp_path, monkeypatch, capsys):
    import benchmarks.suite as suite

    entry = next(e for e in suite.CPU_SUITE if e.name == "tmaze_passive_50")
    digest = suite.config_digest(entry, 0)
    assert digest == suite.config_digest(entry, 0)
    assert digest != suite.config_digest(entry, 1)
    assert digest != suite.config_digest(entry, 0, presets=("cpu", "tmaze", "debug"))
    # A key added since, at its neutral default, leaves old digests valid; any other value does not.
    # A changed value of the key's own type (expl.until takes an int, expl.critic a name,
    # expl.inputs a list of names).
    # An HCAM option counts in the digests of HCAM runs only: it is checked on the HCAM entry.
    others = {"expl.critic": ["separate"], "expl.target": ["reward"], "expl.inputs": ["deter", "stoch", "hidden"],
              "hcam.local_positions": ["True"]}
    hcam = next(e for e in suite.CPU_SUITE if e.name == "tmaze_passive_50_hcam")
    hcam_digest = suite.config_digest(hcam, 0)
    for key, neutral in suite.NEUTRAL_DEFAULTS.items():
        subject, before = (hcam, hcam_digest) if key.startswith("hcam.") else (entry, digest)
        given = [str(v) for v in neutral] if isinstance(neutral, list) else [str(neutral)]
        assert suite.config_digest(replace(subject, args=(*subject.args, f"--{key}", *given)), 0) == before
        other = others[key] if key in others else [str(neutral + 3)]
        assert suite.config_digest(replace(subject, args=(*subject.args, f"--{key}", *other)), 0) != before, key
    # train.py is replaced by a process that ends at once: the suite records it as finished.
    started = []

    def fake_training(presets, task, logdir, extra=()):
        started.append(logdir)
        return "train.py", subprocess.Popen([sys.executable, "-c", "pass"], stderr=subprocess.PIPE, text=True)

    monkeypatch.setattr(suite, "start_training", fake_training)
    out, runs = tmp_path / "suite", tmp_path / "runs"
    out.mkdir()
    old = {"entry": entry.name, "seed": 0, "finished": True, "stopped": "target reached", "config_digest": "0ld0ld0ld0ld",
           "date": "2026-11-30T10:00:00+00:00"}
    (out / "tmaze_passive_50.json").write_text(json.dumps(old))
    (out / "tmaze_passive_50.png").write_bytes(b"png")
    (runs / "tmaze_passive_50" / "ckpt").mkdir(parents=True)
    record = suite.run_entry(entry, 0, runs, out, poll=0.01)
    said = capsys.readouterr().out
    assert "presets changed since it ran (config 0ld0ld0ld0ld, now " + digest in said
    assert started == [runs / "tmaze_passive_50"] and record["config_digest"] == digest and record["finished"]
    # Nothing measured is lost: the old record, curve and run directory moved aside.
    assert json.loads((out / "superseded" / "tmaze_passive_50_0ld0ld0ld0ld.json").read_text()) == old
    assert (out / "superseded" / "tmaze_passive_50_0ld0ld0ld0ld.png").read_bytes() == b"png"
    assert (runs / "superseded" / "tmaze_passive_50_0ld0ld0ld0ld" / "ckpt").is_dir()
    assert json.loads((out / "tmaze_passive_50.json").read_text())["config_digest"] == digest
    # Same config and finished: skipped. --rerun: started over, the old one kept under its digest.
    suite.run_entry(entry, 0, runs, out, poll=0.01)
    assert "finished earlier" in capsys.readouterr().out and len(started) == 1
    suite.run_entry(entry, 0, runs, out, poll=0.01, rerun=True)
    assert "--rerun" in capsys.readouterr().out and len(started) == 2
    assert (out / "superseded" / f"tmaze_passive_50_{digest}.json").exists()
    # The scoreboard marks a row whose presets changed since it ran, and only that one.
    stale = dict(json.loads((out / "tmaze_passive_50.json").read_text()), seed=1, config_digest="0ld0ld0ld0ld",
                 chance="a level refined since", published="numbers read since")
    (out / "tmaze_passive_50_seed1.json").write_text(json.dumps(stale))
    board = tmp_path / "SCOREBOARD.md"
    suite.scoreboard(out, board)
    rows = [line for line in board.read_text().splitlines() if line.startswith("| [")]
    assert len(rows) == 2
    assert "presets changed since" not in rows[0] and "presets changed since: rerun" in rows[1]
    # Published numbers and chance levels come from the entry as it is now, not the old record.
    assert all(row.endswith(f"| {entry.published} | {entry.chance} |") for row in rows)


def test_wilson_interval_brackets_the_rate_and_narrows_with_more_episodes():
    from benchmarks.evaluate import wilson_interval

    low, high = wilson_interval(0.5, 100)
    assert abs(low - 0.4038) < 1e-3 and abs(high - 0.5962) < 1e-3
    assert wilson_interval(0.9, 10)[0] < 0.6 < wilson_interval(0.9, 1000)[0]
    assert wilson_interval(1.0, 20)[1] == 1.0 and wilson_interval(0.0, 20)[0] == 0.0
    with pytest.raises(ValueError):
        wilson_interval(0.5, 0)


def test_suite_confirms_an_evaluation_at_the_target_and_trains_on_when_it_falls_short(tmp_path, monkeypatch, capsys):
    import benchmarks.suite as suite

    entry = replace(next(e for e in suite.CPU_SUITE if e.name == "keytodoor_30"), minutes=5)
    out, runs = tmp_path / "suite", tmp_path / "runs"
    out.mkdir()
    logdir = runs / "keytodoor_30"
    started, confirmed = [], []
    # Each train.py segment logs one evaluation at the target (10 episodes) and ends.
    evals = iter([(1000, 0.9), (2000, 1.0)])

    def fake_training(presets, task, logdir, extra=()):
        started.append(list(extra))
        logged = next(evals, None)  # None: a segment that ends with no evaluation
        (logdir / "ckpt" / "1").mkdir(parents=True, exist_ok=True)
        with open(logdir / "metrics.jsonl", "a") as f:
            if logged is not None:
                f.write(json.dumps({"step": logged[0], "eval/episode/success": logged[1]}) + "\n")
        return "train.py", subprocess.Popen([sys.executable, "-c", "pass"], stderr=subprocess.PIPE, text=True)

    # On more episodes the first checkpoint succeeds 55% of the time, the second 93%.
    results = iter([0.55, 0.93])

    def fake_confirm(entry, logdir, out, label, episodes=suite.CONFIRM_EPISODES):
        steps = [json.loads(line)["step"] for line in (logdir / "metrics.jsonl").read_text().splitlines()]
        confirmed.append(steps[-1])
        value = next(results)
        return {"step": steps[-1] + 8, "episodes": episodes, "value": value, "low_95": value - 0.1,
                "high_95": value + 0.05, "met": value >= entry.target}

    monkeypatch.setattr(suite, "start_training", fake_training)
    monkeypatch.setattr(suite, "confirm", fake_confirm)
    record = suite.run_entry(entry, 0, runs, out, poll=0.01)
    # The 0.9 at 1000 was confirmed at 0.55, so training went on; the next one held.
    assert confirmed == [1000, 2000] and len(started) == 2
    assert all(extra[-2:] == ["--run.solved_evals", "0"] for extra in started)
    assert record["finished"] and record["stopped"] == "target reached" and record["steps_at_target"] == 2008
    assert [c["value"] for c in record["confirmations"]] == [0.55, 0.93]
    assert suite.met_column(record) == ("yes (confirmed: 0.930 over 100 greedy episodes at 2,008 env steps, "
                                        "2 tried)")
    # A record that met its target in one evaluation before confirmations existed is confirmed
    # when run again; below the target it trains on within its budget.
    legacy = {**record, "confirmations": None, "steps_at_target": 2000, "wall_seconds": 60.0}
    del legacy["confirmations"]
    assert suite.met_column(legacy) == "yes, in one evaluation (10 episodes; not confirmed on more)"
    (out / "keytodoor_30.json").write_text(json.dumps(legacy))
    results, evals = iter([0.6, 0.7]), iter([(3000, 0.9)])
    capsys.readouterr()
    record = suite.run_entry(entry, 0, runs, out, poll=0.01)
    said = capsys.readouterr().out
    assert "met its target in one evaluation at 2,000 env steps, before confirmations; confirming it" in said
    assert [c["value"] for c in record["confirmations"]] == [0.6, 0.7] and record["steps_at_target"] is None
    assert record["finished"] and record["stopped"].startswith("train.py ended by itself")
    assert suite.met_column(record).startswith("no (best confirmation: 0.700 over 100 greedy episodes at 3,008")
    # Without the run directory's checkpoint an old record cannot be confirmed: it stays as it was.
    shutil.rmtree(runs)
    (out / "keytodoor_30.json").write_text(json.dumps(legacy))
    assert suite.run_entry(entry, 0, runs, out, poll=0.01) == json.loads(json.dumps(legacy))
    assert "holds no checkpoint to confirm it" in capsys.readouterr().out


def test_tmaze_junction_reads_the_policy_and_the_predictions_of_episodes_on_time():
    """An untrained agent on passive T-Maze L = 1: the episodes whose first move went right
    stand on the junction at the last step; their rows hold a distribution, a continuation
    probability, and the cued-turn split only where a turn can be the cued one."""
    import numpy as np

    from benchmarks.tmaze_junction import ACTIONS, junction_beliefs
    from env_wrappers import make_vector
    from recall2imagine.agent import Agent
    from recall2imagine.config import build_config

    config = build_config(["debug"], {"task": "tmaze_passive_1"})
    env = make_vector(config.task, 1, seed=0, parallel=False)
    agent = Agent(env.obs_space, env.act_space, config)
    env.close()
    beliefs = junction_beliefs(agent, agent.init(0), config, 32, seed=3)
    rows = {row["action"]: row for row in beliefs["rows"]}
    assert tuple(rows) == ACTIONS and 0 < beliefs["on_time"] < 32  # right first: 1/4 of episodes
    assert sum(row["policy"] for row in rows.values()) == pytest.approx(1.0, abs=1e-3)
    for name, row in rows.items():
        assert 0.0 <= row["cont"] <= 1.0 and np.isfinite(row["next_value"])
        turn = name in ("up", "down")
        assert (row["reward_cued_turn"] is None) == (not turn)
        assert row["reward_other"] is not None or turn


def test_keytodoor_cells_tells_a_fixed_route_from_where_the_key_lies():
    """A policy that always walks north takes the key only when it starts below the gap in
    the key's column: the script's per-cell rates and its fixed-route share must say so."""
    import numpy as np

    from benchmarks.keytodoor_cells import play, summarise
    from recall2imagine.config import build_config

    class North:
        def initial_carry(self, n):
            return None

        def policy(self, state, carry, inputs, key, mode):
            assert mode == "eval" and inputs["is_first"].shape == (1,)
            return np.eye(4, dtype=np.float32)[[0]], carry

        def env_action(self, action):
            return action.argmax(-1)

    config = build_config(["cpu", "keytodoor"], {"task": "keytodoor_2"})
    # A carry that counts the policy's steps and a stand-in critic that reads it: the apple
    # room's first observation is the 16th (after the key room's 15 moves), the door room's
    # the 18th (L = 2).
    class Counting(North):
        def initial_carry(self, n):
            return 0

        def policy(self, state, carry, inputs, key, mode):
            return super().policy(state, carry, inputs, key, mode)[0], carry + 1

    episodes = [play(North(), None, config, seed) for seed in range(40)]
    counted = [play(Counting(), None, config, seed, float) for seed in range(40)]
    assert all(e["values"] == {} for e in episodes)
    assert all(e["values"] == {1: 16, 2: 18} for e in counted)
    assert [e["taken"] for e in counted] == [e["taken"] for e in episodes]
    critic = summarise(counted)["critic_first_step"]
    assert critic == {"apples_key": 16.0, "apples_no_key": 16.0, "apples_gap": 0.0,
                      "door_key": 18.0, "door_no_key": 18.0, "door_gap": 0.0}
    for e in episodes:
        under_gap = 4 <= e["start"][1] <= 6  # the middle wall's gap: columns 4-6
        assert e["taken"] == (under_gap and e["key"][1] == e["start"][1])
        assert e["success"] == e["taken"] and len(e["moves"]) == 15 and set(e["moves"]) == {0}
        assert e["end"] == ((1, e["start"][1]) if under_gap else (4, e["start"][1]))
        assert (e["step_taken"] is not None) == e["taken"]
    summary = summarise(episodes)
    assert summary["critic_first_step"] == {"apples_key": None, "apples_no_key": None,
                                            "door_key": None, "door_no_key": None}
    assert summary["on_the_start_cells_route"] == 1.0
    assert summary["key_taken"] == round(np.mean([e["taken"] for e in episodes]), 4)
    outer = [row for row in summary["key_cells"] if row["key"].endswith((",3", ",7"))]
    assert outer and all(row["key_taken"] == 0.0 for row in outer)
    assert sum(row["episodes"] for row in summary["start_cells"]) == 40


def test_popgym_levels_finds_count_recalls_step_count_level_and_none_where_only_a_suit_is_guessed(tmp_path):
    from benchmarks.popgym_levels import main

    main(["--tasks", "gym_popgym:popgym-CountRecallEasy-v0", "gym_popgym:popgym-RepeatPreviousEasy-v0",
          "--episodes", "600", "--out", str(tmp_path / "levels")])
    count, suit = json.loads((tmp_path / "levels.json").read_text())["results"]
    assert (count["steps"], count["actions"]) == (51, 27)
    # Answering about half the step count beats random answers by far; a suit cannot be scheduled.
    assert count["schedule"] > count["random"] + 0.2
    assert abs(suit["schedule"] - suit["random"]) < 0.1 and abs(suit["random"] + 0.5) < 0.1
    assert (tmp_path / "levels.csv").read_text().startswith("# mean episode return")
    with pytest.raises(SystemExit):
        main(["--episodes", "1", "--out", str(tmp_path / "none")])


def test_loop_speed_reads_the_steady_periods_of_a_run_and_refuses_a_run_too_short():
    from benchmarks import loop_speed

    metrics = [{"step": 500, "fps/env": 10.0, "fps/train": 100.0},  # the compilation's period
               {"step": 900, "loss/reward": 0.3},
               {"step": 1500, "fps/env": 120.0, "fps/train": 900.0},
               {"step": 2500, "fps/env": 100.0, "fps/train": 800.0},
               {"step": 3000, "fps/env": 130.0, "fps/train": 1000.0}]
    figures = loop_speed.loop_figures(metrics)
    assert figures == {"periods": 3, "env_steps_per_s": 120.0, "replayed_steps_per_s": 900.0}
    assert loop_speed.loop_figures(metrics[:1])["env_steps_per_s"] == 10.0  # one period: all there is
    with pytest.raises(ValueError, match="no fps/env"):
        loop_speed.loop_figures(metrics[1:2])
    with pytest.raises(SystemExit):
        loop_speed.parse_args(["--steps", "0"])


def test_gc_time_times_every_collection_of_a_training_run(tmp_path):
    from benchmarks.gc_time import main

    assert main(["--presets", "debug", "--task", "tmaze_passive_5", "--steps", "100",
                 "--out", str(tmp_path / "gc")]) == 0
    record = json.loads((tmp_path / "gc.json").read_text())
    rows = record["generations"]
    assert [row["generation"] for row in rows] == [0, 1, 2]
    assert rows[0]["collections"] > 0  # a run allocates far more than gen 0's threshold
    assert record["gc_seconds"] == pytest.approx(sum(row["seconds"] for row in rows), abs=1e-3)
    assert 0 < record["gc_seconds"] < record["wall_s"]
    assert record["env_steps"] == 100 and "--run.steps 100" in record["train_command"]
    with pytest.raises(SystemExit):
        main(["--repo", str(tmp_path), "--out", str(tmp_path / "none")])


def test_hcam_read_times_the_dense_and_the_gathered_read_and_finds_them_equal(tmp_path):
    from benchmarks import hcam_read
    out = tmp_path / "read"
    hcam_read.main(["--presets", "debug", "--batch", "2", "--lengths", "24", "--steps", "1",
                    "--set", "hcam.chunk=4", "hcam.top_k=2", "--out", str(out)])
    record = json.loads(out.with_suffix(".json").read_text())
    (row,) = record["results"]
    assert row["dense_s"] > 0 and row["gather_s"] > 0 and not row["auto_gathers"]
    assert row["grad_gap"] < 1e-4 and row["loss_gap"] < 1e-5
    assert record["hcam"]["chunk"] == 4 and "hcam_read.py" in record["command"]


def test_visualmatch_choices_finds_each_touch_and_its_place_from_the_stored_observations():
    import numpy as np

    from benchmarks.reward_probe import collect
    from benchmarks.visualmatch_choices import touches, windows
    from env_wrappers import make_vector
    from env_wrappers.memory_rl import COLOURS

    # The seek walk touches one object per episode, drawn at random; its marks say which.
    env = make_vector("visualmatch_3", 2, seed=0)
    games = [e.unwrapped for e in env.env.envs]
    data = collect(env, 300, ("vector", "action", "reward", "is_first", "is_terminal"), 4, "seek", seed=0)
    env.close()
    found = {}
    for w, game in enumerate(games):
        stream = {k: data[k][w] for k in ("vector", "action", "reward", "is_first")}
        stream["start"] = 0
        found[w] = touches(stream, game.object_colours, 5.0)
        marked = np.flatnonzero(data["touch"][w])  # the step after each touching move
        assert [t["position"] + 1 for t in found[w]] == marked.tolist()
        assert [t["place"] for t in found[w]] == [game.object_colours.index(COLOURS[c])
                                                   for c in data["touched"][w][marked]]
        assert [t["paid"] for t in found[w]] == (data["reward"][w][marked] == 5.0).tolist()
        # A final reward that follows no touch means the steps are not Visual Match's.
        stream["reward"] = stream["reward"].copy()
        stream["reward"][0] = 5.0
        with pytest.raises(ValueError, match="follow no touch"):
            touches(stream, game.object_colours, 5.0)
        # A replay past replay_size keeps a stream from inside an episode (here from the
        # step its first touch paid or not): that episode's tail is left out, the rest found.
        cut = int(marked[0])
        tail = {k: data[k][w][cut:] for k in ("vector", "action", "reward", "is_first")}
        tail["start"] = cut
        assert touches(tail, game.object_colours, 5.0) == found[w][1:]
    places = {t["place"] for f in found.values() for t in f}
    assert places == {0, 1, 2}
    episodes = {w: np.flatnonzero(data["is_first"][w]) for w in found}
    (row,) = windows(found, episodes, 600)
    assert row["touches"] == sum(len(f) for f in found.values()) and row["episodes"] == sum(map(len, episodes.values()))
    assert abs(row["left"] + row["middle"] + row["right"] - 1.0) < 1e-3 and row["best_for_places_tried"] == 1.0
    # Only the middle place touched: the best a memory can do then is 1/3.
    middle = {w: [dict(t, place=1) for t in f] for w, f in found.items()}
    assert windows(middle, episodes, 600)[0]["best_for_places_tried"] == round(1 / 3, 4)


def test_reward_probe_replay_grow_samples_the_steps_the_run_had_stored_at_each_update():
    from benchmarks.reward_probe import steps_met

    # The visualmatch preset on a CPU: 512 steps before training, 512 / 64 = 8 per update, 4 envs.
    assert steps_met(0, 512, 8, 4, 60000, 128) == (512 + 8) // 4
    assert steps_met(0, 0, 8, 4, 60000, 128) == 129  # at least one window
    assert steps_met(999, 512, 8, 4, 60000, 128) == (512 + 8000) // 4
    assert steps_met(10 ** 6, 512, 8, 4, 60000, 128) == 60000  # never past the stored steps
    assert steps_met(99, 0, 2.5, 2, 1000, 16) == 125


def test_reward_probe_seek_touches_one_object_per_episode_and_scores_only_touches_with_their_cue():
    import numpy as np

    from benchmarks.reward_probe import collect, touch_metrics, touch_predictions
    from env_wrappers import make_vector
    from env_wrappers.memory_rl import COLOURS

    env = make_vector("visualmatch_3", 4, seed=0)
    data = collect(env, 400, ("vector", "reward", "is_first", "is_terminal"), 4, "seek", seed=0)
    env.close()
    touch, reward, step = data["touch"], data["reward"], data["episode_step"]
    # Episodes of 3 + 30 steps: the walk reaches an object in the final 15 steps of each one.
    ends = np.flatnonzero(data["is_last"][0])
    starts = np.flatnonzero(data["is_first"][0])
    for begin, end in zip(starts, ends):
        assert touch[0, begin:end + 1].sum() == 1
    assert (step[touch] >= 15 + 3).all() and (step[touch] <= 33).all()
    # +5 comes only with a touch, and the objects are drawn at random: some match, most do not.
    assert set(reward[touch].tolist()) == {0.0, 5.0}
    assert not ((reward == 5.0) & ~touch).any()
    assert 0.15 < (reward[touch] == 5.0).mean() < 0.55
    # The touched object's colour and the episode's cue, for the probe's synthetic rules.
    assert ((data["touched"][touch] == data["cue"][touch]) == (reward[touch] == 5.0)).all()
    assert (data["touched"][~touch] == -1).all() and set(data["cue"][touch].tolist()) == {0, 1, 2}

    # A window that starts after the cue's 15 steps holds no memory to score.
    marks = {"touch": touch[:, :40], "episode_step": step[:, :40]}
    rows = touch_predictions(marks, reward[:, :40], np.where(reward[:, :40] > 0, 4.0, 1.0))
    assert len(rows) == touch[:, :40].sum()
    late = {"touch": touch[:, 20:60], "episode_step": step[:, 20:60]}
    kept = touch_predictions(late, reward[:, 20:60], np.zeros((4, 40)))
    assert len(kept) == (touch[:, 20:60] & (step[:, 20:60] - np.arange(40) < 15)).sum() < touch[:, 20:60].sum()
    metrics = touch_metrics(np.array([[5.0, 4.0], [0.0, 1.0], [0.0, 3.0]]), 5.0)
    assert metrics["reward/touch_gap"] == 2.0 and abs(metrics["reward/touch_accuracy"] - 2 / 3) < 1e-4

    # seek_apples walks to the nearest apple in the middle room (40-step episodes at L = 10):
    # an apple every two or three steps there, where the random walk finds few.
    middle = {}
    for policy in ("seek", "seek_apples"):
        env = make_vector("visualmatch_10", 2, seed=0)
        walked = collect(env, 350, ("vector", "reward", "is_first", "is_terminal"), 4, policy, seed=0)
        env.close()
        in_middle = (walked["episode_step"] >= 15) & (walked["episode_step"] < 25)
        middle[policy] = walked["reward"][in_middle].mean()
        assert walked["touch"].sum() >= 2 * 8  # still one touch in each of the 8 whole episodes
    assert middle["seek_apples"] > 0.3 > 2 * middle["seek"]
    # seek_middle touches the middle object only.
    env = make_vector("visualmatch_3", 2, seed=0)
    games = [e.unwrapped for e in env.env.envs]
    walked = collect(env, 200, ("vector", "reward", "is_first", "is_terminal"), 4, "seek_middle", seed=0)
    env.close()
    for w, game in enumerate(games):
        colours = walked["touched"][w][walked["touch"][w]]
        assert len(colours) >= 5 and {game.object_colours.index(COLOURS[c]) for c in colours} == {1}

    tmaze = make_vector("tmaze_passive_5", 1, seed=0)
    with pytest.raises(ValueError, match="Visual Match"):
        collect(tmaze, 5, ("vector", "reward", "is_first", "is_terminal"), 4, "seek_apples")
    tmaze.close()


def test_offset_recall_asks_for_the_suit_k_steps_back_in_the_same_episode_and_records_each_core(tmp_path):
    import numpy as np

    from benchmarks import offset_recall

    suits, reset, estep = offset_recall.batch(np.random.default_rng(0), 8, 40, 13)
    assert reset[0].all() and (reset == (estep == 0)).all()
    # Episode steps count up by one between starts; inside the window episodes start 13 steps
    # apart, the first within 13 steps of the window's start (its episode began before it).
    assert ((np.diff(estep, axis=0) == 1) | reset[1:]).all()
    for b in range(8):
        starts = np.nonzero(reset[1:, b])[0] + 1
        assert starts[0] <= 13 and (np.diff(starts) == 13).all()
    target, scored = offset_recall.targets(suits, estep, 4, first=False)
    for t, b in zip(*np.nonzero(scored)):
        assert estep[t, b] >= 4 and target[t, b] == suits[t - 4, b]
    assert not scored[estep < 4].any()
    first, scored = offset_recall.targets(suits, estep, 0, first=True)
    for t, b in zip(*np.nonzero(scored)):
        assert first[t, b] == suits[t - estep[t, b], b] and estep[t, b] >= 1

    # The reward rule's form: an action that is the recalled suit half of the time, never another one.
    action, answer = offset_recall.match_actions(np.random.default_rng(1), target)
    assert (answer == (action == target)).all() and 0.45 < answer.mean() < 0.55

    offset_recall.main(["--presets", "debug", "--cores", "hcam", "--offsets", "4", "0", "--updates", "4",
                        "--every", "2", "--out", str(tmp_path / "recall")])
    record = json.loads((tmp_path / "recall.json").read_text())
    assert [(r["core"], r["offset"], r["first"]) for r in record["results"]] == [("hcam", 4, False), ("hcam", 0, True)]
    assert all([row["updates"] for row in r["curve"]] == [2, 4] for r in record["results"])
    assert all(0.0 <= r["final_accuracy"] <= 1.0 for r in record["results"]) and record["chance"] == 0.25
