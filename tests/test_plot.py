"""Learning-curve plots from run directories."""

import json

import numpy as np
import pytest

from recall2imagine.plot import main, plot_runs, read_series, smooth


def write_run(logdir, scores, evals=()):
    logdir.mkdir()
    (logdir / "scores.jsonl").write_text(
        "".join(json.dumps({"step": s, "episode/score": v, "episode/length": 5}) + "\n" for s, v in scores))
    (logdir / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "eval/episode/score": v, "loss/image": 1.0 / s}) + "\n" for s, v in evals))


def test_plot_writes_a_png_with_one_line_per_run(tmp_path):
    write_run(tmp_path / "a", [(10, 0.0), (20, 0.5)], evals=[(20, 0.4)])
    write_run(tmp_path / "b", [(10, 1.0), (20, 1.0)])
    out = tmp_path / "curves.png"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(tmp_path / "a"), "--metric", "loss/image", "-o", str(out)]) == 0


def test_eval_points_are_drawn_as_logged_and_scores_smoothed(tmp_path):
    write_run(tmp_path / "a", [(10, 0.0), (20, 1.0)], evals=[(10, 0.0), (20, 1.0)])
    fig = plot_runs([tmp_path / "a"], tmp_path / "c.png", weight=0.9)
    score, evaluation = fig.axes[0].get_lines()
    assert score.get_ydata()[-1] < 1.0
    assert evaluation.get_ydata().tolist() == [0.0, 1.0]
    assert evaluation.get_label() == "a (eval)"


def test_plot_rejects_missing_dirs_and_unknown_metrics(tmp_path, capsys):
    write_run(tmp_path / "a", [(10, 0.0)])
    assert main([str(tmp_path / "nope")]) == 2
    assert main([str(tmp_path / "a"), "--metric", "loss/none", "-o", str(tmp_path / "x.png")]) == 2
    assert "No data for loss/none" in capsys.readouterr().err


def test_read_series_skips_a_last_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text('{"step": 1, "episode/score": 2.0}\n{"step": 2, "episo')
    steps, values = read_series(path, "episode/score")
    assert steps.tolist() == [1.0] and values.tolist() == [2.0]
    path.write_text('{"step": 1\n{"step": 2, "episode/score": 2.0}\n')
    with pytest.raises(ValueError, match=":1 is not valid JSON"):
        read_series(path, "episode/score")


def test_smoothing_is_a_bias_corrected_ema():
    values = np.array([1.0, 3.0])
    assert smooth(values, 0.0).tolist() == [1.0, 3.0]
    # (0.5*0.5*1 + 0.5*3) / (1 - 0.25)
    assert smooth(values, 0.5)[1] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)


def test_labels_name_the_runs_and_episode_keys_come_from_scores(tmp_path, capsys):
    for name, success in (("a", [0.0, 1.0]), ("b", [1.0, 1.0])):
        write_run(tmp_path / name, [(10, 0.0), (20, 1.0)])
        (tmp_path / name / "scores.jsonl").write_text("".join(
            json.dumps({"step": s, "episode/score": 0.0, "episode/success": v}) + "\n"
            for s, v in zip((10, 20), success)))
    fig = plot_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "c.png", metric="episode/success", weight=0.0,
                    labels=["mimo", "gru"])
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["mimo", "gru"]
    assert lines[0].get_ydata().tolist() == [0.0, 1.0] and lines[1].get_ydata().tolist() == [1.0, 1.0]
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "mimo", "-o", str(tmp_path / "x.png")]) == 2
    assert "1 labels for 2 runs" in capsys.readouterr().err
