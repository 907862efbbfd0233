"""Block diffusion (BD3-LM) training: the [x_t ; x0] mask, per-block times, clipping, L' = L."""
import pytest
import torch

from textdiff.errors import ConfigError, IncompatibleError
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff.models.masks import block_diffusion_mask, flex_available
from textdiff.objective import nelbo_terms
from textdiff import build_process

V = 40
MASK = V - 1


def tiny_model(attention="block_causal", block_size=4, time_conditioning=False, seed=0, max_pos=64):
    torch.manual_seed(seed)
    cfg = TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=2, cond_dim=16,
                         max_position_embeddings=max_pos, attention=attention, block_size=block_size,
                         time_conditioning=time_conditioning, mask_token_id=MASK)
    model = TextDiffModel(cfg).eval()
    with torch.no_grad():  # leave the zero-initialised adaLN: every weight matters in these tests
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def block(block_size=4, **kw):
    return build_process({"name": "block", "block_size": block_size, **kw}, V, MASK)


def data(B=3, L=16, seed=1):
    return torch.randint(0, V - 1, (B, L), generator=torch.Generator().manual_seed(seed))


def test_mask_matches_its_definition():
    L, Lb = 8, 2
    m = block_diffusion_mask(L, Lb)[0, 0]
    assert m.shape == (2 * L, 2 * L)
    for q in range(2 * L):
        for k in range(2 * L):
            qb, kb = (q % L) // Lb, (k % L) // Lb
            if q < L:  # noisy query: its own noisy block, and clean blocks strictly before it
                want = (k < L and kb == qb) or (k >= L and kb < qb)
            else:  # clean query: block-causal over the clean half only
                want = k >= L and kb <= qb
            assert bool(m[q, k]) == want, (q, k)


def test_full_block_reduces_to_masked():
    """L' = L: the same noise gives the same x_t and the same loss as the masked process."""
    L = 12
    model = tiny_model(block_size=L, time_conditioning=True)
    x0 = data(L=L)
    t = torch.tensor([0.2, 0.5, 0.9])
    masked = build_process({"name": "masked", "time_conditioning": True}, V, MASK)
    blk = block(L, time_conditioning=True)
    with torch.no_grad():
        a = nelbo_terms(model, masked, x0, t=t, generator=torch.Generator().manual_seed(3))
        b = nelbo_terms(model, blk, x0, t=t[:, None].expand(3, L), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x_t, b.x_t)
    assert (a.x_t == MASK).any()
    torch.testing.assert_close(b.loss, a.loss)
    # its sampled times are one per row when there is one block
    tt = blk.sample_t(5, seq_len=L, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tt, tt[:, :1].expand(5, L))


@pytest.mark.skipif(not flex_available(), reason="this torch has no FlexAttention")
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_and_sdpa_give_the_same_loss():
    model = tiny_model()
    x0 = data(L=32)
    losses = {}
    for backend in ("sdpa", "flex"):
        with torch.no_grad():  # FlexAttention has no CPU backward: compare the forward loss
            terms = nelbo_terms(model, block(attention_backend=backend, flex_tile=16), x0,
                                generator=torch.Generator().manual_seed(5))
        losses[backend] = terms.loss
    assert losses["sdpa"].abs().sum() > 0
    torch.testing.assert_close(losses["flex"], losses["sdpa"], rtol=1e-5, atol=1e-5)


def test_noisy_block_sees_only_earlier_clean_blocks():
    """Noisy block k depends on x0 only through clean blocks < k: no leak of its own clean tokens."""
    model, proc = tiny_model(), block()
    x0 = data(B=2)
    x_t = x0.clone()
    x_t[:, 8:12] = MASK  # block 2 fully masked
    x_t[:, 1] = MASK
    with torch.no_grad():
        base = proc.model_logits(model(**proc.model_inputs(x_t, x0, None)).logits, x_t)
        later = x0.clone()
        later[:, 8:] = (later[:, 8:] + 1) % (V - 1)  # change block 2's own clean tokens and after
        same = proc.model_logits(model(**proc.model_inputs(x_t, later, None)).logits, x_t)
        earlier = x0.clone()
        earlier[:, 4] = (earlier[:, 4] + 1) % (V - 1)  # change a clean token of block 1
        moved = proc.model_logits(model(**proc.model_inputs(x_t, earlier, None)).logits, x_t)
    torch.testing.assert_close(same[:, :12], base[:, :12], rtol=0, atol=1e-6)
    torch.testing.assert_close(moved[:, :4], base[:, :4], rtol=0, atol=1e-6)  # block 0 cannot see block 1
    assert (moved[:, 8:12] - base[:, 8:12]).abs().max() > 1e-4  # block 2 does see it


