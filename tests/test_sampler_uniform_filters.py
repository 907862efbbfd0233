"""Uniform-graph samplers with temperature / top-k / top-p take the row kernels too, with the law of
the full [B, L, V] definitions: ancestral filters p_θ(x0 | x_t) before the posterior; Euler and
analytic keep the jump probability and filter the targets (``LogitFilter.transition``)."""
from __future__ import annotations

import pytest
import torch

import textdiff
from textdiff.samplers.euler import tau_leap_probs

V = 7
KNOBS = [{"top_k": 3}, {"top_p": 0.6}, {"temperature": 0.5, "top_k": 4}, {"temperature": 0.0}]


def exact_law(smp, proc, sampler, logits, x, t, s):
    """The filtered one-step law [V] of one position from the [B, L, V] functions (the slow path)."""
    if sampler == "ancestral":
        return proc.reverse_probs(smp.filter(proc.x0_logits(logits, x, t)), x, t, s)[0, 0]
    final = bool((s <= 0).all())
    if sampler == "analytic" or (final and proc.parameterization == "score"):
        probs = proc.analytic_probs(logits, x, t, s)
    elif final:
        probs = proc.reverse_probs(logits, x, t, s)
    else:
        probs = tau_leap_probs(proc.reverse_rate(logits, x, t), x, t - s)
    return smp.filter.transition(probs / probs.sum(-1, keepdim=True), x)[0, 0]


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("sampler,process", [("ancestral", "uniform"), ("euler", "uniform"),
                                             ("euler", "sedd_uniform"), ("analytic", "sedd_uniform")])
@pytest.mark.parametrize("s_value", [0.3, 0.0])
def test_filtered_row_kernels_follow_the_full_filtered_law(sampler, process, knobs, s_value):
    proc = textdiff.build_process(process, vocab_size=V)
    smp = textdiff.build_sampler({"name": sampler, **knobs}, proc)
    n = 40_000
    logits = 1.5 * torch.randn(1, 1, V, generator=torch.Generator().manual_seed(7)).expand(n, 1, V).contiguous()
    x = torch.full((n, 1), 2)
    t, s = torch.full((n,), 0.6, dtype=torch.float64), torch.full((n,), s_value, dtype=torch.float64)
    got = smp.step(logits, t, s, x, torch.Generator().manual_seed(8)).x_s[:, 0]
    law = exact_law(smp, proc, sampler, logits[:1], x[:1], t[:1], s[:1])
    freq = torch.bincount(got, minlength=V).double() / n
    assert float(law.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((freq[law == 0] == 0).all())  # filtered-out targets never drawn
    assert 0.5 * float((freq - law).abs().sum()) < 0.012, (sampler, process, knobs)


def test_filters_change_the_uniform_step():
    """The filtered kernels are not the unfiltered ones: top_k = 1 sends every jump to one target."""
    proc = textdiff.build_process("uniform", vocab_size=V)
    logits = torch.randn(1, 1, V, generator=torch.Generator().manual_seed(9)).expand(5000, 1, V).contiguous()
    x = torch.full((5000, 1), 2)
    t, s = torch.full((5000,), 0.9, dtype=torch.float64), torch.full((5000,), 0.2, dtype=torch.float64)
    out = textdiff.build_sampler({"name": "euler", "top_k": 1}, proc).step(logits, t, s, x, torch.Generator().manual_seed(0)).x_s
    assert set(out[:, 0].tolist()) <= {2, int(logits[0, 0].masked_fill(torch.arange(V) == 2, -1e9).argmax())}
    plain = textdiff.build_sampler("euler", proc).step(logits, t, s, x, torch.Generator().manual_seed(0)).x_s
    assert len(set(plain[:, 0].tolist())) > 2


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sparse_top_k_posterior_draws_what_the_dense_filter_draws(temperature):
    """Ancestral over the uniform process reads top-k sparsely (a selection, not a float64 pass over
    V); with the same uniforms it moves every position exactly as the dense filtered kernel does."""
    from textdiff.samplers.uniform_rows import udlm_posterior_step

    Vb = 300
    proc = textdiff.build_process({"name": "uniform"}, vocab_size=Vb)
    smp = textdiff.build_sampler({"name": "ancestral", "top_k": 5, "temperature": temperature}, proc)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 40, Vb, generator=g) * 3
    x = torch.randint(0, Vb, (3, 40), generator=g)
    t, s = torch.full((3,), 0.6, dtype=torch.float64), torch.full((3,), 0.3, dtype=torch.float64)
    u = torch.rand(3, 40, 3, generator=g, dtype=torch.float64)
    dense = udlm_posterior_step(proc, logits, x, t, s, u, x0_filter=smp.filter)
    sparse = udlm_posterior_step(proc, logits, x, t, s, u, x0_filter=smp.filter, x0_top_k=(5, temperature))
    assert torch.equal(dense, sparse) and bool((dense != x).any())
