"""What a training run tells its user: setup phases, validation lines, the time-budget bar, plain
progress lines when stderr is not a terminal, the training-curve PNG, missing trackers
(textdiff.training.progress, textdiff.progress)."""
import json
import sys
from pathlib import Path

import pytest

from textdiff.config import load_recipe
from textdiff.training.progress import TrainBar, plot_curves, validation_line


@pytest.mark.slow
def test_a_run_prints_its_phases_validation_and_writes_a_curve_png(tiny, capsys):
    recipe = load_recipe(raw=tiny(train={"max_steps": 6, "eval_every": 3, "trackers": ["wandb"]}))
    from textdiff.training.loop import train

    import importlib.util

    wandb_missing = importlib.util.find_spec("wandb") is None
    train(recipe)
    out = capsys.readouterr().out
    lines = out.splitlines()
    for phase in ("data:", "tokenizer: trained bpe", "model: TextDiffModel"):
        assert sum(line.startswith(phase) for line in lines) >= 1, phase
    val = [json.loads(x) for x in (Path(recipe.output_dir) / "metrics.jsonl").read_text().splitlines() if "val_nelbo" in x]
    printed = [line for line in lines if "validation NELBO" in line]
    assert len(printed) == len(val) == 2  # steps 3 and 6
    assert f"{val[-1]['val_nelbo']:.3f} nats/token" in printed[-1] and "unigram PPL" in printed[0]
    if wandb_missing:
        assert "warning: train.trackers names 'wandb', which is not installed" in out
    png = Path(recipe.output_dir) / "training_curves.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_curve_is_a_one_line_note(tmp_path, monkeypatch, capsys):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 1, "train_loss": 5.0}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert plot_curves(metrics, tmp_path / "c.png") is None
    assert capsys.readouterr().out.strip().count("\n") == 0 and not (tmp_path / "c.png").exists()


def test_under_a_time_budget_the_bar_counts_seconds_to_whichever_end_comes_first(monkeypatch):
    monkeypatch.setenv("TEXTDIFF_PROGRESS", "1")  # the bar, as on a terminal
    bar = TrainBar(True, step=0, max_steps=100_000, max_minutes=2, elapsed=0.0)
    bar.advance(step=10, elapsed=30.0)  # 3 s per step: the budget ends long before max_steps
    assert bar.bar.total == 120 and bar.bar.n == 30
    bar.advance(step=20, elapsed=500.0)
    assert bar.bar.n == 120  # never past the budget
    bar.close()
    short = TrainBar(True, step=0, max_steps=40, max_minutes=30, elapsed=0.0)  # a far safety cap
    short.advance(step=10, elapsed=20.0)  # 2 s per step: 40 steps end at 80 s, not at 1800 s
    assert short.bar.total == 80 and short.bar.n == 20
    short.close()
    steps = TrainBar(True, step=5, max_steps=50, max_minutes=None, elapsed=0.0)
    steps.advance(step=6, elapsed=1.0)
    assert steps.bar.total == 50 and steps.bar.n == 6
    steps.close()


def test_validation_line_reports_the_bound_and_the_ratio():
    line = validation_line({"step": 250, "val_nelbo": 5.0, "val_ppl_bound": 148.4131591}, 300.0)
    assert line == "step 250: validation NELBO 5.000 nats/token, PPL bound 148.4 (unigram PPL 300.0, ratio 0.495)"


def test_a_missing_init_from_folder_is_reported_as_missing(tiny, tmp_path):
    from textdiff.errors import ConfigError
    from textdiff.training.loop import train

    with pytest.raises(ConfigError, match=r"no such train.init_from folder: '.*runs/typo/final' does not exist"):
        train(load_recipe(raw=tiny(train={"init_from": str(tmp_path / "runs/typo/final")})))


@pytest.mark.slow
def test_without_a_terminal_training_prints_plain_lines_not_bar_frames(tiny, tmp_path, capsys, monkeypatch):
    import yaml

    from textdiff.cli import main

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny(train={"max_steps": 6, "eval_every": 3, "log_every": 2, "save_every": 6})))
    monkeypatch.setenv("TEXTDIFF_PROGRESS_EVERY", "0")  # a line at every step: each one can be counted
    assert main(["train", str(recipe)]) == 0
    err = capsys.readouterr().err  # pytest's stderr is not a terminal, as under nohup or SLURM
    assert "\r" not in err  # no bar frames
    lines = [line for line in err.splitlines() if line.startswith("train: step")]
    assert [line.split(",")[0] for line in lines] == [f"train: step {s}/6 ({100 * s / 6:.0f}%)" for s in range(1, 7)]
    assert "loss " in lines[-1] and " tok/s" in lines[-1] and "elapsed" in lines[-1]


def test_a_logged_1200_step_run_writes_one_line_per_interval(monkeypatch, capsys):
    import textdiff.progress

    now = [0.0]
    monkeypatch.setattr(textdiff.progress, "clock", lambda: now[0])
    bar = TrainBar(True, step=0, max_steps=1200, max_minutes=30, elapsed=0.0)  # default interval: 30 s
    assert bar.mode == "lines" and bar.bar is None
    for step in range(1, 1201):  # 150 s of training at 8 steps per second
        now[0] = step / 8
        bar.show(loss=f"{5 - step / 1000:.3f}", tok_s="16,384")
        bar.advance(step, now[0])
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 5  # at 30, 60, 90, 120 and 150 s; the closing line would repeat the last
    assert lines[0] == "train: step 240/1200 (20%), loss 4.760, 16,384 tok/s, 0:30 elapsed, eta 2:00"
    assert lines[-1] == "train: step 1200/1200 (100%), loss 3.800, 16,384 tok/s, 2:30 elapsed"


def test_generate_score_and_eval_progress_lines_count_items_and_eta(monkeypatch, capsys):
    import textdiff.progress
    from textdiff.errors import ConfigError
    from textdiff.progress import Progress

    now = [0.0]
    monkeypatch.setattr(textdiff.progress, "clock", lambda: now[0])
    with Progress(40, "generate", unit="step") as bar:  # not a terminal: lines
        for _ in range(40):
            now[0] += 1.0
            bar.update(1, tokens=64)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["generate: 30/40 step", "generate: 40/40 step"]
    assert "tok/s" in lines[0] and "eta" in lines[0] and "eta" not in lines[1]
    with Progress(2, "eval", unit="row") as bar:  # the last update's line says 100%: no closing repeat
        now[0] += 60
        bar.update(2)
    assert capsys.readouterr().err.splitlines()[0].startswith("eval: 2/2 row (100%)")
    with Progress(3, "score", unit="text") as bar:  # shorter than the interval: silent
        bar.update(3, tokens=10)
    with Progress(3, "score", enabled=False) as bar:  # --quiet
        now[0] += 100
        bar.update(3)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TEXTDIFF_PROGRESS_EVERY", "soon")
    with pytest.raises(ConfigError, match="TEXTDIFF_PROGRESS_EVERY='soon' is not a number of seconds"):
        Progress(3, "score")


def test_validation_line_prints_only_what_means_something_for_the_objective():
    line = {"step": 5, "val_nelbo": 2.0, "val_ppl_bound": 7.389056}
    assert validation_line(line, 300.0, "sft") == "step 5: validation NELBO 2.000 nats/answer token (given the prompts), PPL bound 7.4"
    assert validation_line(line, 300.0, "nll") == "step 5: validation NLL 2.000 nats/token, PPL 7.4 (unigram PPL 300.0, ratio 0.025)"
