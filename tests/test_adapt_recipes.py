"""The adaptation recipes run through ``textdiff train`` for 2 steps on tiny random causal LMs
(the GPU recipes' Qwen3 / Qwen2 configs, shrunk) and the CPU quickstart on a tiny textdiff AR run."""
from pathlib import Path

import pytest
import yaml

from textdiff.config import load_recipe
from textdiff.lm import DiffusionLM
from textdiff.training.loop import train

from test_adapt_train import make_causal_lm

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHORT = {"max_steps": 2, "batch_size": 2, "grad_accum": 1, "eval_every": 2, "eval_batches": 1, "save_every": 2,
         "log_every": 1, "trackers": [], "mixed_precision": "no", "gradient_checkpointing": False}


def shortened(name, tmp_path, init_from, seq_len=64, **sections):
    raw = yaml.safe_load((RECIPES / name).read_text())
    raw["output_dir"] = str(tmp_path / "run")
    raw["tokenizer"] = {"path": str(init_from)}
    raw["train"] = {**raw["train"], **SHORT, "init_from": str(init_from)}
    if "sft" in raw:
        raw["sft"] = {**raw["sft"], "source": "synthetic", "num_examples": 40, "val_fraction": 0.1}
    else:
        raw["data"] = {"source": "embedded", "seq_len": seq_len, "max_documents": 20, "val_fraction": 0.1}
    raw["data"]["seq_len"] = seq_len
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("name, family", [("adapt-qwen3-0.6b-mdlm.yaml", "qwen3"), ("adapt-qwen3-0.6b-bd3lm.yaml", "qwen3"),
                                          ("adapt-qwen2.5-1.5b-fast-dllm-v2.yaml", "qwen2")])
def test_gpu_recipe_runs_two_steps_on_a_tiny_fixture(tmp_path, name, family):
    folder = make_causal_lm(tmp_path / family, family)
    final = train(load_recipe(raw=shortened(name, tmp_path, folder)))
    lm = DiffusionLM.from_pretrained(final, device="cpu")
    block = lm.process.block_size
    assert block == (None if "mdlm" in name else 32)
    texts = lm.generate(["def"], max_new_tokens=block or 8, steps=4, block_size=block, seed=0)
    assert len(texts) == 1 and isinstance(texts[0], str)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adapt-quickstart.yaml", "adapt-quickstart-bd3lm.yaml"])
def test_cpu_quickstart_adapts_a_textdiff_ar_run(tmp_path, name):
    from conftest import tiny_recipe

    ar = train(load_recipe(raw=tiny_recipe(tmp_path / "ar", process={"name": "ar", "time_conditioning": False},
                                           train={"max_steps": 2, "eval_every": 2, "save_every": 2})))
    raw = shortened(name, tmp_path, ar, seq_len=32, adapt={"anneal_steps": 1})
    raw["adapt"].pop("block_schedule", None)
    raw["train"].pop("max_minutes")
    final = train(load_recipe(raw=raw))
    lm = DiffusionLM.from_pretrained(final, device="cpu")
    assert type(lm.model.hf).__name__ == "TextDiffModel"
    assert lm.score(["def add(a, b):"], t_samples=2)[0] > 0
