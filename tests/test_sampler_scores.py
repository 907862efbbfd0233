"""The confidence samplers' ordering scores: Dream's law from the filtered probabilities
(``score_from = "sampling"``), LLaDA's from the plain softmax (``"model"``), and the wide-row kernels
(block argmax, two-level inverse CDF) against their one-level definitions."""
from __future__ import annotations

import pytest
import torch

import textdiff
from textdiff.categorical import _search, inverse_cdf
from textdiff.samplers.unmask_rows import block_max, first_argmax


def dream_scores(logits, x0, temperature, top_p, ordering):
    """Dream's sample_tokens scores, written from its definition: logits / T (T > 0), top-p (keep the
    tokens whose preceding sorted mass is at most top_p), softmax, then p(x0), top1 − top2 or
    Σ p log(p + 1e-10)."""
    lg = logits.double()
    if temperature > 0:
        lg = lg / temperature
    sorted_lg, order = torch.sort(lg, descending=True)
    cum = torch.softmax(sorted_lg, -1).cumsum(-1)
    remove = torch.zeros_like(cum, dtype=torch.bool)
    remove[..., 1:] = cum[..., :-1] > top_p
    lg = lg.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), torch.finfo(lg.dtype).min)
    p = torch.softmax(lg, -1)
    if ordering == "confidence":
        return p.gather(-1, x0[..., None])[..., 0]
    if ordering == "margin":
        top = p.sort(-1, descending=True).values
        return top[..., 0] - top[..., 1]
    return (p * torch.log(p + 1e-10)).sum(-1)


@pytest.mark.parametrize("V", [12, 3001])
@pytest.mark.parametrize("ordering", ["confidence", "margin", "entropy"])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_sampling_scores_follow_dreams_filtered_probabilities(V, ordering, temperature):
    mask = V - 1
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=mask)
    knobs = {"name": "confidence", "ordering": ordering, "temperature": temperature, "top_p": 0.8}
    smp = textdiff.build_sampler({**knobs, "score_from": "sampling"}, proc)
    g = torch.Generator().manual_seed(V)
    logits = 2.0 * torch.randn(3, 5, V, generator=g)
    x_t = torch.full((3, 5), mask)
    u = torch.rand(3, 5, generator=g, dtype=torch.float64)
    x0, score = smp.candidates(logits, x_t, x_t == mask, u)
    expect = dream_scores(logits[..., :mask], x0, temperature, 0.8, ordering)
    tol = dict(rtol=1e-12, atol=1e-7 if ordering == "entropy" else 1e-15)  # Dream's ε = 1e-10 per kept token
    assert torch.allclose(score, expect, **tol)
    p_tilde = torch.softmax(smp.filter(logits[..., :mask], temperature=temperature or 1.0), -1)
    assert bool((p_tilde.gather(-1, x0[..., None]) > 0).all())  # candidates come from the nucleus
    # "model" (the default, LLaDA) keeps scoring with the plain softmax whatever the filters
    plain = textdiff.build_sampler(knobs, proc)
    x0m, model_score = plain.candidates(logits, x_t, x_t == mask, u)
    assert torch.equal(x0m, x0)
    p = torch.softmax(logits[..., :mask].double(), -1)
    if ordering == "confidence":
        assert torch.allclose(model_score, p.gather(-1, x0[..., None])[..., 0], rtol=1e-13, atol=0)
    assert not torch.allclose(model_score, score, rtol=1e-6, atol=0)


def test_wide_row_argmax_and_inverse_cdf_match_their_one_level_definitions():
    g = torch.Generator().manual_seed(0)
    for V in (2049, 5000, 50257):
        rows = torch.randn(16, V, generator=g)
        rows[0, :] = 1.0  # all tied: the first index
        rows[1, 700] = rows[1, 4000 % V] = 99.0  # tied maxima in two blocks: the first one
        rows[2, -1] = 50.0  # in the short last block
        heads = block_max(rows)
        assert torch.equal(heads.amax(-1), rows.amax(-1))
        assert torch.equal(first_argmax(rows, heads, rows.amax(-1)), rows.argmax(-1))
        w = torch.rand(64, V, generator=g, dtype=torch.float64) ** 8
        w[:, ::7] = 0.0
        w[3] = 0.0
        w[4] = 0.0
        w[4, -1] = 2.0
        u = torch.rand(64, generator=g, dtype=torch.float64)
        u[0], u[1] = 0.0, 1 - 2.0 ** -53
        c = w.cumsum(-1)
        assert torch.equal(inverse_cdf(w, u), _search(c, u[:, None] * c[:, -1:]))
        got = inverse_cdf(w, u)
        assert bool((w.gather(1, got[:, None])[:, 0][torch.arange(64) != 3] > 0).all())  # never a zero weight


