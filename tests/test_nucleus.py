"""Nucleus filtering without a sort (textdiff/samplers/nucleus.py) against its definition by a full
sort, and the fused path that scores Dream's filtered p̃ (``score_from = "sampling"``) from it."""
from __future__ import annotations

import math

import pytest
import torch

import textdiff
import textdiff.samplers.nucleus as nucleus_module
from textdiff.samplers.draws import step_uniforms
from textdiff.samplers.nucleus import Buffers, filtered_weights, keep_nucleus, nucleus, nucleus_cut, p0_bounds


@pytest.fixture(params=["compiled", "eager"])
def path(request, monkeypatch):
    """Run a test through the compiled row loops (numba, CPU) and through the eager passes."""
    if request.param == "compiled":
        pytest.importorskip("numba")
    monkeypatch.setattr(nucleus_module, "USE_JIT", request.param == "compiled")
    return request.param


def kept_by_sort(lg: torch.Tensor, top_p: float) -> torch.Tensor:
    """[..., V] bool, from the definition: sort the probabilities; a token is kept iff the mass
    STRICTLY above it (tokens of larger probability) is below top_p, so equal logits share a fate."""
    p = torch.softmax(lg.double(), -1)
    srt, order = torch.sort(p, dim=-1, descending=True)
    before = srt.cumsum(-1) - srt  # mass ranked above, ties counted in some order
    first = torch.ones_like(srt, dtype=torch.bool)
    first[..., 1:] = srt[..., 1:] != srt[..., :-1]  # the first of each group of equal probabilities
    # the mass strictly above a tied group is the "before" of its first member: carry it along the group
    idx = torch.where(first, torch.arange(srt.shape[-1]).expand_as(srt), torch.zeros_like(order))
    group_start = torch.cummax(idx, dim=-1).values
    strictly_above = before.gather(-1, group_start)
    return torch.zeros_like(srt, dtype=torch.bool).scatter(-1, order, strictly_above < top_p)


@pytest.mark.parametrize("V", [5, 50, 3000, 50257])
@pytest.mark.parametrize("scale", [0.01, 0.5, 4.0, 40.0])  # near uniform (a random model at T = 1) to peaked
def test_nucleus_keeps_the_full_sorts_set(V, scale, path):
    g = torch.Generator().manual_seed(V)
    lg = (torch.randn(3, 7 if V < 50257 else 2, V, generator=g) * scale).double()
    for top_p in (0.01, 0.3, 0.9, 0.999, 1 - 1e-9):
        got = nucleus(lg, top_p)
        want = kept_by_sort(lg, top_p)
        assert torch.equal(torch.isfinite(got), want), (V, scale, top_p)
        assert torch.equal(got[want], lg[want])  # kept logits unchanged


