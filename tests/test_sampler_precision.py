"""Row-wise float64 draws, exact transition probabilities, exact confidence ranking."""
from __future__ import annotations


import pytest
import torch

import textdiff
from textdiff.categorical import inverse_cdf, sample_rows
from textdiff.samplers.confidence import rank_commit

V, MASK = 6, 5


def test_row_draws_follow_the_law_and_never_pick_zero_mass():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0, 0.0]))  # -inf at 4 and 5
    n = 200_000
    u = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    draws = sample_rows(logits.expand(n, V), u)
    freq = torch.bincount(draws, minlength=V).double() / n
    assert 0.5 * float((freq - torch.tensor([0.5, 0.25, 0.15, 0.1, 0, 0], dtype=torch.float64)).abs().sum()) < 0.005
    edge = torch.tensor([1 - 2.0 ** -53, 0.0], dtype=torch.float64)  # u · Z may round up to Z
    w = torch.tensor([[0.3, 0.7, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    assert inverse_cdf(w, edge).tolist() == [1, 3]


def test_masked_posterior_is_mdlms_update_in_float64():
    """MDLM: q(x_s) ∝ p_θ(x0) (m_t − m_s) at tokens and m_s at [MASK], m = 1 − α (here in closed form)."""
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=MASK)
    eps = proc.schedule.config.eps
    logits = torch.randn(1, 3, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_t = torch.full((1, 3), MASK)
    p0 = torch.softmax(logits[..., :MASK], -1)
    for t, s in [(2e-4, 1e-4), (1e-6, 3e-7), (0.7, 0.2)]:
        m_t, m_s = (1 - eps) * t, (1 - eps) * s  # loglinear: 1 − α(t) = (1 − ε) t exactly
        got = proc.reverse_probs(logits, x_t, torch.tensor([t], dtype=torch.float64), torch.tensor([s], dtype=torch.float64))
        expect = torch.cat([p0 * (m_t - m_s), torch.full_like(p0[..., :1], m_s)], -1) / m_t
        assert torch.allclose(got, expect, rtol=1e-13, atol=0), (t, s)


def test_sedd_absorb_geometric_last_step_goes_to_sigma_zero():
    proc = textdiff.build_process({"name": "sedd_absorb", "schedule": {"name": "geometric"}}, vocab_size=V, mask_id=MASK)
    logits = torch.randn(2, 4, V, generator=torch.Generator().manual_seed(1))
    x_t = torch.full((2, 4), MASK)
    t, zero = torch.full((2,), 0.1, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    assert bool((proc.analytic_probs(logits, x_t, t, zero)[..., MASK] == 0).all())
    assert bool(torch.isinf(proc.mask_exit_scale(t, zero, tau_leap=True)).all())


def test_ranking_uses_the_exact_confidence_and_ties_only_on_equality():
    conf = torch.tensor([[0.99991, 0.99994, 0.99993, 0.5]], dtype=torch.float64)  # equal at 4 decimals
    eligible = torch.ones(1, 4, dtype=torch.bool)
    assert rank_commit(conf, eligible, torch.tensor([1])).tolist() == [[False, True, False, False]]
    assert rank_commit(conf, eligible, torch.tensor([2])).tolist() == [[False, True, True, False]]
    tied = torch.tensor([[0.3, 0.7, 0.7, 0.7]], dtype=torch.float64)
    assert rank_commit(tied, eligible, torch.tensor([2])).tolist() == [[False, True, True, False]]  # leftmost


@pytest.mark.parametrize("ordering", ["confidence", "margin", "entropy"])
def test_confidence_scores_are_exact_float64(ordering):
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=MASK)
    smp = textdiff.build_sampler({"name": "confidence", "ordering": ordering, "temperature": 0.0}, proc)
    logits = torch.randn(2, 3, V, generator=torch.Generator().manual_seed(2))
    x_t = torch.full((2, 3), MASK)
    x0, score = smp.candidates(logits, x_t, x_t == MASK, torch.zeros(2, 3, dtype=torch.float64))
    p = torch.softmax(logits[..., :MASK].double(), -1)
    top = p.topk(2, -1).values
    expect = {"confidence": top[..., 0], "margin": top[..., 0] - top[..., 1], "entropy": (p * p.log()).sum(-1)}[ordering]
    assert torch.equal(x0, p.argmax(-1))
    assert torch.allclose(score, expect, rtol=1e-14, atol=1e-15)


def test_greedy_confidence_step_uses_no_noise():
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=MASK)
    smp = textdiff.build_sampler({"name": "confidence", "temperature": 0.0}, proc)
    logits = torch.randn(3, 8, V, generator=torch.Generator().manual_seed(3))
    x_t = torch.full((3, 8), MASK)
    t, s = torch.full((3,), 0.5, dtype=torch.float64), torch.full((3,), 0.25, dtype=torch.float64)
    a = smp.step(logits, t, s, x_t, torch.Generator().manual_seed(0)).x_s
    b = smp.step(logits, t, s, x_t, torch.Generator().manual_seed(1)).x_s
    assert torch.equal(a, b) and int((a != MASK).sum()) == 3 * 4


@pytest.mark.parametrize("sampler,process", [("ancestral", "uniform"), ("euler", "uniform"), ("euler", "sedd_uniform"),
                                             ("analytic", "sedd_uniform"), ("euler", "sedd_absorb"),
                                             ("analytic", "sedd_absorb"), ("ancestral", "masked"), ("remdm", "masked")])
def test_row_kernels_draw_the_processes_one_step_law(sampler, process):
    """Many copies of one position through ``step``: the empirical law of x_s matches the full
    [B, L, V] transition of the process (``reverse_probs`` / ``tau_leap_probs`` / ``analytic_probs``)."""
    from textdiff.samplers.euler import tau_leap_probs

    proc = textdiff.build_process(process, vocab_size=V, mask_id=MASK if process != "uniform" and process != "sedd_uniform" else None)
    smp = textdiff.build_sampler(sampler, proc)
    n = 60_000
    logits = torch.randn(1, 1, V, generator=torch.Generator().manual_seed(4)).expand(n, 1, V).contiguous()
    x = torch.full((n, 1), MASK if proc.needs_mask_token else 2)
    t, s = torch.full((n,), 0.6, dtype=torch.float64), torch.full((n,), 0.35, dtype=torch.float64)
    got = smp.step(logits, t, s, x, torch.Generator().manual_seed(5)).x_s[:, 0]
    one = (logits[:1], x[:1], t[:1], s[:1])
    if sampler == "euler":
        exact = tau_leap_probs(proc.reverse_rate(one[0], one[1], one[2]), one[1], one[2] - one[3])
    elif sampler == "remdm":
        a_t, m_t = proc.survival(t[:1])
        _, m_s = proc.survival(s[:1])
        sig = smp.sigma_t(a_t, m_s, t[:1])
        move = (m_t - m_s + sig * a_t) / m_t
        p0 = torch.softmax(logits[0, 0, :MASK].double(), -1)
        exact = torch.cat([p0 * move, 1 - move])[None, None]
    else:
        exact = proc.reverse_probs(*one)
    freq = torch.bincount(got, minlength=V).double() / n
    tv = 0.5 * float((freq - exact[0, 0] / exact[0, 0].sum()).abs().sum())
    assert tv < 0.01, (sampler, process, tv)
