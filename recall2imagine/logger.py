"""One logger for a run: metrics.jsonl, scores.jsonl, TensorBoard, optional wandb, console.

Every record carries `step` = environment steps. Files are opened in append mode
so a resumed run continues them.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["Logger"]


def _plain(value):
    """A JSON-ready Python number (non-finite -> None) from numpy/jax scalars."""
    value = np.asarray(value)
    if value.size != 1:
        raise ValueError(f"Only scalars can be logged, got shape {value.shape}")
    value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Logger:
    """Writes scalars and episodes of one run to every enabled output.

    Args:
      logdir: the run directory.
      total_steps: the run's length in env steps, for the progress bar.
      config: the resolved Config; `use_wandb` and `wdb_name` are read from it.
      console: show the rich progress bar and per-period summaries.
      tensorboard: write TensorBoard event files (tensorboardX).
    """

    def __init__(self, logdir, total_steps: int | None = None, config=None, console: bool = True,
                 tensorboard: bool = True):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.logdir / "metrics.jsonl", "a")
        self._scores = open(self.logdir / "scores.jsonl", "a")
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.logdir), flush_secs=30)
        self._wandb = None
        if config is not None and config.use_wandb:
            self._wandb = _start_wandb(config, self.logdir)
        self._console = None
        if console:
            self._console = Console()
            if not self._console.is_terminal:
                # Job logs (clusters, CI) have no terminal width; 80 columns would cut the lines.
                self._console = Console(width=160)
        self._progress = None
        self._task = None
        self._last_score = None
        self._scores_seen: list = []
        if console:
            self._progress = Progress(
                TextColumn("[bold]steps"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=self._console,
                refresh_per_second=2,
            )
            self._task = self._progress.add_task("train", total=total_steps, info="")
            self._progress.start()

    def scalars(self, step: int, metrics: dict) -> None:
        """One line of metrics.jsonl plus TensorBoard/wandb scalars at env step `step`."""
        record = {"step": int(step)}
        record.update({key: _plain(value) for key, value in metrics.items()})
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and value is not None:
                    self._writer.add_scalar(key, value, int(step))
            self._writer.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=int(step))

    def episode(self, step: int, score: float, length: int, success: bool | None = None,
                **outcomes: bool) -> None:
        """One finished training episode: a line of scores.jsonl and the scalars (success and
        other outcomes, e.g. Key-to-Door's key_taken, where the task reports them)."""
        scalars = {"episode/score": float(score), "episode/length": int(length)}
        for name, value in {"success": success, **outcomes}.items():
            if value is not None:
                scalars[f"episode/{name}"] = float(value)
        record = {"step": int(step), **scalars, "episode/score": _plain(score)}
        self._scores.write(json.dumps(record) + "\n")
        self._scores.flush()
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, value, int(step))
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))
        self._last_score = float(score)
        self._scores_seen = (self._scores_seen + [float(score)])[-100:]

    def progress(self, step: int, fps: float | None = None, train_fps: float | None = None) -> None:
        """Moves the console progress bar to env step `step`; fps are env and trained steps per second."""
        if self._progress is None:
            return
        parts = []
        if fps is not None:
            parts.append(f"env {fps:7.1f}/s")
        if train_fps is not None:
            parts.append(f"train {train_fps:8.1f}/s")
        if self._last_score is not None:
            parts.append(f"score {self._last_score:+.3f} (mean {np.mean(self._scores_seen):+.3f})")
        self._progress.update(self._task, completed=int(step), info="  ".join(parts))

    def summary(self, step: int, metrics: dict, keys=None) -> None:
        """One console line for a log period: step and the chosen metrics."""
        if self._console is None:
            return
        keys = keys or list(metrics)
        shown = []
        for key in keys:
            if key in metrics and metrics[key] is not None:
                value = _plain(metrics[key])
                shown.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        self._console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] step {int(step)}  " + "  ".join(shown))

    def message(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        self._metrics.close()
        self._scores.close()


def _start_wandb(config, logdir: Path):
    try:
        import wandb
    except ImportError:
        from recall2imagine.config import ConfigError

        raise ConfigError("use_wandb is True but wandb is not installed: `pip install wandb` or set --use_wandb False.") from None
    # The run id follows the logdir so that a resumed run continues the same wandb run.
    run_id = "r2i-" + hashlib.sha1(str(logdir.resolve()).encode()).hexdigest()[:10]
    return wandb.init(name=config.wdb_name, id=run_id, resume="allow", dir=str(logdir), config=config.to_dict())