def test_nucleus_keeps_tied_logits_whole_and_in_place_gives_the_same(path):
    """p = (0.69, 0.09, 0.09, 0.09, 0.03), top_p = 0.8: a sort keeps two of the three tied tokens in some
    order; the cut keeps all three (bf16 logits tie often), and never the one below them."""
    lg = torch.tensor([[1.0, 3.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    got = nucleus(lg, 0.8)
    assert torch.isinf(got).tolist() == [[False, False, False, True, False]]
    mine = lg.clone()
    assert nucleus(mine, 0.8, inplace=True) is not None and torch.equal(mine, got)


def test_nucleus_on_bf16_logits_with_many_ties_and_minus_infinity(path):
    """bf16 logits (few distinct values, so large tied groups straddle the cut), [MASK]-style −∞ entries
    and a row with one finite logit."""
    g = torch.Generator().manual_seed(0)
    lg = (torch.randn(6, 4000, generator=g) * 2).to(torch.bfloat16).double()
    lg[:, ::97] = float("-inf")
    lg[5] = float("-inf")
    lg[5, 123] = 0.5
    for top_p in (0.2, 0.5, 0.95):
        got = nucleus(lg, top_p)
        assert torch.equal(torch.isfinite(got), kept_by_sort(lg, top_p) & torch.isfinite(lg))
    assert torch.isfinite(nucleus(lg, 0.5)[5]).nonzero().flatten().tolist() == [123]


def test_nucleus_rows_are_independent_of_the_batch(path):
    """Each row's cut depends on that row alone (the bin masses are summed row by row): the same row
    alone or among others gives bit-identical kept sets and weights."""
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(9, 50257, generator=g) * 0.45
    rows[:, -1] = float("-inf")
    together = filtered_weights(rows.clone(), 0.2, 0.95, Buffers())[1].clone()
    for r in (0, 4, 8):
        alone = filtered_weights(rows[r:r + 1].clone(), 0.2, 0.95, Buffers())[1]
        assert torch.equal(alone[0], together[r])


@pytest.mark.parametrize("temperature,top_p", [(0.2, 0.95), (1.0, 0.9), (0.7, 0.3)])
def test_filtered_weights_are_dreams_filtered_distribution(temperature, top_p, path):
    """w / Σ w is softmax(l / T) restricted to the nucleus of the sort's definition, renormalised."""
    g = torch.Generator().manual_seed(2)
    rows = torch.randn(5, 3001, generator=g) * 0.5
    rows[:, 7] = float("-inf")
    lg = rows.double() / temperature
    keep = kept_by_sort(lg, top_p)
    want = torch.softmax(lg.masked_fill(~keep, float("-inf")), -1)
    d, w = filtered_weights(rows.clone(), temperature, top_p, Buffers())[:2]
    assert torch.equal(w > 0, keep)
    assert torch.allclose(w / w.sum(-1, keepdim=True), want, rtol=1e-12, atol=0)
    assert bool(torch.isfinite(d).all())  # −∞ logits are read as far negative: 0 · d = 0 in Σ w d
    assert torch.allclose(d[keep], ((rows.double() - rows.amax(-1, keepdim=True)) / temperature / math.log(2))[keep],
                          rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kind", ["flat", "peaked", "bf16 ties", "zero row"])
def test_compiled_and_eager_cuts_keep_the_same_tokens_and_sums(kind, monkeypatch):
    """The compiled row loops and the eager passes: the same kept tokens (dropped ones zeroed in place),
    the same Σ w and Σ w d up to the order of the float64 sums."""
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(6)
    rows = torch.randn(5, 20011, generator=g) * (4.0 if kind == "peaked" else 0.45)
    if kind == "bf16 ties":
        rows = rows.to(torch.bfloat16).float()
    rows[:, 3] = float("-inf")
    if kind == "zero row":
        rows[2] = float("-inf")
    out = {}
    for jit in (True, False):
        monkeypatch.setattr(nucleus_module, "USE_JIT", jit)
        for temperature, top_p in ((0.2, 0.95), (1.0, 0.9), (0.7, 0.3)):
            f = filtered_weights(rows, temperature, top_p, Buffers(), entropy=True)
            out[jit, temperature] = (f.w.clone(), f.total.clone(), f.wd.clone(), nucleus_cut(
                torch.exp2(f.d), top_p))
    for temperature in (0.2, 1.0, 0.7):
        (w1, t1, wd1, c1), (w0, t0, wd0, c0) = out[True, temperature], out[False, temperature]
        assert torch.equal(w1 > 0, w0 > 0) and torch.equal(w1, w0)
        mass = t0 > 0  # (a row of zeros: any cut ≤ 0 keeps its zeros)
        assert torch.equal(c1[mass], c0[mass]) and bool((c1[~mass] <= 0).all() and (c0[~mass] <= 0).all())
        assert torch.allclose(t1, t0, rtol=1e-13, atol=0) and torch.allclose(wd1, wd0, rtol=1e-12, atol=1e-300)
    if kind == "zero row":
        assert float(out[True, 1.0][1][2]) == 0.0 and not bool((out[True, 1.0][0][2] != 0).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("temperature,top_p", [(1.0, 0.9), (0.2, 0.95), (0.7, 0.5)])
def test_p0_bounds_hold_the_exact_filtered_probability(dtype, temperature, top_p, path):
    """lo ≤ p̃(x) ≤ hi (p̃ from :func:`filtered_weights`, float64), for tokens all around the cut (the
    argmax, random ones, and the kept / dropped tokens next to the cut), and hi / lo ≤ (1 + ε) / top_p
    where x is kept by a margin."""
    g = torch.Generator().manual_seed(7)
    n, V = 24, 6007
    rows = torch.randn(n, V, generator=g) * torch.linspace(0.05, 5.0, n)[:, None]
    rows[:, 11] = float("-inf")
    rows = rows.to(dtype)
    f = filtered_weights(rows.float() if dtype == torch.bfloat16 else rows, temperature, top_p, Buffers())
    p = f.w / f.total[:, None]  # [n, V] exact p̃
    cut = torch.where(f.w > 0, f.w, torch.full_like(f.w, 2.0)).amin(-1)  # smallest kept weight
    below = torch.where(f.w == 0, torch.exp2(f.d), torch.full_like(f.w, -1.0)).amax(-1)  # largest dropped
    w = torch.exp2(f.d)
    picks = [w.argmax(-1), torch.randint(0, V, (n,), generator=g), (w == cut[:, None]).int().argmax(-1),
             (w == below[:, None]).int().argmax(-1), torch.full((n,), 11)]
    for x in picks:
        lo, hi = p0_bounds(rows, x, temperature, top_p, Buffers())
        exact = p.gather(-1, x[:, None])[:, 0]
        assert bool((lo <= exact).all()) and bool((exact <= hi).all())
    lo, hi = p0_bounds(rows, picks[0], temperature, top_p, Buffers())  # the argmax: always kept
    assert bool((lo > 0).all()) and bool((hi <= lo * (1 + 1e-3) / top_p).all())


@pytest.mark.parametrize("t_value", [0.95, 0.5, 0.05])
def test_uniform_top_p_step_cuts_only_the_rows_it_needs_and_draws_as_the_generic_filter(t_value, monkeypatch):
    """UDLM's ancestral step with top-p decides most positions from the bounds on p̃0(x) alone and cuts
    the nucleus only where the decision is in doubt or a token is drawn from p̃0; the draws equal the
    generic filter's (every row filtered and read exactly) with the same uniforms."""
    from textdiff.samplers import uniform_rows
    from textdiff.samplers.uniform_rows import udlm_posterior_step

    V, B, L = 4001, 4, 64
    proc = textdiff.build_process("uniform", vocab_size=V)
    smp = textdiff.build_sampler({"name": "ancestral", "temperature": 0.8, "top_p": 0.9}, proc)
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(B, L, V, generator=g) * 3.0
    # half the positions hold their row's argmax, as in a trajectory the model mostly agrees with
    x_t = torch.where(torch.rand(B, L, generator=g) < 0.5, logits.argmax(-1), torch.randint(0, V, (B, L), generator=g))
    u = torch.rand(B, L, 3, generator=g, dtype=torch.float64)
    t = torch.full((B,), t_value, dtype=torch.float64)
    s = t - 0.05
    cut_rows = []
    real = uniform_rows.filtered_weights
    monkeypatch.setattr(uniform_rows, "filtered_weights", lambda r, *a, **k: cut_rows.append(r.shape[0]) or real(r, *a, **k))
    screened = udlm_posterior_step(proc, logits, x_t, t, s, u, x0_filter=smp.filter, x0_nucleus=(0.8, 0.9))
    generic = udlm_posterior_step(proc, logits, x_t, t, s, u, x0_filter=smp.filter)
    assert torch.equal(screened, generic)
    assert bool((screened != x_t).any())
    assert sum(cut_rows) < B * L / 2, cut_rows  # most rows decided without a cut


def test_a_cut_needs_a_top_p_below_one():
    with pytest.raises(ValueError, match="top_p"):
        nucleus_cut(torch.ones(1, 4, dtype=torch.float64), 1.0)


@pytest.mark.parametrize("ordering", ["entropy", "margin"])
def test_orderings_that_ignore_the_candidate_draw_it_at_committed_positions_only(ordering):
    """Entropy / margin scores do not depend on x̂0, so the sampler draws x̂0 only where it commits;
    with the same uniforms this is the step that draws at every masked position."""
    V, B, L = 3001, 3, 40
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=V - 1)
    smp = textdiff.build_sampler({"name": "confidence", "ordering": ordering, "temperature": 0.2, "top_p": 0.95,
                                  "score_from": "sampling"}, proc)
    smp.set_timesteps(8)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(B, L, V, generator=g)
    x_t = torch.where(torch.rand(B, L, generator=g) < 0.6, V - 1, torch.randint(0, V - 1, (B, L), generator=g))
    t, s = torch.full((B,), 0.5, dtype=torch.float64), torch.full((B,), 0.375, dtype=torch.float64)
    out = smp.step(logits, t, s, x_t, [torch.Generator().manual_seed(b) for b in range(B)])
    # the reference: every masked position drawn, the same uniforms, the same ranking
    noise = x_t == V - 1
    u = step_uniforms(x_t, 3, [torch.Generator().manual_seed(b) for b in range(B)])
    x0_all, score = smp.candidates(logits, x_t, noise, u[..., 0])
    k = smp.commit_counts(noise.sum(1), t, s)
    from textdiff.samplers.unmask_rows import rank_commit

    commit = rank_commit(score, noise, k)
    assert bool(commit.any())
    assert torch.equal(out.x_s, torch.where(commit, x0_all, x_t))
    assert torch.equal(out.x0_pred, out.x_s)  # the guesses it made: the committed draws


@pytest.mark.parametrize("ordering", ["confidence", "margin", "entropy"])
@pytest.mark.parametrize("temperature", [0.0, 0.2, 1.0])
def test_fused_scores_equal_the_filter_then_score_path(ordering, temperature):
    """The fused path (weights straight from the rows) and the generic one (filter_logits, then the row
    kernel on the filtered rows) give the same candidates and scores, with and without top-p."""
    V = 5003
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=V - 1)
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 30, V, generator=g) * 0.7
    x_t = torch.full((2, 30), V - 1)
    u = torch.rand(2, 30, generator=g, dtype=torch.float64)
    for top_p in (1.0, 0.9):
        knobs = {"name": "confidence", "ordering": ordering, "temperature": temperature, "top_p": top_p,
                 "score_from": "sampling"}
        fused = textdiff.build_sampler(knobs, proc)
        plain = textdiff.build_sampler(knobs, proc)
        plain.fused_filter = False
        x0_f, s_f = fused.candidates(logits, x_t, x_t == V - 1, u)
        x0_p, s_p = plain.candidates(logits, x_t, x_t == V - 1, u)
        assert torch.equal(x0_f, x0_p)
        assert torch.allclose(s_f, s_p, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_uniform_ancestral_reads_the_nucleus_weights_as_the_filtered_logits(temperature):
    """UDLM's posterior step with p̃0 from the fused weights (``x0_nucleus``) makes the draws of the
    generic filter (``x0_filter`` = filter_logits) with the same uniforms."""
    from textdiff.samplers.uniform_rows import udlm_posterior_step

    V, B, L = 4001, 3, 50
    proc = textdiff.build_process("uniform", vocab_size=V)
    smp = textdiff.build_sampler({"name": "ancestral", "temperature": temperature, "top_p": 0.8}, proc)
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(B, L, V, generator=g) * 1.5
    x_t = torch.randint(0, V, (B, L), generator=g)
    u = torch.rand(B, L, 3, generator=g, dtype=torch.float64)
    t, s = torch.full((B,), 0.6, dtype=torch.float64), torch.full((B,), 0.5, dtype=torch.float64)
    fused = udlm_posterior_step(proc, logits, x_t, t, s, u, x0_filter=smp.filter, x0_nucleus=(temperature, 0.8))
    generic = udlm_posterior_step(proc, logits, x_t, t, s, u, x0_filter=smp.filter)
    assert bool((fused != x_t).any())
    assert torch.equal(fused, generic)


DREAM = {"name": "confidence", "ordering": "entropy", "temperature": 0.2, "top_p": 0.95, "score_from": "sampling",
         "commit_rounding": "floor", "time_eps": 1e-3}


@pytest.mark.parametrize("knobs,process_name", [(DREAM, "masked"), ({"name": "ancestral", "top_p": 0.9}, "uniform")])
def test_filtered_generation_is_batch_invariant(knobs, process_name):
    """Whole generate() runs through the fused top-p paths at a vocabulary wide enough for the
    two-level kernels: each row of a batch is the row generated alone with its seed."""
    from textdiff.generation import generate
    from textdiff.models import TextDiffConfig, TextDiffModel

    V = 3001
    proc = textdiff.build_process(process_name, vocab_size=V, mask_id=V - 1)
    torch.manual_seed(0)
    model = TextDiffModel(TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2.0,
                                         max_position_embeddings=64, mask_token_id=V - 1, initializer_range=0.5)).eval()
    smp = textdiff.build_sampler(knobs, proc)
    prompts, seeds = [[1, 2, 3], [4], [5, 6]], [11, 12, 13]
    out = generate(model, proc, smp, prompts, max_new_tokens=12, steps=12, seed=seeds)
    if process_name == "masked":
        assert not bool((out.sequences[:, 3:] == V - 1).any())  # no [MASK] left
    for b, p in enumerate(prompts):
        alone = generate(model, proc, smp, [p], max_new_tokens=12, steps=12, seed=[seeds[b]])
        assert alone.sequences[0, len(p):].tolist() == out.sequences[b, 3:].tolist(), f"row {b}"


def test_nucleus_at_top_p_one_keeps_everything_and_nan_rows_do_not_crash(path):
    lg = torch.randn(2, 3000, dtype=torch.float64)
    assert torch.equal(nucleus(lg, 1.0), lg)
    lg[1, 5] = float("nan")
    out = nucleus(lg, 0.9)  # garbage in, but no index error from the bit-pattern bins
    assert torch.equal(torch.isfinite(out[0]), kept_by_sort(lg[:1], 0.9)[0])
