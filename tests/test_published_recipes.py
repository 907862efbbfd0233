"""The fine-tuning recipes of the published checkpoints run end to end on the tiny MDLM fixture:
BD3-LM (L' = 4) from MDLM, and MDLM continued. Two steps each: finite loss, a saved model that
reloads (without the converter) and gives the trained network's logits."""
import json
import math
from pathlib import Path

import pytest
import torch
from published_dit_helpers import MDLM, VOCAB, tiny_tokenizer

from textdiff.config import load_recipe
from textdiff.lm import DiffusionLM

RECIPES = Path(__file__).parent.parent / "recipes"


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A tiny corpus of the fixture's words and the fixture's tokenizer, both on disk."""
    root = tmp_path_factory.mktemp("published-recipes")
    g = torch.Generator().manual_seed(0)
    docs = [" ".join(f"w{int(i)}" for i in torch.randint(0, VOCAB - 2, (40,), generator=g)) for _ in range(30)]
    (root / "corpus.txt").write_text("\n\n".join(docs))
    tiny_tokenizer().save_pretrained(root / "tok")
    return root


@pytest.mark.parametrize("recipe", ["bd3lm-from-mdlm-L4", "mdlm-owt-continue"])
def test_recipe_fine_tunes_the_published_checkpoint(recipe, local, tmp_path):
    from textdiff.training.loop import train

    r = load_recipe(RECIPES / f"{recipe}.yaml", [
        f"output_dir={tmp_path / 'run'}", f"train.init_from={MDLM['owt']}", f"tokenizer.path={local / 'tok'}",
        f"data.source={local / 'corpus.txt'}", "data.seq_len=16", "data.val_fraction=0.2", "data.num_proc=null",
        "train.max_steps=2", "train.batch_size=2", "train.warmup_steps=1", "train.eval_every=2", "train.eval_batches=1",
        "train.save_every=2", "train.log_every=1", "train.trackers=[]", "train.mixed_precision=no",
    ])
    assert r.process.time_input == "zero" and r.process.time_conditioning  # the checkpoint's adaLN is fed σ = 0
    final = train(r)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row[k] for row in rows for k in ("train_loss", "val_nelbo") if k in row]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    lm = DiffusionLM.from_pretrained(final, device="cpu")
    start = DiffusionLM.from_pretrained(MDLM["owt"], tokenizer=tiny_tokenizer(), device="cpu").model.state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in lm.model.state_dict().items())  # the steps changed the weights
    assert json.loads((final / "config.json").read_text())["model_type"] == "textdiff"
    if recipe.startswith("bd3lm"):
        assert lm.process.block_size == 4 and lm.model.config.attention == "block_causal"
    x = torch.randint(0, VOCAB - 1, (2, 16))
    with torch.no_grad():
        logits = lm.model(x, t=torch.zeros(2)).logits
    assert torch.isfinite(logits).all()
    assert lm.generate(["w1 w2"], max_new_tokens=4, steps=4, seed=0)[0].startswith("w1 w2")
