"""Learning benchmark: train one task on this machine for a wall-time budget and record the curve.

    python benchmarks/learning.py tmaze    [--minutes 30] [-- extra train.py args]
    python benchmarks/learning.py popgym   [--minutes 60]
    python benchmarks/learning.py tmaze --tag expl -- --expl.scale 1   (a variant, kept apart)
    python benchmarks/learning.py tmaze --task tmaze_passive_100 --tag L100   (another task)
    python benchmarks/learning.py popgym --configs popgym --out benchmarks/results/gpu  (GPU preset)

Runs train.py in a subprocess and watches two measures of the return:
- training episodes (scores.jsonl): the mean of the last `--window` episodes, its
  best value over the run (MMER: max over training of the mean episodic return,
  POPGym's metric) and its final value;
- greedy evaluation (`eval/episode/score` in metrics.jsonl, every `run.eval_every`
  env steps): best and last. T-Maze is scored this way, as in Memory-RL: training
  actions are sampled with the actor's 1% uniform mix, so a perfect walker still
  strays from a 50-step corridor in about 30% of sampled episodes.
It records when the task's measure first reaches the target (env steps and wall
seconds). Writes `benchmarks/results/learning_<name>[_<tag>].json`
and a PNG of the curve next to it. The run directory is kept under
`benchmarks/runs/<name>[_<tag>]` (ignored by git) and is resumed if it exists.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import EVAL_KEYS, RESULTS, Interrupted, raise_interrupted, read_jsonl, run_metadata, start_training, write_record  # noqa: E402

TASKS = {
    "tmaze": {"configs": ["cpu", "tmaze"], "task": "tmaze_passive_50", "target": 0.95, "measure": "eval",
              "note": "passive T-Maze, corridor 50; a memoryless agent gets 0.5"},
    "popgym": {"configs": ["popgym", "popgym_cpu"], "task": "gym_popgym:popgym-RepeatPreviousEasy-v0", "target": 0.9,
               "measure": "train", "note": "POPGym RepeatPreviousEasy; random -0.5, R2I published ~0.8"},
    "visualmatch": {"configs": ["cpu", "visualmatch"], "task": "visualmatch_30", "target": 0.9, "measure": "success",
                    "note": "Visual Match, distractor phase 30; greedy success, memoryless 1/3"},
    "keytodoor": {"configs": ["cpu", "keytodoor"], "task": "keytodoor_30", "target": 0.9, "measure": "success",
                  "note": "Key-to-Door, distractor phase 30; greedy success (key taken, door reached)"},
    # cpu after ballet: CPU widths; sequences of 128 steps hold the 62-frame dance and a quick choice.
    "ballet": {"configs": ["ballet", "cpu"], "task": "ballet_2_delay16", "target": 0.9, "measure": "success",
               "extra": ["--envs.obs", "symbolic", "--batch_length", "128"],
               "note": "Ballet 2 dancers, delay 16, symbolic observation; greedy success, chance 0.5"},
}
# The measures: "train" (mean of the last --window training episodes) or a key of EVAL_KEYS.


def read_evals(logdir: Path) -> list[dict]:
    """The greedy evaluation rows of metrics.jsonl (step, eval/episode/score)."""
    return [row for row in read_jsonl(logdir / "metrics.jsonl") if EVAL_KEYS["eval"] in row]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(TASKS))
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--window", type=int, default=100, help="episodes in the moving mean")
    parser.add_argument("--tag", default="", help="variant name: run directory and results get a _TAG suffix")
    parser.add_argument("--fresh", action="store_true", help="delete an existing run directory first")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="presets instead of the task's (which include cpu)")
    parser.add_argument("--task", default=None,
                        help="task string instead of the entry's (e.g. tmaze_passive_100 for tmaze)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON and PNG")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs",
                        help="parent of the run directory")
    given = list(sys.argv[1:] if argv is None else argv)
    extra = given[given.index("--") + 1:] if "--" in given else []
    args = parser.parse_args(given[:given.index("--")] if "--" in given else given)
    args.extra = extra
    spec = dict(TASKS[args.name])
    if args.task:
        spec["note"] = f"{args.task}, given instead of the entry's {spec['task']} ({spec['note']})"
        spec["task"] = args.task
    label = f"{args.name}_{args.tag}" if args.tag else args.name
    logdir = args.runs / label
    if args.fresh and logdir.exists():
        import shutil

        shutil.rmtree(logdir)
    configs = args.configs or spec["configs"]
    earlier = read_jsonl(logdir / "scores.jsonl")  # a resumed run: what it had before this call
    start = time.time()
    command, process = start_training(configs, spec["task"], logdir, spec.get("extra", []) + args.extra)
    print("running:", command, flush=True)
    reached = None
    best = float("-inf")
    scores: list[dict] = []
    evals_before = len(read_evals(logdir))

    def check(measure, value, step):
        nonlocal reached
        if reached is None and spec["measure"] == measure and value >= spec["target"]:
            reached = {"env_steps": step, "wall_seconds": round(time.time() - start, 1), "measure": measure}
            print(f"target {spec['target']} reached: {reached}", flush=True)

    interrupted = False
    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        while process.poll() is None and time.time() - start < args.minutes * 60:
            time.sleep(5)
            scores = read_jsonl(logdir / "scores.jsonl")
            if len(scores) >= args.window:
                mean = sum(s["episode/score"] for s in scores[-args.window:]) / args.window
                best = max(best, mean)
                check("train", mean, scores[-1]["step"])
            for row in read_evals(logdir)[evals_before:]:
                for measure, key in EVAL_KEYS.items():
                    if key in row:
                        check(measure, row[key], row["step"])
    except (Interrupted, KeyboardInterrupt):
        # train.py is this script's child: without this it would train on, unseen.
        interrupted = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the save short
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: the run saves and exits
            process.wait(timeout=300)
        signal.signal(signal.SIGTERM, previous)
    stderr = process.stderr.read() if process.stderr else ""
    scores = read_jsonl(logdir / "scores.jsonl")
    window = scores[-args.window:]
    final = sum(s["episode/score"] for s in window) / max(len(window), 1)
    rows = read_evals(logdir)
    evals, successes = ([(row["step"], round(row[key], 4)) for row in rows if key in row]
                        for key in (EVAL_KEYS["eval"], EVAL_KEYS["success"]))
    result = {
        "task": spec["task"], "note": spec["note"], "target": spec["target"], "measure": spec["measure"],
        "reached": reached,
        "best_mean_score": None if best == float("-inf") else round(best, 4), "final_mean_score": round(final, 4),
        "best_eval_score": max((v for _, v in evals), default=None),
        "last_eval_score": evals[-1][1] if evals else None, "eval_curve": evals,
        **({"best_eval_success": max(v for _, v in successes), "last_eval_success": successes[-1][1],
            "eval_success_curve": successes} if successes else {}),
        "window_episodes": args.window, "episodes": len(scores), "env_steps": scores[-1]["step"] if scores else 0,
        "wall_seconds": round(time.time() - start, 1), "budget_minutes": args.minutes,
        "interrupted": interrupted,
        "resumed_at_env_step": earlier[-1]["step"] if earlier else 0, "resumed_at_episode": len(earlier),
        **run_metadata(["command"], argv=["benchmarks/learning.py", *given]),
        "train_command": command,
        **run_metadata(["date", "cpus", "machine"]),
        "exit_status": process.returncode, "stderr_tail": stderr[-1500:] if process.returncode else "",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_record(args.out / f"learning_{label}", result)
    if scores:
        from recall2imagine.plot import plot_runs

        plot_runs([logdir], args.out / f"learning_{label}.png", title=f"{spec['task']}\n{spec['note']}")
        if successes:
            plot_runs([logdir], args.out / f"learning_{label}_success.png", metric=EVAL_KEYS["success"],
                      title=f"{spec['task']}: greedy evaluation success\n{spec['note']}")
    print(json.dumps(result, indent=2))
    if interrupted:
        print(f"interrupted after {result['wall_seconds'] / 60:.1f} min; the run saved its state: "
              "the same command without --fresh continues it", file=sys.stderr)
        return 143
    if process.returncode:
        print(f"error: training exited with status {process.returncode} (stderr_tail in the record)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