def near_tied_logits(B, L, V, seed):
    """Logits [B, L, V]: two confident rows (4, 5, equal), then rows 0-3 that tie exactly (copies) or
    nearly (one logit moved by one ulp, or all by ~1e-7), so that the top k splits them."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, V, generator=g)
    logits[:, 0, 0] = 6.0
    logits[:, 1] = logits[:, 0]  # exact ties: the leftmost goes first
    logits[:, 2] = logits[:, 0]
    logits[:, 2, 5] = torch.nextafter(logits[:, 2, 5], torch.tensor(float("inf")))  # confidence moves ~1e-9
    logits[:, 3] = logits[:, 0] + 1e-7 * torch.randn(B, V, generator=g)
    logits[:, 4, 0] = 12.0
    logits[:, 5] = logits[:, 4]
    return logits


@pytest.mark.parametrize("V", [40, 3001])
@pytest.mark.parametrize("name,knobs", [("confidence", {}), ("threshold", {}), ("threshold", {"min_commit": "even_split"}),
                                        ("confidence", {"deprioritize_ids": [0]})])
def test_greedy_float32_bounds_commit_exactly_what_the_float64_scores_commit(V, name, knobs, monkeypatch):
    """Greedy confidence ranks from a float32 pass with rigorous bounds and float64 only where the
    top k (or the threshold) is in doubt: the commits equal those of the exact float64 path (float64
    logits) every time, and the doubtful rows were indeed decided by their float64 scores."""
    import textdiff.samplers.unmask_rows as rows_mod

    mask = V - 1
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=mask)
    logits = near_tied_logits(3, 12, V, V)
    x_t = torch.full((3, 12), mask)
    x_t[1, 7:] = 4  # some clean positions
    if name == "threshold":  # τ = the exact confidence of row 2: inside its float32 bounds
        knobs = {**knobs, "threshold": float(torch.softmax(logits[0, 2, :mask].double(), -1).max())}
    smp = textdiff.build_sampler({"name": name, "temperature": 0.0, **knobs}, proc)
    smp.set_timesteps(10)  # the grid even_split reads (t = 1, 0.6, 0.5: steps 0, 4, 5 of 10)
    asked = []
    real = rows_mod.ExactScores.__call__
    monkeypatch.setattr(rows_mod.ExactScores, "__call__", lambda self, w: asked.append(int(w.sum())) or real(self, w))
    for t, s in [(1.0, 0.9), (1.0, 0.75), (1.0, 0.7), (0.6, 0.5), (0.5, 0.0)]:
        tt, ss = torch.full((3,), t, dtype=torch.float64), torch.full((3,), s, dtype=torch.float64)
        assert smp.bounded(logits) and not smp.bounded(logits.double())
        fast = smp.step(logits, tt, ss, x_t).x_s
        exact = smp.step(logits.double(), tt, ss, x_t).x_s
        assert torch.equal(fast, exact), (t, s)
    assert asked and max(asked) < 3 * 12  # some rows needed float64, never all of them
    noise = x_t == mask
    x0, lo, hi, _ = smp.candidate_bounds(logits, x_t, noise)
    x0e, score = smp.candidates(logits, x_t, noise, torch.zeros(3, 12, dtype=torch.float64))
    score = smp.deprioritize(score, x0e)
    assert torch.equal(x0, x0e)
    assert bool((lo[noise] <= score[noise]).all() and (score[noise] <= hi[noise]).all())
    assert bool(((hi - lo)[noise] <= 3e-5).all())


@pytest.mark.parametrize("W,N", [(32, 8), (10, 4), (4, 8), (32, 32)])
def test_threshold_even_split_floor_is_the_publishers_schedule(W, N):
    """min_commit = "even_split": step i of N commits at least ⌊W / N⌋ (+1 for the first W mod N steps),
    LLaDA 2.0's schedule; the floors add up to the window, so N steps leave no [MASK]; with τ = 1 (no
    position clears it) each greedy step commits exactly its floor, the most confident first."""
    V = 50
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=V - 1)
    smp = textdiff.build_sampler({"name": "threshold", "threshold": 1.0, "temperature": 0.0, "min_commit": "even_split"}, proc)
    smp.set_timesteps(N)
    base, extra = divmod(W, N)
    want = [base + (i < extra) for i in range(N)]
    logits = torch.randn(1, W, V, generator=torch.Generator().manual_seed(0))
    x = torch.full((1, W), V - 1)
    made = []
    for i, (t, s) in enumerate(smp.pairs()):
        assert int(smp.min_commits(t, x)) == want[i]
        before = int((x == V - 1).sum())
        new = smp.step(logits, t, s, x).x_s
        committed = (x == V - 1) & (new != V - 1)
        made.append(int(committed.sum()))
        conf = torch.softmax(logits[0, :, : V - 1].double(), -1).max(-1).values  # [MASK] is never proposed
        if 0 < made[-1] < before:  # the committed ones are the most confident of those still masked
            still = (x == V - 1)[0]
            assert conf[committed[0]].min() >= conf[still & ~committed[0]].max()
        x = new
    assert made == want and not bool((x == V - 1).any())
