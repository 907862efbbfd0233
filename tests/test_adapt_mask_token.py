"""The [MASK] row of an adapted embedding / head (textdiff.adapt.mask_token)."""
import math

import pytest
import torch
import torch.nn as nn

from textdiff.adapt.mask_token import init_mask_row, init_mask_rows, mask_source_id
from textdiff.errors import ConfigError


def grown(rows=10, width=16, trained=8, seed=0):
    """An embedding whose rows [0, trained) are 'trained', with junk in the padding rows after them."""
    torch.manual_seed(seed)
    emb = nn.Embedding(rows, width)
    with torch.no_grad():
        emb.weight[trained:] = 100.0  # padding / new rows: must never enter the mean
    return emb


def test_mean_averages_trained_rows_only():
    emb = grown()
    trained = emb.weight[:8].detach().clone()
    init_mask_row(emb.weight, 9, "mean", source_rows=8)
    assert torch.allclose(emb.weight[9], trained.mean(0), atol=1e-6)
    assert torch.equal(emb.weight[:8], trained)  # nothing else moves
    assert bool((emb.weight[8] == 100.0).all())


def test_mean_skips_a_mask_row_inside_the_trained_range():
    emb = grown()
    others = torch.cat([emb.weight[:3], emb.weight[4:8]]).detach().clone()
    init_mask_row(emb.weight, 3, "mean", source_rows=8)  # Qwen-style: an existing id becomes the mask
    assert torch.allclose(emb.weight[3], others.mean(0), atol=1e-6)


def test_noisy_mean_is_seeded_and_has_the_documented_spread():
    width = 1024
    emb = grown(rows=10, width=width)
    mean = emb.weight[:8].detach().double().mean(0)
    init_mask_row(emb.weight, 9, "noisy_mean", 8, generator=torch.Generator().manual_seed(1))
    first = emb.weight[9].detach().clone()
    init_mask_row(emb.weight, 9, "noisy_mean", 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, emb.weight[9])
    noise = first.double() - mean
    assert abs(noise.std().item() - 1 / math.sqrt(width)) < 0.1 / math.sqrt(width)  # N(0, 1/d) per coordinate
    assert abs(noise.mean().item()) < 4 / width


def test_token_copies_a_row_and_its_bias():
    head = nn.Linear(16, 10)
    init_mask_row(head.weight, 9, "token:2", 8, source_id=2, bias=head.bias)
    assert torch.equal(head.weight[9], head.weight[2]) and head.bias[9] == head.bias[2]


def test_keep_changes_nothing():
    emb = grown()
    before = emb.weight.detach().clone()
    init_mask_row(emb.weight, 9, "keep", 8)
    assert torch.equal(before, emb.weight)


def test_head_follows_the_embedding_unless_tied():
    emb, head = grown(), nn.Linear(16, 10)
    with torch.no_grad():
        head.bias[8:] = 50.0
    init_mask_rows(emb, head, 9, "mean", 8)
    assert torch.allclose(head.weight[9], head.weight[:8].mean(0), atol=1e-6)
    assert torch.allclose(head.bias[9], head.bias[:8].mean(), atol=1e-6)
    tied = nn.Linear(16, 10, bias=False)
    tied.weight = emb.weight
    init_mask_rows(emb, tied, 9, "noisy_mean", 8, generator=torch.Generator().manual_seed(0))
    assert tied.weight is emb.weight  # one row, set once


def test_source_id_from_ids_and_strings():
    vocab = {"<unk>": 0, "the": 5}
    assert mask_source_id("mean", vocab) is None
    assert mask_source_id("token:7") == 7
    assert mask_source_id("token:the", vocab) == 5
    with pytest.raises(ConfigError, match="names no single token"):
        mask_source_id("token:thee", vocab)


@pytest.mark.parametrize("mask_id, init, source, message", [
    (10, "mean", None, "outside the 10 embedding rows"),
    (9, "token:9", 9, "not a trained row"),
    (9, "token:8", 8, "not a trained row"),
    (9, "mean", None, "no trained rows"),
])
def test_bad_inits(mask_id, init, source, message):
    emb = grown()
    with pytest.raises(ConfigError, match=message):
        init_mask_row(emb.weight, mask_id, init, 0 if message == "no trained rows" else 8, source_id=source)
