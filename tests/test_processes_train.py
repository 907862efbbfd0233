"""Every new family trains through the one training loop from a tiny recipe (only the process section
changes), saves, reloads with its process, and scores / samples through its own sampler."""
from __future__ import annotations

import json
import math

import pytest
import torch

from textdiff.config import load_recipe
from textdiff.generation import generate


@pytest.mark.parametrize("process,sampler", [
    ({"name": "sedd_absorb"}, "analytic"),
    ({"name": "sedd_uniform", "time_conditioning": True}, "euler"),
    ({"name": "uniform", "time_conditioning": True}, "ancestral"),
    ({"name": "ar"}, "ancestral"),
])
@pytest.mark.slow
def test_family_trains_saves_and_samples(tiny, process, sampler):
    from textdiff.lm import DiffusionLM
    from textdiff.training.loop import train

    recipe = load_recipe(raw=tiny(process=process, sampler={"name": sampler},
                                  train={"max_steps": 4, "eval_every": 4, "save_every": 4, "log_every": 2}))
    final = train(recipe)
    lines = [json.loads(x) for x in (final.parent / "metrics.jsonl").read_text().splitlines()]
    val = [x["val_nelbo"] for x in lines if "val_nelbo" in x]
    train_loss = [x["train_loss"] for x in lines if "train_loss" in x]
    assert val and all(math.isfinite(v) and v > 0 for v in val + train_loss)
    lm = DiffusionLM.from_pretrained(str(final))
    assert lm.process.config.name == process["name"]
    assert lm.model.config.attention == ("causal" if process["name"] == "ar" else "bidirectional")
    assert bool(lm.model.config.time_conditioning) == bool(process.get("time_conditioning", False))
    start = [lm.process.start_token] if process["name"] == "ar" else []
    out = generate(lm.model, lm.process, sampler, [start + [5, 6]], max_new_tokens=6, steps=6, seed=0,
                   block_size=1 if process["name"] == "ar" else None)
    assert len(out.generated[0]) <= 6 and all(0 <= i < lm.model.config.vocab_size for i in out.generated[0])
    if lm.process.needs_mask_token:
        assert lm.process.mask_id not in out.sequences[0, -6:].tolist()
    score = lm.score(["a short text"], t_samples=4)[0]
    assert math.isfinite(score) and score > 0
