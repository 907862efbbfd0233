"""Likelihood metrics against known values: the exact denoiser of a small distribution (built by
enumeration) makes the masked / block NELBO equal −log p(x); an AR model's exact NLL matches a
direct computation; conditional scoring of an AR model is its exact conditional NLL."""
from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from textdiff.config import ModelConfig
from textdiff.errors import ConfigError, DataError
from textdiff.eval.conditional import conditional_nll
from textdiff.eval.elbo import evaluate_likelihood
from textdiff.models import TextDiffModel
from textdiff.models.build import denoiser_config
from textdiff import build_process

V, L = 3, 4  # real tokens 0..2; [MASK] = 3
MASK = V


@pytest.fixture(scope="module")
def law():
    """A random distribution over all V^L sequences: (sequences [S, L], probabilities [S])."""
    X = torch.tensor(list(itertools.product(range(V), repeat=L)))  # [81, 4]
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(2.0 * torch.randn(len(X), generator=g, dtype=torch.float64), 0)
    return X, p


class ExactDenoiser(torch.nn.Module):
    """p(x0^l = v | visible tokens) by enumeration, as logits [B, L, V + 1].

    Masked diffusion: visible = the unmasked tokens of x_t. Block diffusion (input [x_t ; x0] of
    length 2L): position l in block k sees the clean blocks before k and block k of x_t."""

    def __init__(self, X, p, block_size=None):
        super().__init__()
        self.X, self.p, self.block_size = X, p, block_size

    def forward(self, input_ids, **kwargs):
        B, T = input_ids.shape
        x_t = input_ids[:, :L]
        x0 = input_ids[:, L:] if T == 2 * L else None
        out = torch.full((B, T, V + 1), -1e4, dtype=torch.float64)
        noisy_ok = (x_t[:, None, :] == MASK) | (x_t[:, None, :] == self.X[None])  # [B, S, L]
        for pos in range(L):
            if x0 is None:
                ok = noisy_ok.all(-1)
            else:
                k = pos // self.block_size
                lo, hi = k * self.block_size, (k + 1) * self.block_size
                clean_ok = (x0[:, None, :lo] == self.X[None, :, :lo]).all(-1)
                ok = clean_ok & noisy_ok[:, :, lo:hi].all(-1)
            w = ok.double() * self.p[None]  # [B, S]
            marg = w @ torch.nn.functional.one_hot(self.X[:, pos], V).double()  # [B, V]
            out[:, pos, :V] = torch.log(marg / w.sum(1, keepdim=True)).clamp_min(-1e4)
        return SimpleNamespace(logits=out.float())


def _data(law, n=48, seed=0):
    X, p = law
    idx = torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(seed))
    rows = X[idx]
    target = float(-torch.log(p[idx]).sum() / (n * L))  # −log p(data) per token
    entropy = float(-(p * p.log()).sum() / L)
    return rows, target, entropy


@pytest.mark.parametrize("name,block", [("masked", None), ("block", 2)])
def test_exact_denoiser_bound_equals_nll_within_interval(law, name, block):
    X, p = law
    spec = {"name": name, "schedule": {"name": "loglinear", "eps": 0.0}}
    if block:
        spec["block_size"] = block
    process = build_process(spec, vocab_size=V + 1, mask_id=MASK)
    rows, target, entropy = _data(law)
    res = evaluate_likelihood(ExactDenoiser(X, p, block), process, rows, t_samples=16, batch_size=16, seed=1)
    assert res.estimator == "nelbo" and res.layout == "wrap" and res.tokens == rows.numel()
    lo, hi = res.mc_ci
    assert lo <= target <= hi, (res.nelbo, target, res.mc_ci)
    assert hi - lo < 0.2  # the interval is informative, not vacuous (the gap to a flat denoiser is ~0.2)
    assert res.bootstrap_ci[0] <= entropy <= res.bootstrap_ci[1]  # rows drawn from p: covers H / L
    # a worse denoiser (uniform over the V tokens) pays more: the bound is an upper bound
    flat = lambda input_ids, **kw: SimpleNamespace(logits=torch.zeros(*input_ids.shape, V + 1))  # noqa: E731
    worse = evaluate_likelihood(flat, process, rows, t_samples=16, seed=1)
    assert worse.mc_ci[0] <= math.log(V) <= worse.mc_ci[1]  # its bound is log V per token in expectation
    assert worse.mc_ci[0] > hi


