"""The AR baseline: next-token loss on the same backbone (causal), and generation through generate()
with block_size=1 and the ancestral sampler: KV cache == no cache == a plain greedy / sampling loop."""
from __future__ import annotations

import pytest
import torch

from textdiff.config import ModelConfig
from textdiff.errors import ConfigError
from textdiff.generation import generate
from textdiff.models import TextDiffModel
from textdiff.models.build import check_model_process, denoiser_config
from textdiff.objective import nelbo_terms
from textdiff import build_process, build_sampler

V, MASK = 11, 10


@pytest.fixture(scope="module")
def ar():
    process = build_process("ar", vocab_size=V, mask_id=MASK)
    torch.manual_seed(0)
    model = TextDiffModel(denoiser_config(ModelConfig(hidden_size=32, num_layers=2, num_heads=2), V, process, 16, MASK))
    with torch.no_grad():  # a less uniform next-token law than the init's, so greedy / sampling differ
        model.lm_head.weight.mul_(40.0)
    return model.eval(), process


def test_builder_reads_the_required_attention(ar):
    model, process = ar
    assert process.required_attention == "causal" and process.logits_shift == 1
    assert model.config.attention == "causal" and not model.config.time_conditioning
    bidirectional = TextDiffModel(denoiser_config(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, attention="bidirectional"),
                                                  V, build_process("masked", vocab_size=V, mask_id=MASK), 16, MASK))
    with pytest.raises(ConfigError):
        check_model_process(bidirectional, process, 16)


def test_loss_is_the_exact_next_token_nll(ar):
    model, process = ar
    x0 = torch.randint(0, MASK, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        terms = nelbo_terms(model, process, x0)
        assert torch.equal(terms.x_t, x0)  # nothing is corrupted
        total = torch.zeros(3)
        for i in range(9):  # −log p(x0_i | START, x0_<i) one position at a time
            ids = torch.cat([torch.full((3, 1), process.start_token), x0[:, :i]], 1)
            logp = torch.log_softmax(model(ids).logits[:, -1].float(), -1)
            total -= logp.gather(-1, x0[:, i:i + 1]).squeeze(-1)
    assert torch.allclose(terms.loss.sum(1), total, atol=1e-4)


def test_start_token_defaults_and_errors():
    assert build_process("ar", vocab_size=V, mask_id=MASK).start_token == MASK
    assert build_process({"name": "ar", "start_id": 3}, vocab_size=V).start_token == 3
    with pytest.raises(ConfigError):
        build_process("ar", vocab_size=V)  # neither a mask token nor start_id
    with pytest.raises(ConfigError):
        build_process({"name": "ar", "start_id": V}, vocab_size=V)


PROMPTS = [[MASK], [MASK, 3, 4], [MASK, 7]]  # every prompt starts with the start token


def greedy_loop(model, prompt, n):
    x = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            x.append(int(model(torch.tensor([x])).logits[0, -1].argmax()))
    return x[len(prompt):]


def test_greedy_generation_matches_a_plain_ar_loop(ar):
    model, process = ar
    sampler = build_sampler({"name": "ancestral", "temperature": 0.0}, process)
    for use_cache in (True, False):
        out = generate(model, process, sampler, PROMPTS, max_new_tokens=6, steps=6, block_size=1, use_cache=use_cache)
        assert out.generated == [greedy_loop(model, p, 6) for p in PROMPTS]


def test_sampled_generation_cache_equals_no_cache(ar):
    model, process = ar
    runs = [generate(model, process, "ancestral", PROMPTS, max_new_tokens=8, steps=8, block_size=1, seed=5,
                     use_cache=use_cache) for use_cache in (True, False)]
    assert runs[0].generated == runs[1].generated
    assert runs[0].model_calls != runs[1].model_calls  # the cached run feeds one token per call, plus commits
    assert len({tuple(g) for g in runs[0].generated}) > 1


class Bigram(torch.nn.Module):
    """A causal toy LM whose next-token law depends only on the current token: logits = table[ids]."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)
        self.config = type("C", (), {"attention": "causal", "max_position_embeddings": 64, "time_conditioning": False})()

    def forward(self, input_ids, **kwargs):
        return type("O", (), {"logits": self.table[input_ids]})()


def test_samples_follow_the_models_ar_joint():
    """Total variation between 4000 two-token samples and the model's exact joint p(x1) p(x2 | x1)."""
    process = build_process("ar", vocab_size=V, mask_id=MASK)
    model = Bigram(3.0 * torch.randn(V, V, generator=torch.Generator().manual_seed(0)))
    n = 4000
    out = generate(model, process, "ancestral", [[MASK]] * n, max_new_tokens=2, steps=2, block_size=1, seed=0,
                   use_cache=False)
    probs = torch.softmax(model.table.detach().double(), -1)
    joint = probs[MASK][:, None] * probs  # [V, V]
    emp = torch.zeros(V, V, dtype=torch.float64)
    for a, b in out.generated:
        emp[a, b] += 1.0 / n
    tv = 0.5 * float((emp - joint).abs().sum())
    noise = 0.5 * float(torch.sqrt(2 * joint * (1 - joint) / (torch.pi * n)).sum())  # E[TV] of n exact draws
    indep = probs[MASK][:, None] * (probs[MASK][:, None] * probs).sum(0)[None]  # ignores x1
    assert tv < 2 * noise, (tv, noise)
    assert 0.5 * float((indep - joint).abs().sum()) > 5 * noise
