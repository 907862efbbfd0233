"""Shared fixtures. Tests run offline on data they build themselves (never the corpora beside the repo)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per xdist worker (and its children): no oversubscription
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import datasets  # noqa: E402

datasets.disable_progress_bars()
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))


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


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """One tiny trained run for the whole session (4 steps, checkpoints 2 and 4, final/), its recipe
    file (output_dir must be given as an override) and the loaded model. Read it, never write to it."""
    from types import SimpleNamespace

    import yaml

    from textdiff.config import load_recipe
    from textdiff.lm import DiffusionLM
    from textdiff.training.loop import train

    base = tmp_path_factory.mktemp("tiny_trained")
    raw = tiny_recipe(base, train={"max_steps": 4, "eval_every": 2, "save_every": 2, "log_every": 2})
    final = train(load_recipe(raw=raw))
    recipe_file = base / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump({**raw, "output_dir": str(base / "unused")}))
    return SimpleNamespace(base=base, run=base / "run", final=final, raw=raw, recipe=recipe_file,
                           lm=DiffusionLM.from_pretrained(final, device="cpu"))
