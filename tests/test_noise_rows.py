"""Generation computes the output layer only at [MASK] positions for a process whose clean positions
carry over (``clean_logits_unused``, the masked / block processes): it is safe because no sampler
reads the logits of a clean position there."""
from __future__ import annotations

import pytest
import torch

import textdiff
from textdiff.registry import lookup
from textdiff.errors import IncompatibleError, TextDiffError
from textdiff.generation import generate
from textdiff.models.configuration_textdiff import TextDiffConfig
from textdiff.models.modeling_textdiff import TextDiffModel

V, MASK = 10, 9
CARRY = [p for p in textdiff.available("process") if getattr(lookup("process", p), "clean_logits_unused", False)]


def _pairs():
    out = []
    for p in CARRY:
        try:
            process = textdiff.build_process(p, vocab_size=V, mask_id=MASK)
        except TextDiffError:
            continue
        for s in textdiff.available("sampler"):
            try:
                textdiff.build_sampler(s, process)
            except IncompatibleError:
                continue
            out.append((s, p))
    return out


def test_the_masked_family_declares_it_and_others_do_not():
    assert {"masked", "block"} <= set(CARRY)
    assert not {"uniform", "sedd_absorb", "sedd_uniform", "ar"} & set(CARRY)


@pytest.mark.parametrize("sampler,process_name", _pairs())
@pytest.mark.parametrize("fields", [{}, {"temperature": 0.0}])
def test_no_sampler_reads_the_logits_of_a_clean_position(sampler, process_name, fields):
    """One step from a half-masked state: the logits at clean positions replaced by anything (zeros,
    huge values) give the same x_s, token for token, as the real ones."""
    process = textdiff.build_process(process_name, vocab_size=V, mask_id=MASK)
    try:
        s = textdiff.build_sampler({"name": sampler, **fields}, process)
    except TextDiffError:
        pytest.skip(f"{sampler} has no such fields")
    g = torch.Generator().manual_seed(0)
    x_t = torch.randint(0, V - 1, (3, 8), generator=g)
    x_t[torch.rand(3, 8, generator=g) < 0.5] = MASK
    x_t[2] = MASK  # one row fully masked
    logits = torch.randn(3, 8, V, generator=g) * 3
    clean = (x_t != MASK)[..., None]
    outs = []
    for fill in (logits, torch.where(clean, torch.zeros_like(logits), logits),
                 torch.where(clean, torch.full_like(logits, 1e4), logits)):
        gens = [torch.Generator().manual_seed(7 + b) for b in range(3)]
        s.set_timesteps(4)
        s.begin(x_t, generator=gens)
        t, u = s.pairs()[1]  # floats, or [B] tensors for a per-row grid
        outs.append(s.step(fill, s.rows(t, x_t), s.rows(u, x_t), x_t, generator=gens).x_s)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_generation_feeds_only_masked_rows_and_gives_the_same_tokens():
    torch.manual_seed(0)
    model = TextDiffModel(TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2,
                                         max_position_embeddings=64, initializer_range=0.5)).eval()
    rows = []
    model.lm_head.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[1]))
    masked = textdiff.build_process("masked", vocab_size=V, mask_id=MASK)
    kw = dict(max_new_tokens=8, steps=8, block_size=4, seed=0, stop_at_eos=False)
    out = generate(model, masked, {"name": "confidence", "temperature": 0.0}, [[1, 2, 3]], **kw)
    # one token per step: the block's k-th step reads the 4 - k positions still masked
    assert rows == [4, 3, 2, 1] * 2
    rows.clear()
    spec = {"name": "confidence", "temperature": 0.0}
    full = generate(model, masked, spec, [[1, 2, 3]], denoise=_all_rows(model), **kw)
    assert torch.equal(out.sequences, full.sequences)


def _all_rows(model):
    """A denoise callable without ``logits_to_keep``: every row computed, cut by the context."""
    def denoise(ids, t, attention_mask, position_ids, cache, update_cache):
        return model(ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                     update_cache=update_cache).logits
    return denoise