def test_training_logits_equal_decoding_logits():
    """The noisy half of the [x_t ; x0] pass equals the plain block-causal model run on
    [x0 blocks < k ; x_t block k], i.e. what the KV-cached decoder computes."""
    model, proc = tiny_model(time_conditioning=True), block(time_conditioning=True)
    x0 = data(B=2)
    t = proc.sample_t(2, seq_len=16, generator=torch.Generator().manual_seed(2))
    x_t = proc.corrupt(x0, t, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        inputs = proc.model_inputs(x_t, x0, t)
        train = proc.model_logits(model(**inputs).logits, x_t)
        for k in range(4):
            lo, hi = 4 * k, 4 * k + 4
            ids = torch.cat([x0[:, :lo], x_t[:, lo:hi]], 1)
            tt = torch.cat([torch.zeros(2, lo), t[:, lo:hi]], 1)
            dec = model(ids, t=tt).logits[:, lo:hi]
            torch.testing.assert_close(train[:, lo:hi], dec, rtol=1e-5, atol=1e-5)


def test_one_t_per_block_stratified():
    proc = block()
    B, L = 8, 16
    t = proc.sample_t(B, seq_len=L, generator=torch.Generator().manual_seed(0))
    assert t.shape == (B, L)
    per_block = t.view(B, 4, 4)
    assert torch.equal(per_block, per_block[..., :1].expand(B, 4, 4))  # constant within a block
    strata = (per_block[..., 0] * B).floor().long()  # antithetic: each column hits every stratum once
    for k in range(4):
        assert sorted(strata[:, k].tolist()) == list(range(B))
    assert not torch.equal(per_block[:, 0, 0], per_block[:, 1, 0])  # blocks have their own times


def test_resampling_keeps_block_mask_rates_in_the_band():
    sched = {"name": "clipped", "beta": 0.3, "omega": 0.8}
    x0 = data(B=64)
    rates = {}
    for resample in (False, True):
        proc = block(schedule=sched, resample=resample)
        g = torch.Generator().manual_seed(0)
        x_t = proc.corrupt(x0, proc.sample_t(64, seq_len=16, generator=g), generator=g)
        rates[resample] = (x_t == MASK).view(64, 4, 4).float().mean(-1)
    assert proc.mask_rate_band() == pytest.approx((0.3, 0.8))
    outside = (rates[False] < 0.3) | (rates[False] > 0.8)
    assert outside.any()  # without resampling, 4-token blocks often leave the band
    assert ((rates[True] >= 0.3) & (rates[True] <= 0.8)).all()


def test_a_training_step_updates_the_model():
    model, proc = tiny_model(), block()
    model.train()
    terms = nelbo_terms(model, proc, data(), generator=torch.Generator().manual_seed(0))
    terms.mean().backward()
    grad = model.lm_head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("L,Lb,words", [(10, 4, "does not divide"), (8, 16, "larger than")])
def test_bad_block_sizes_raise_one_line(L, Lb, words):
    proc = block(Lb)
    with pytest.raises(ConfigError, match=words) as e:
        proc.model_inputs(data(L=L), data(L=L), None)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=words):
        proc.sample_t(2, seq_len=L)


def test_model_must_be_block_causal_with_the_same_block_size():
    proc = block(4)
    proc.check_model(tiny_model(block_size=4).config)
    for cfg in (tiny_model("bidirectional", None).config, tiny_model(block_size=8).config):
        with pytest.raises(IncompatibleError, match="block_causal"):
            proc.check_model(cfg)
