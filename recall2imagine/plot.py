"""Learning curves from run directories.

    python -m recall2imagine.plot LOGDIR [LOGDIR ...] -o curves.png [--metric loss/image] [--smooth 0.9]

Default: episode score (scores.jsonl) against env steps, one line per run, and
the greedy evaluation score (`eval/episode/score` in metrics.jsonl) dashed with
markers when present. Episode scores are smoothed (`--smooth`); evaluation points are
drawn as logged, since each is already a mean over `run.eval_eps` episodes and a
smoothed sparse series lags by many evaluations. `--metric KEY` plots any metrics.jsonl key
instead, or a per-episode key of scores.jsonl (`episode/...`, e.g. `episode/success`), smoothed.
`--labels` names the runs in the legend (default: their directory names), e.g. one per core:

    python -m recall2imagine.plot runs/vm runs/vm_gru --labels mimo gru --metric eval/episode/success
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["read_series", "smooth", "plot_runs", "main"]


def read_series(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` from a .jsonl file; lines without the key are skipped."""
    steps, values = [], []
    if not path.exists():
        return np.zeros(0), np.zeros(0)
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue  # a last line cut by a kill mid-write
            raise ValueError(f"{path}:{number} is not valid JSON") from None
        if record.get(key) is not None:
            steps.append(record["step"])
            values.append(record[key])
    return np.asarray(steps, float), np.asarray(values, float)


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard-style); weight 0 keeps the data."""
    out = np.empty_like(values)
    mean, norm = 0.0, 0.0
    for i, value in enumerate(values):
        mean = weight * mean + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out[i] = mean / norm
    return out


def plot_runs(logdirs, output, metric: str | None = None, weight: float = 0.9, title: str | None = None,
              labels=None):
    """Draws one line per run into `output` (PNG/PDF/SVG by extension), named by `labels`
    (one per run; default: the directory names). Returns the figure."""
    logdirs = [Path(logdir) for logdir in logdirs]
    labels = [logdir.name for logdir in logdirs] if labels is None else list(labels)
    if len(labels) != len(logdirs):
        raise ValueError(f"{len(labels)} labels for {len(logdirs)} runs: give one label per run")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = 0
    for logdir, name in zip(logdirs, labels):
        if metric:
            per_episode = metric.startswith("episode/")
            sources = [(logdir / ("scores.jsonl" if per_episode else "metrics.jsonl"), metric, "-")]
        else:
            sources = [(logdir / "scores.jsonl", "episode/score", "-"),
                       (logdir / "metrics.jsonl", "eval/episode/score", "--")]
        color = None
        for path, key, style in sources:
            steps, values = read_series(path, key)
            if not len(steps):
                continue
            # Evaluation points, each already a mean over eval_eps episodes, are drawn as logged.
            raw = style != "-" or key.startswith("eval/")
            (line,) = ax.plot(steps, values if raw else smooth(values, weight), style,
                              marker="o" if raw else None, markersize=3,
                              label=name + (" (eval)" if raw and not metric else ""), color=color)
            color = line.get_color()
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise ValueError(f"No data for {metric or 'episode/score'} in {', '.join(map(str, logdirs))}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(metric or "episode score")
    ax.set_title(title or "", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Plot learning curves of recall2imagine runs.")
    parser.add_argument("logdirs", nargs="+", help="run directories")
    parser.add_argument("-o", "--output", default="curves.png", help="image file to write")
    parser.add_argument("--metric", default=None, help="a metrics.jsonl key (default: episode score)")
    parser.add_argument("--smooth", type=float, default=0.9, help="EMA weight in [0, 1)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--labels", nargs="+", default=None, help="legend names, one per run")
    args = parser.parse_args(argv)
    if not 0 <= args.smooth < 1:
        parser.error(f"--smooth must be in [0, 1), got {args.smooth}")
    missing = [d for d in args.logdirs if not Path(d).is_dir()]
    if missing:
        print(f"error: not a run directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        plot_runs(args.logdirs, args.output, args.metric, args.smooth, args.title, args.labels)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
