"""The exact KV cache of block-causal models: cached == uncached, batches == single rows, EOS, sliding."""
import pytest
import torch

from textdiff.contexts import BlockCache, FullContext, make_context
from textdiff.errors import ConfigError, TextDiffError
from textdiff.generation import _model_call, generate, left_pad
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff import build_process, build_sampler

V = 40
MASK = V - 1
EOS = 1
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], []]


def tiny_model(block_size=4, time_conditioning=False, max_pos=64, attention="block_causal"):
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=2, cond_dim=16,
                         max_position_embeddings=max_pos, attention=attention,
                         block_size=block_size if attention == "block_causal" else None,
                         time_conditioning=time_conditioning, mask_token_id=MASK)
    model = TextDiffModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def block_process(block_size=4, time_conditioning=False):
    return build_process({"name": "block", "block_size": block_size, "time_conditioning": time_conditioning}, V, MASK)


def layout(prompts, N, block_size):
    """Rows, validity and positions exactly as generate() lays them out."""
    ids, pv = left_pad(prompts, 0, "cpu")
    B, P = ids.shape
    valid = torch.cat([pv, torch.ones(B, N, dtype=torch.bool)], 1)
    lengths = pv.sum(1)
    start = -(-int(lengths.max()) // block_size) * block_size
    pos = torch.cumsum(valid.long(), 1) - 1 - lengths[:, None] + start
    pos = torch.where(valid, pos, torch.zeros_like(pos))
    return ids, valid, pos


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_cached_logits_equal_uncached(time_conditioning):
    """Window by window, on partly masked windows: BlockCache logits == FullContext logits."""
    model, proc = tiny_model(time_conditioning=time_conditioning), block_process(time_conditioning=time_conditioning)
    N, Lb = 12, 4
    ids, valid, pos = layout(PROMPTS, N, Lb)
    B, P = ids.shape
    g = torch.Generator().manual_seed(0)
    final = torch.cat([ids, torch.randint(2, V - 1, (B, N), generator=g)], 1)
    call = _model_call(model, proc)
    cached = make_context(model, proc, call, valid, pos, block_size=Lb, cache="exact")
    full = make_context(model, proc, call, valid, pos, block_size=Lb, cache="none")  # recomputes [0, hi)
    whole_row = FullContext(call, valid, pos, clean_time=True)  # also feeds the masked blocks after hi
    assert isinstance(cached, BlockCache) and isinstance(full, FullContext) and full.upto_window
    for lo in range(P, P + N, Lb):
        hi = lo + Lb
        x = final.clone()
        x[:, hi:] = MASK  # later blocks still masked
        for frac in (1.0, 0.5):  # a fully masked and a half-decoded window
            x[:, lo:hi] = torch.where(torch.rand(B, Lb, generator=g) < frac, MASK, final[:, lo:hi])
            t = torch.full((B,), frac)
            want = whole_row.logits(x, lo, hi, t)
            torch.testing.assert_close(cached.logits(x, lo, hi, t), want)
            torch.testing.assert_close(full.logits(x, lo, hi, t), want)
        x[:, lo:hi] = final[:, lo:hi]
        cached.commit(x, lo, hi)
        full.commit(x, lo, hi)
    assert cached.cache.length == P + N - Lb  # everything but the last window was cached


@pytest.mark.parametrize("sampler", ["ancestral", {"name": "threshold", "threshold": 0.5}])
def test_cached_and_uncached_generation_are_identical(sampler):
    model, proc = tiny_model(), block_process()
    kw = dict(max_new_tokens=16, steps=16, block_size=4, seed=[3, 4, 5])
    a = generate(model, proc, sampler, PROMPTS, use_cache=True, **kw)
    b = generate(model, proc, sampler, PROMPTS, use_cache=False, **kw)
    assert torch.equal(a.sequences, b.sequences)
    assert not (a.sequences == MASK).any()
    assert a.nfe == b.nfe


def test_batch_rows_equal_rows_decoded_alone():
    model, proc = tiny_model(), block_process()
    kw = dict(max_new_tokens=12, steps=12, block_size=4, use_cache=True)
    seeds = [11, 12, 13]
    batch = generate(model, proc, "ancestral", PROMPTS, seed=seeds, **kw)
    for b, prompt in enumerate(PROMPTS):
        alone = generate(model, proc, "ancestral", [prompt], seed=[seeds[b]], **kw)
        assert alone.generated[0] == batch.generated[b]


def test_a_decode_block_of_several_model_blocks_is_exact():
    model, proc = tiny_model(block_size=2), block_process(block_size=2)
    kw = dict(max_new_tokens=8, steps=8, block_size=4, seed=0)
    a = generate(model, proc, "ancestral", PROMPTS, use_cache="exact", **kw)
    b = generate(model, proc, "ancestral", PROMPTS, use_cache="none", **kw)
    assert torch.equal(a.sequences, b.sequences)


class EOSAt:
    """A denoise wrapper that makes EOS certain at one absolute position per row."""

    def __init__(self, model, proc, stop_positions):
        self.call = _model_call(model, proc)
        self.stop = torch.tensor(stop_positions)

    def __call__(self, ids, t, mask, pos, cache, update):
        out = self.call(ids, t, mask, pos, cache, update).clone()
        out[..., EOS] = torch.where(pos == self.stop[:, None], 1e4, -1e4)
        return out


def test_stop_at_eos_reports_lengths_and_stops_early():
    model, proc = tiny_model(), block_process()
    prompts = [[5, 6], [7, 8, 9], [10]]  # new tokens start at position 4
    out = generate(model, proc, "ancestral", prompts, max_new_tokens=32, steps=32, block_size=4, seed=0,
                   eos_token_id=EOS, denoise=EOSAt(model, proc, [6, 13, 9]))
    assert out.lengths == [2, 9, 5]
    assert out.sequences.shape[1] == 3 + 12  # stopped after the block holding the last EOS
    assert out.steps == 3 * 4  # 3 blocks of 4 steps, not 8


def test_sliding_window_generates_beyond_the_context():
    model, proc = tiny_model(max_pos=24), block_process()
    kw = dict(max_new_tokens=48, steps=48, block_size=4, seed=0)
    with pytest.raises(ConfigError, match="max_context"):
        generate(model, proc, "ancestral", PROMPTS, **kw)
    out = generate(model, proc, "ancestral", PROMPTS, max_context=16, **kw)
    assert out.lengths == [48, 48, 48] and not (out.sequences == MASK).any()
    # a window that never slides changes nothing
    small = dict(kw, max_new_tokens=12, steps=12)
    a = generate(model, proc, "ancestral", PROMPTS, max_context=20, **small)
    b = generate(model, proc, "ancestral", PROMPTS, **small)
    assert torch.equal(a.sequences, b.sequences)


def test_the_sliding_cache_stays_bounded():
    model, proc = tiny_model(max_pos=24), block_process()
    ids, valid, pos = layout([[5, 6, 7]], 40, 4)
    ctx = make_context(model, proc, _model_call(model, proc), valid, pos, block_size=4, max_context=12)
    x = torch.cat([ids, torch.randint(2, V - 1, (1, 40))], 1)
    for lo in range(4, 44, 4):
        ctx.logits(x, lo, lo + 4, torch.ones(1))
        ctx.commit(x, lo, lo + 4)
        assert ctx.cache.length <= 12


@pytest.mark.parametrize("kwargs,words", [
    (dict(block_size=128), "larger than the model's context"),
    (dict(block_size=4, max_context=2), "larger than max_context"),
    (dict(block_size=4, max_context=62), "exceeds the model's context"),
    (dict(block_size=2, cache="exact"), "multiple of the model's block size"),
    (dict(block_size=4, cache="prefix"), "approximation for bidirectional"),
    (dict(block_size=4, cache="bogus"), "use one of"),
    (dict(block_size=None, max_context=16), "max_context slides"),
])
def test_bad_cache_settings_raise_one_line(kwargs, words):
    model, proc = tiny_model(), block_process()
    ids, valid, pos = layout([[5]], 8, 4)
    with pytest.raises(TextDiffError, match=words) as e:
        make_context(model, proc, _model_call(model, proc), valid, pos, **kwargs)
    assert "\n" not in str(e.value)


def test_ar_baseline_cache_is_exact_and_one_call_per_token():
    model, proc = tiny_model(attention="causal"), build_process("ar", V, MASK)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [3]]  # an AR prompt needs at least one token
    kw = dict(max_new_tokens=10, steps=10, block_size=1, seed=[1, 2, 3])
    a = generate(model, proc, "ancestral", prompts, use_cache="exact", **kw)
    b = generate(model, proc, "ancestral", prompts, use_cache="none", **kw)
    assert torch.equal(a.sequences, b.sequences)
    assert a.model_calls == 10 + 1  # one prefill, then each token's call also caches it
    alone = generate(model, proc, "ancestral", [prompts[1]], use_cache="exact", **dict(kw, seed=[2]))
    assert alone.generated[0] == a.generated[1]
