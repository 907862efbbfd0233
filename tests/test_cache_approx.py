"""Approximate caches (prefix / dual, Fast-dLLM) for bidirectional models decoded in blocks."""
import pytest
import torch

from textdiff.contexts import DualCache, PrefixCache, make_context
from textdiff.errors import IncompatibleError
from textdiff.generation import _model_call, generate
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff import build_process

V = 40
MASK = V - 1
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], []]


def bidirectional_model():
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=2,
                         max_position_embeddings=64, mask_token_id=MASK)
    model = TextDiffModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def masked():
    return build_process("masked", V, MASK)


class Recorder:
    """Wraps the model call; keeps the window logits of every sampling call."""

    def __init__(self, model, proc):
        self.call = _model_call(model, proc)
        self.outputs = []

    def __call__(self, ids, t, mask, pos, cache, update):
        out = self.call(ids, t, mask, pos, cache, update)
        self.outputs.append(out)
        return out


def test_exact_cache_on_a_bidirectional_model_raises_one_line():
    model, proc = bidirectional_model(), masked()
    with pytest.raises(IncompatibleError, match="bidirectional") as e:
        generate(model, proc, "ancestral", PROMPTS, max_new_tokens=8, steps=8, block_size=4, use_cache="exact")
    assert "\n" not in str(e.value)
    # "auto" never picks an approximate cache: it decodes exactly, like "none"
    kw = dict(max_new_tokens=8, steps=8, block_size=4, seed=0)
    a = generate(model, proc, "ancestral", PROMPTS, use_cache=True, **kw)
    b = generate(model, proc, "ancestral", PROMPTS, use_cache=False, **kw)
    assert torch.equal(a.sequences, b.sequences)


@pytest.mark.parametrize("kwargs,match", [({"use_cache": "none", "lookback": 0}, "needs use_cache='prefix' or 'dual'"),
                                          ({"use_cache": "prefix", "lookback": -1}, "lookback")])
def test_lookback_outside_the_approximate_caches_raises_one_line(kwargs, match):
    from textdiff.errors import ConfigError

    model, proc = bidirectional_model(), masked()
    with pytest.raises(ConfigError, match=match) as e:
        generate(model, proc, "ancestral", PROMPTS, max_new_tokens=8, steps=8, block_size=4, **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_one_step_per_block_is_exact(mode):
    """Each block's first call refreshes the cache with a full forward, so with one step per block
    the approximate caches give exactly the uncached tokens."""
    model, proc = bidirectional_model(), masked()
    kw = dict(max_new_tokens=12, steps=3, block_size=4, seed=[1, 2, 3])
    a = generate(model, proc, "ancestral", PROMPTS, use_cache=mode, **kw)
    b = generate(model, proc, "ancestral", PROMPTS, use_cache="none", **kw)
    assert torch.equal(a.sequences, b.sequences)


@pytest.mark.parametrize("mode,cls", [("prefix", PrefixCache), ("dual", DualCache)])
def test_approximate_caches_feed_less_and_stay_close(mode, cls):
    model, proc = bidirectional_model(), masked()
    rec = Recorder(model, proc)
    kw = dict(max_new_tokens=12, steps=12, block_size=4, seed=[1, 2, 3])
    out = generate(model, proc, {"name": "threshold", "threshold": 0.3}, PROMPTS, use_cache=mode, denoise=rec, **kw)
    assert not (out.sequences == MASK).any()
    T = out.sequences.shape[1]
    widths = [o.shape[1] for o in rec.outputs]
    assert widths.count(T) == 3  # one full refresh per block
    starts = range(T - 12, T, 4)  # the three windows
    fed = {T - lo for lo in starts} if mode == "prefix" else {4}  # block + suffix, or the block only
    assert set(widths) <= {T} | fed and len(widths) > 3
    # one uncached forward on the same partial state: the cached logits are close, not equal
    ctx = make_context(model, proc, _model_call(model, proc), torch.ones_like(out.sequences, dtype=torch.bool),
                       torch.arange(T).expand(3, T), block_size=4, cache=mode)
    assert isinstance(ctx, cls) and not ctx.exact
    full = make_context(model, proc, _model_call(model, proc), torch.ones_like(out.sequences, dtype=torch.bool),
                        torch.arange(T).expand(3, T), block_size=4, cache="none")
    x = out.sequences.clone()
    x[:, 8:] = MASK
    t = torch.ones(3)
    with torch.no_grad():
        torch.testing.assert_close(ctx.logits(x, 8, 12, t), full.logits(x, 8, 12, t))  # the refresh is exact
        x[:, 8:10] = out.sequences[:, 8:10]  # the block moved on: the cached keys are now stale
        approx, exact = ctx.logits(x, 8, 12, t), full.logits(x, 8, 12, t)
    diff = (approx - exact).abs().max()
    assert 1e-4 < diff < 1.0


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_approximate_caches_are_batch_invariant(mode):
    """Prompts of different lengths in one batch give each row the tokens it gets alone."""
    model, proc = bidirectional_model(), masked()
    sampler = {"name": "threshold", "threshold": 0.2}
    kw = dict(max_new_tokens=8, steps=8, block_size=4, use_cache=mode)
    seeds = [4, 5, 6]
    batch = generate(model, proc, sampler, PROMPTS, seed=seeds, **kw)
    for b, prompt in enumerate(PROMPTS):
        alone = generate(model, proc, sampler, [prompt], seed=[seeds[b]], **kw)
        assert alone.generated[0] == batch.generated[b]
