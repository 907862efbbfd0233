import json
from pathlib import Path

import pytest
import torch

from textdiff.config import load_recipe
from textdiff.errors import ConfigError
from textdiff.training.loop import train


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_model_learns_and_writes_the_run_outputs(tiny):
    recipe = load_recipe(raw=tiny(train={"max_steps": 40, "eval_every": 20}))
    final = train(recipe)
    out = Path(recipe.output_dir)
    lines = metrics(out)
    train_lines = [m for m in lines if "train_loss" in m]
    val_lines = [m for m in lines if "val_nelbo" in m]
    assert train_lines[-1]["train_loss"] < train_lines[0]["train_loss"] - 0.5
    assert "val_unigram_ppl" in val_lines[0] and "val_unigram_ppl" not in val_lines[-1]
    assert val_lines[-1]["val_ppl_bound"] == pytest.approx(torch.tensor(val_lines[-1]["val_nelbo"]).exp().item(), rel=1e-6)
    assert val_lines[-1]["val_nelbo"] < val_lines[0]["val_nelbo"]
    for name in ("config.yaml", "model.safetensors", "textdiff.json", "tokenizer.json"):
        assert (final / name).is_file(), name
    assert (out / "config.yaml").is_file() and (out / "checkpoint-40").is_dir()
    assert not list(out.glob(".tmp-*")), "no temporary folder may be left behind"


@pytest.mark.slow
def test_resume_after_a_stop_gives_the_same_losses(tiny, tmp_path):
    dropout = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "cond_dim": 16, "dropout": 0.1}  # RNG state must resume too
    full = load_recipe(raw=tiny(output_dir=str(tmp_path / "full"), model=dropout))
    train(full)
    cut = load_recipe(raw=tiny(output_dir=str(tmp_path / "cut"), model=dropout))
    train(cut, stop_at=20)  # as if killed after the step-20 checkpoint
    assert not (tmp_path / "cut" / "final").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train(cut)  # the folder holds a run: refuse to start over without --resume
    train(cut, resume=True)
    a = [m for m in metrics(tmp_path / "full") if "train_loss" in m]
    b = [m for m in metrics(tmp_path / "cut") if "train_loss" in m]
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5, abs=1e-6), x["step"]


@pytest.mark.slow
def test_a_different_run_in_the_same_folder_is_refused(tiny):
    train(load_recipe(raw=tiny(train={"max_steps": 2, "eval_every": 2, "save_every": 2})))
    other = load_recipe(raw=tiny(train={"max_steps": 2, "lr": 1e-2}))
    with pytest.raises(ConfigError, match="holds a different run"):
        train(other, resume=True)


@pytest.mark.slow
def test_init_from_fine_tunes_a_saved_model(tiny, tmp_path):
    first = train(load_recipe(raw=tiny(output_dir=str(tmp_path / "a"), train={"max_steps": 10, "eval_every": 10})))
    second = load_recipe(raw=tiny(output_dir=str(tmp_path / "b"), train={"max_steps": 4, "eval_every": 4, "init_from": str(first)}))
    train(second)
    first_val = [m for m in metrics(tmp_path / "a") if "val_nelbo" in m][-1]["val_nelbo"]
    start_val = [m for m in metrics(tmp_path / "b") if "val_nelbo" in m][0]["val_nelbo"]
    assert start_val < first_val + 0.5  # it starts from the trained weights, not from scratch


def test_sequence_length_above_the_model_maximum_is_refused(tiny):
    with pytest.raises(ConfigError, match="exceeds model.max_seq_len"):
        train(load_recipe(raw=tiny(model={"max_seq_len": 16})))


@pytest.mark.slow
def test_gradient_accumulation_matches_a_large_batch(tiny, tmp_path):
    big = load_recipe(raw=tiny(output_dir=str(tmp_path / "big"), train={"max_steps": 3, "batch_size": 8, "eval_every": 3}))
    acc = load_recipe(raw=tiny(output_dir=str(tmp_path / "acc"), train={"max_steps": 3, "batch_size": 4, "grad_accum": 2, "eval_every": 3}))
    train(big)
    train(acc)
    a = [m["train_loss"] for m in metrics(tmp_path / "big") if "train_loss" in m]
    b = [m["train_loss"] for m in metrics(tmp_path / "acc") if "train_loss" in m]
    assert a == pytest.approx(b, rel=1e-4)


@pytest.mark.slow
def test_a_finished_run_leaves_no_model_alive(tiny):
    """train() frees the prepared model (held in reference cycles and by the Accelerator) before it
    returns, so no communication handle of a distributed run is left for interpreter shutdown."""
    import gc

    from textdiff.models.modeling_textdiff import TextDiffModel

    def models() -> dict:
        return {id(o): o for o in gc.get_objects() if isinstance(o, TextDiffModel)}

    gc.collect()
    before = models()  # other tests' models (session fixtures) stay alive
    gc.disable()  # only what train() itself frees counts
    try:
        train(load_recipe(raw=tiny(train={"max_steps": 2, "eval_every": 2, "save_every": 2})))
        left = [m for key, m in models().items() if key not in before]
    finally:
        gc.enable()
    assert left == []
