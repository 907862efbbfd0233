"""Shared fixtures. Tests run offline on data they build themselves (never the corpora beside the repo)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

import datasets  # noqa: E402

datasets.disable_progress_bars()
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def tiny_recipe(tmp_path, **sections) -> dict:
    """A recipe dict small enough to train a few dozen steps in seconds on one CPU core."""
    raw = {
        "name": "tiny",
        "output_dir": str(tmp_path / "run"),
        "tokenizer": {"train": "bpe", "vocab_size": 300},
        "data": {"source": "embedded", "seq_len": 32, "max_documents": 40, "val_fraction": 0.1},
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "cond_dim": 16},
        "process": {"name": "masked"},
        "sampler": {"name": "ancestral"},
        "train": {"max_steps": 30, "batch_size": 8, "lr": 3e-3, "warmup_steps": 5, "eval_every": 10,
                  "eval_batches": 2, "save_every": 10, "log_every": 5, "trackers": [], "seed": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.fixture
def tiny(tmp_path):
    return lambda **sections: tiny_recipe(tmp_path, **sections)
