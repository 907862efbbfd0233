"""BD3-LM recipes load and agree with themselves; a block model fine-tunes from a masked checkpoint."""
from pathlib import Path

import pytest
import torch

from textdiff.config import load_recipe
from textdiff.errors import ConfigError
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff.models.build import adapt_attention, check_model_process, load_denoiser
from textdiff.objective import nelbo_terms
from textdiff import build_process

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("bd3lm*.yaml"))


def test_the_bd3lm_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"bd3lm-quickstart", "bd3lm-owt-small-L4", "bd3lm-owt-small-L8", "bd3lm-owt-small-L16"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates_and_block_sizes_agree(path):
    r = load_recipe(path)
    assert r.process.name == "block" and r.model.attention == "block_causal"
    assert r.model.block_size == r.process.block_size
    assert r.data.seq_len % r.process.block_size == 0
    if "owt-small" in path.stem:
        assert r.train.init_from and r.process.block_size == int(path.stem.rsplit("L", 1)[1])


def test_fine_tune_a_block_model_from_a_masked_checkpoint(tmp_path):
    torch.manual_seed(0)
    V, L = 30, 16
    cfg = TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=L,
                         mask_token_id=V - 1)
    TextDiffModel(cfg).save_pretrained(tmp_path)
    model = load_denoiser(str(tmp_path), V)
    process = build_process({"name": "block", "block_size": 4}, V, V - 1)
    with pytest.raises(ConfigError, match="block_causal"):
        check_model_process(model, process, L)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapt_attention(model, process)
    check_model_process(model, process, L)
    assert model.config.attention == "block_causal" and model.config.block_size == 4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights unchanged
    terms = nelbo_terms(model, process, torch.randint(0, V - 1, (2, L)), generator=torch.Generator().manual_seed(0))
    terms.mean().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0