def test_results_do_not_depend_on_batch_size_and_seed_changes_them(law):
    X, p = law
    process = build_process({"name": "masked", "schedule": {"name": "loglinear", "eps": 0.0}}, vocab_size=V + 1, mask_id=MASK)
    rows, _, _ = _data(law, n=12)
    model = ExactDenoiser(X, p)
    a = evaluate_likelihood(model, process, rows, t_samples=3, batch_size=5, seed=7, t_sampling="antithetic")
    b = evaluate_likelihood(model, process, rows, t_samples=3, batch_size=12, seed=7, t_sampling="antithetic")
    c = evaluate_likelihood(model, process, rows, t_samples=3, batch_size=12, seed=8, t_sampling="antithetic")
    assert a.row_nats == pytest.approx(b.row_nats, abs=1e-5) and a.nelbo == pytest.approx(b.nelbo, abs=1e-6)
    assert a.row_nats != c.row_nats


def test_pad_layout_counts_only_masked_in_tokens(law):
    X, p = law
    process = build_process({"name": "masked", "schedule": {"name": "loglinear", "eps": 0.0}}, vocab_size=V + 1, mask_id=MASK)
    rows, _, _ = _data(law, n=6)
    mask = torch.ones_like(rows)
    mask[:, 3] = 0
    res = evaluate_likelihood(ExactDenoiser(X, p), process, rows, loss_mask=mask, t_samples=2, layout="pad")
    assert res.layout == "pad" and res.tokens == 6 * 3


@pytest.fixture(scope="module")
def ar():
    Vr, M = 11, 10
    process = build_process("ar", vocab_size=Vr, mask_id=M)
    torch.manual_seed(0)
    model = TextDiffModel(denoiser_config(ModelConfig(hidden_size=32, num_layers=1, num_heads=2), Vr, process, 16, M))
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    return model.eval(), process


def _direct_nll(model, process, x0):
    """Σ_i −log p(x0_i | START, x0_<i), one position at a time."""
    total = torch.zeros(x0.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for i in range(x0.shape[1]):
            ids = torch.cat([torch.full((x0.shape[0], 1), process.start_token), x0[:, :i]], 1)
            logp = torch.log_softmax(model(ids).logits[:, -1].double(), -1)
            total -= logp.gather(-1, x0[:, i:i + 1]).squeeze(-1)
    return total


def test_ar_exact_perplexity_matches_direct_computation(ar):
    model, process = ar
    x0 = torch.randint(0, 10, (7, 12), generator=torch.Generator().manual_seed(1))
    res = evaluate_likelihood(model, process, x0, t_samples=5, batch_size=3)
    direct = _direct_nll(model, process, x0)
    assert res.estimator == "exact" and res.t_samples == 1 and res.mc_ci[0] == res.mc_ci[1]
    assert res.nelbo == pytest.approx(float(direct.sum() / x0.numel()), abs=1e-5)
    assert res.ppl_bound == pytest.approx(math.exp(float(direct.sum() / x0.numel())), rel=1e-5)


def test_conditional_nll_of_ar_is_exact(ar):
    model, process = ar
    prompt, answer = [1, 2, 3, 4], [5, 6, 7]
    score = conditional_nll(model, process, prompt, answer, mc_samples=8)
    full = _direct_nll(model, process, torch.tensor([prompt + answer]))
    head = _direct_nll(model, process, torch.tensor([prompt]))
    assert score.stderr == 0.0 and score.answer_tokens == 3
    assert score.nll == pytest.approx(float(full - head), abs=1e-4)


def test_conditional_nll_of_exact_masked_denoiser(law):
    """With the exact denoiser the conditional NELBO is −log p(answer | prompt) in expectation."""
    X, p = law
    process = build_process({"name": "masked", "schedule": {"name": "loglinear", "eps": 0.0}}, vocab_size=V + 1, mask_id=MASK)
    prompt, answer = [0, 1], [2, 0]
    joint = p[(X[:, :2] == torch.tensor(prompt)).all(1) & (X[:, 2:] == torch.tensor(answer)).all(1)].sum()
    marginal = p[(X[:, :2] == torch.tensor(prompt)).all(1)].sum()
    truth = float(-torch.log(joint / marginal))
    score = conditional_nll(ExactDenoiser(X, p), process, prompt, answer, mc_samples=2048, seed=2)
    assert abs(score.nll - truth) < 4 * score.stderr + 1e-6 and score.stderr < 0.1


def test_bad_likelihood_inputs_raise_one_line_errors(ar):
    model, process = ar
    for call in (lambda: evaluate_likelihood(model, process, torch.zeros(0, 8, dtype=torch.long)),
                 lambda: evaluate_likelihood(model, process, torch.zeros(2, 8, dtype=torch.long), t_sampling="sobol"),
                 lambda: conditional_nll(model, process, [1], [])):
        with pytest.raises((ConfigError, DataError)) as e:
            call()
        assert "\n" not in str(e.value)
