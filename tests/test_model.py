import pytest
import torch

from textdiff.models import KVCache, TextDiffConfig, TextDiffModel


def tiny(**kw):
    cfg = dict(vocab_size=37, hidden_size=32, num_layers=2, num_heads=4, cond_dim=16, max_position_embeddings=64)
    cfg.update(kw)
    torch.manual_seed(0)
    return TextDiffModel(TextDiffConfig(**cfg)).eval()


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_save_load_gives_identical_logits(tmp_path, time_conditioning):
    m = tiny(time_conditioning=time_conditioning)
    with torch.no_grad():  # make the zero-initialised adaLN layers matter
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randint(0, 37, (3, 11))
    t = torch.rand(3) if time_conditioning else None
    before = m(x, t=t).logits
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    again = TextDiffModel.from_pretrained(tmp_path).eval()
    assert torch.equal(before, again(x, t=t).logits)


def test_auto_classes_load_textdiff_without_remote_code(tmp_path):
    from transformers import AutoConfig, AutoModel

    tiny().save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "textdiff"
    assert isinstance(AutoModel.from_pretrained(tmp_path), TextDiffModel)


def test_time_conditioned_model_requires_t_and_uses_it():
    m = tiny(time_conditioning=True)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randint(0, 37, (2, 8))
    with pytest.raises(ValueError, match="pass t"):
        m(x)
    a = m(x, t=torch.tensor([0.1, 0.1])).logits
    b = m(x, t=torch.tensor([0.9, 0.9])).logits
    assert not torch.allclose(a, b)
    per_token = m(x, t=torch.full((2, 8), 0.1)).logits  # [B, L] times broadcast the same way
    torch.testing.assert_close(a, per_token)


def test_eager_and_sdpa_attention_agree():
    x = torch.randint(0, 37, (2, 12))
    for attention, extra in [("bidirectional", {}), ("causal", {}), ("block_causal", {"block_size": 4})]:
        a = tiny(attn_backend="eager", attention=attention, **extra)(x).logits
        b = tiny(attn_backend="sdpa", attention=attention, **extra)(x).logits
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_real_tokens():
    m = tiny()
    x = torch.randint(0, 37, (1, 7))
    alone = m(x).logits
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], 1)
    mask = torch.tensor([[0, 0, 0] + [1] * 7])
    torch.testing.assert_close(m(padded, attention_mask=mask).logits[:, 3:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention,extra", [("causal", {}), ("block_causal", {"block_size": 4})])
def test_kv_cache_matches_full_forward(attention, extra):
    m = tiny(attention=attention, **extra)
    x = torch.randint(0, 37, (2, 12))
    full = m(x).logits
    cache = KVCache.for_model(m)
    parts = [m(x[:, a:b], cache=cache, update_cache=True).logits for a, b in [(0, 4), (4, 8), (8, 12)]]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 12


def test_positions_beyond_the_context_raise():
    m = tiny(max_position_embeddings=8)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        m(torch.zeros(1, 9, dtype=torch.long))
