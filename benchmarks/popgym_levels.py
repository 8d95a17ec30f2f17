"""What a POPGym task pays an agent without memory: the uniform random policy, and the best
open-loop schedule (one fixed answer per step index, the best an agent that remembers nothing
but how many steps have passed can do without looking at the cards).

    python benchmarks/popgym_levels.py                       # the suite's four Easy tasks
    python benchmarks/popgym_levels.py --tasks gym_popgym:popgym-CountRecallEasy-v0 --episodes 2000

In these card tasks the cards dealt do not depend on the actions and a step's reward depends
on that step's answer only, so uniform random answers estimate the mean reward of every
(step index, answer) pair at once. The schedule takes the best answer per step index from
half the episodes and is scored on the other half (fresh seeds), so the reported level is not
inflated by choosing on noise. It matters where counting steps alone beats chance:
CountRecall's answer (how often the queried colour was dealt) is about half the step count,
while RepeatFirst, RepeatPrevious and Autoencode answer a suit a schedule can only guess.
A run whose MMER stays below the schedule's level has not shown memory of the cards.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import env_wrappers  # noqa: E402
from benchmarks.common import RESULTS, run_metadata, write_record  # noqa: E402

TASKS = tuple(f"gym_popgym:popgym-{name}Easy-v0"
              for name in ("RepeatPrevious", "RepeatFirst", "CountRecall", "Autoencode"))


def _play(env, seed: int, answers) -> tuple[list[int], list[float]]:
    """One episode from reset(seed); `answers(t)` gives step t's action. The actions and rewards."""
    env.reset(seed=seed)
    actions, rewards, done = [], [], False
    while not done:
        actions.append(answers(len(actions)))
        _, reward, terminated, truncated, _ = env.step(actions[-1])
        rewards.append(float(reward))
        done = terminated or truncated
    return actions, rewards


def levels(task: str, episodes: int, seed: int = 0) -> dict:
    """Mean episode return of uniform random answers and of the best open-loop schedule, each over
    `episodes` // 2 episodes; the schedule is chosen on the other half."""
    env = env_wrappers.make(task)
    if not hasattr(env.action_space, "n"):
        raise ValueError(f"{task}: popgym_levels needs a Discrete action space, got {env.action_space}")
    n = int(env.action_space.n)
    half = max(1, episodes // 2)
    rng = np.random.default_rng(seed)
    played = [_play(env, seed + episode, lambda t: int(rng.integers(n))) for episode in range(half)]
    sums = np.zeros((max(len(rewards) for _, rewards in played), n))
    counts = np.zeros_like(sums)
    for actions, rewards in played:
        np.add.at(sums, (np.arange(len(rewards)), actions), rewards)
        np.add.at(counts, (np.arange(len(rewards)), actions), 1)
    random_returns = [sum(rewards) for _, rewards in played]
    # An answer never tried at a step is never chosen.
    means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    schedule = means.argmax(axis=1)
    scheduled = [sum(_play(env, seed + half + episode, lambda t: int(schedule[min(t, len(schedule) - 1)]))[1])
                 for episode in range(half)]
    env.close()
    return {"task": task, "episodes_each": half, "steps": len(schedule), "actions": n,
            "random": float(np.mean(random_returns)), "random_se": float(np.std(random_returns) / np.sqrt(half)),
            "schedule": float(np.mean(scheduled)), "schedule_se": float(np.std(scheduled) / np.sqrt(half)),
            "schedule_answers": schedule.tolist()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--episodes", type=int, default=20000,
                        help="episodes per task: half choose the schedule, half score both policies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "popgym_levels")
    args = parser.parse_args(argv)
    if args.episodes < 2:
        parser.error(f"--episodes must be at least 2 (half choose, half score), got {args.episodes}")
    rows = []
    for task in args.tasks:
        row = levels(task, args.episodes, args.seed)
        rows.append(row)
        print(f"{task:45s} random {row['random']:+.3f} (+-{row['random_se']:.3f})   "
              f"open-loop schedule {row['schedule']:+.3f} (+-{row['schedule_se']:.3f})", flush=True)
    meta = run_metadata(["command", "date", "versions"], packages=["python", "popgym", "gymnasium"])
    table = [{k: v for k, v in row.items() if k != "schedule_answers"} for row in rows]
    write_record(args.out, {"meta": meta, "results": rows}, table,
                 comments=["mean episode return without memory: uniform random answers, and the best "
                           "fixed answer per step index chosen on other episodes"])


if __name__ == "__main__":
    main()
