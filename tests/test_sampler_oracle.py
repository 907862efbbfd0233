"""Oracle tests: exact denoisers of a small enumerable distribution, used through ``generate()``.

The law: sequences of length L = 4 over K = 3 symbols (81 outcomes) with an arbitrary joint law
p = 0.95 · Dirichlet(0.1) + 0.05 · uniform (fixed seed: strongly dependent positions, full support).
For each process the exact denoiser is computed by enumeration:

* masked: p(x0^l | x_t) ∝ Σ_{x0 consistent with the unmasked tokens of x_t} p(x0);
* uniform (UDLM's parameterisation): the leave-one-out posterior
  x_θ^l(v) = p(x0^l = v | x_t^{−l}) ∝ Σ_{x0: x0^l = v} p(x0) Π_{m ≠ l} q_t(x_t^m | x0^m).

Each exact sampler draws S samples in ONE batched ``generate`` call and the empirical law must be
within total variation 0.03 of p. With S = 16384 the sampling noise alone is about 0.015.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import textdiff
from textdiff.generation import generate

L, K = 4, 3
S = 12288  # samples per sampler
MASK = K  # the masked process's vocabulary is K symbols + [MASK]


def joint_law() -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    gam = torch._standard_gamma(torch.full((K ** L,), 0.05, dtype=torch.float64), generator=g)
    return 0.99 * gam / gam.sum() + 0.01 / K ** L


LAW = joint_law()  # [81]
SEQS = torch.stack([(torch.arange(K ** L) // K ** l) % K for l in range(L)], dim=1)  # [81, L]: index = Σ x_l K^l
ONEHOT = torch.nn.functional.one_hot(SEQS, K).double()  # [81, L, K]


def tv_distance(samples: torch.Tensor) -> float:
    """Total variation between the empirical law of ``samples`` [S, L] and LAW."""
    assert samples.shape[1] == L and int(samples.min()) >= 0 and int(samples.max()) < K
    index = (samples * (K ** torch.arange(L))).sum(1)
    emp = torch.bincount(index, minlength=K ** L).double() / samples.shape[0]
    return 0.5 * float((emp - LAW).abs().sum())


class Oracle(torch.nn.Module):
    """A 'model' returning the exact logits [B, L, V] of ``fn(ids, t)``.

    ``fn`` is evaluated once per distinct t on all V^L possible rows and looked up by row, which keeps
    batches of tens of thousands of samples cheap.
    """

    def __init__(self, fn, vocab_size: int, time_conditioning: bool = False):
        super().__init__()
        self.fn = fn
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(attention="bidirectional", max_position_embeddings=L, block_size=None,
                                      time_conditioning=time_conditioning, vocab_size=vocab_size, num_layers=1)
        self.states = torch.stack([(torch.arange(vocab_size ** L) // vocab_size ** l) % vocab_size for l in range(L)], 1)
        self.base = vocab_size ** torch.arange(L)
        self.tables: dict = {}
        self.calls = 0

    def table(self, t: float) -> torch.Tensor:
        if t not in self.tables:
            tt = None if t is None else torch.full((len(self.states),), t, dtype=torch.float64)
            self.tables[t] = self.fn(self.states, tt)
        return self.tables[t]

    def forward(self, input_ids, t=None, attention_mask=None, position_ids=None, cache=None, update_cache=False):
        self.calls += 1
        code = (input_ids * self.base).sum(1)  # [B] index of each row among the V^L states
        if t is None:
            return self.table(None)[code]
        out = None
        for tv in torch.unique(t).tolist():
            rows = t == tv
            tab = self.table(tv)
            if out is None:
                out = tab.new_empty((input_ids.shape[0],) + tab.shape[1:])
            out[rows] = tab[code[rows]]
        return out


def masked_logits(ids, t=None):
    """log p(x0^l = v | unmasked tokens of ids) [B, L, K + 1] ([MASK] column −inf)."""
    compat = ((ids[:, None, :] == MASK) | (ids[:, None, :] == SEQS[None])).all(-1)  # [B, 81]
    w = compat.double() * LAW  # [B, 81]
    marg = torch.einsum("bs,slk->blk", w, ONEHOT)  # [B, L, K]
    logp = torch.log((marg / marg.sum(-1, keepdim=True)).clamp_min(1e-300))
    return torch.cat([logp, torch.full_like(logp[..., :1], float("-inf"))], -1).float()


def leave_one_out(process, ids, t):
    """[B, L, K]: p(x0^l = v, x_t^{−l}) = Σ_{x0: x0^l = v} p(x0) Π_{m ≠ l} q_t(x_t^m | x0^m) (unnormalised)."""
    a = process.alpha(t.double())[:, None, None]  # [B, 1, 1]
    match = (ids[:, None, :] == SEQS[None]).double()  # [B, 81, L]
    q = a * match + (1 - a) / K  # q_t(x_t^m | x0^m)
    out = []
    for l in range(L):
        others = torch.cat([q[..., :l], q[..., l + 1:]], -1).prod(-1) * LAW  # [B, 81]
        out.append(others @ ONEHOT[:, l])  # [B, K]
    return torch.stack(out, 1)


def uniform_logits(process):
    """UDLM's exact denoiser: log p(x0^l | x_t^{−l}) [B, L, K]."""
    def fn(ids, t):
        post = leave_one_out(process, ids, t)
        return torch.log(post / post.sum(-1, keepdim=True)).float()

    return fn


def sedd_absorb_logits(ids, t=None):
    """SEDD absorbing: log s_y = logit_y − log(V − 1) − log(e^σ − 1) must equal log(α/(1 − α) p(x0 = y | x_t)),
    so logit_y = log p(x0 = y | x_t) + log(V − 1) (time-free)."""
    return masked_logits(ids) + math.log(K)  # V − 1 = K


def sedd_uniform_logits(process):
    """SEDD uniform: log s_y = log p_t(x^{l←y}) − log p_t(x), p_t(x^{l←y}) = Σ_v LOO[l, v] q_t(y | v)."""
    def fn(ids, t):
        loo = leave_one_out(process, ids, t)  # [B, L, K]
        a = process.alpha(t.double())[:, None, None]
        pt = a * loo + (1 - a) / K * loo.sum(-1, keepdim=True)  # p_t(x^{l←y}) [B, L, K]
        logp = torch.log(pt)
        return (logp - logp.gather(-1, ids[..., None])).float()

    return fn


def masked_setup():
    process = textdiff.build_process("masked", vocab_size=K + 1, mask_id=MASK)
    return process, Oracle(masked_logits, K + 1)


def uniform_setup():
    process = textdiff.build_process({"name": "uniform", "time_conditioning": True}, vocab_size=K)
    return process, Oracle(uniform_logits(process), K, time_conditioning=True)


def sedd_absorb_setup():
    process = textdiff.build_process("sedd_absorb", vocab_size=K + 1, mask_id=MASK)
    return process, Oracle(sedd_absorb_logits, K + 1)


def sedd_uniform_setup():
    process = textdiff.build_process({"name": "sedd_uniform", "time_conditioning": True}, vocab_size=K)
    return process, Oracle(sedd_uniform_logits(process), K, time_conditioning=True)


SETUPS = {"masked": masked_setup, "uniform": uniform_setup, "sedd_absorb": sedd_absorb_setup,
          "sedd_uniform": sedd_uniform_setup}


def draw(setup, sampler, steps, seed=0, n=S):
    process, model = setup()
    smp = textdiff.build_sampler(sampler, process)
    out = generate(model, process, smp, None, batch_size=n, max_new_tokens=L, steps=steps,
                   generator=torch.Generator().manual_seed(seed))
    return out, model


# ---------------------------------------------------------------------------------------------
STEPS = 96  # enough for every exact sampler's discretisation error to sit below the sampling noise


def test_oracle_is_exact_by_construction():
    """Sanity of the oracle itself: the all-mask prediction is the true per-position marginal, and
    S exact draws from the law are within the TV noise floor."""
    logits = masked_logits(torch.full((1, L), MASK))
    marg = torch.einsum("s,slk->lk", LAW, ONEHOT)
    assert torch.allclose(logits[0, :, :K].double().exp(), marg, atol=1e-6)
    samples = SEQS[torch.multinomial(LAW, S, replacement=True, generator=torch.Generator().manual_seed(0))]
    assert tv_distance(samples) < 0.02


def test_masked_ancestral_reproduces_the_law_and_error_shrinks_with_steps():
    """MDLM ancestral: its only error is unmasking several tokens independently in one step, which
    vanishes with more steps. One step = four independent marginals, far from the joint law."""
    spec = {"name": "ancestral", "cache_unchanged": False}
    tv = {n: tv_distance(draw(masked_setup, spec, steps=n)[0].sequences) for n in (1, 4, STEPS)}
    assert tv[1] > tv[4] > tv[STEPS], tv
    assert tv[1] > 0.2 and tv[STEPS] <= 0.03, tv


def test_first_hitting_reproduces_the_law_with_one_call_per_token():
    out, model = draw(masked_setup, "first_hitting", steps=1)
    assert out.nfe == L == model.calls  # exactly one unmasking per step, whatever `steps` says
    assert tv_distance(out.sequences) <= 0.03


def test_cached_ancestral_is_exact_and_saves_calls():
    """Cached-NFE ancestral == uncached ancestral token for token, with fewer model calls."""
    for seed in range(4):  # small batches: a call is skipped only when no row changed
        plain, _ = draw(masked_setup, {"name": "ancestral", "cache_unchanged": False}, steps=64, n=4, seed=seed)
        cached, model = draw(masked_setup, {"name": "ancestral", "cache_unchanged": True}, steps=64, n=4, seed=seed)
        assert torch.equal(plain.sequences, cached.sequences)
        assert cached.nfe < plain.nfe and cached.nfe == model.calls
        assert cached.nfe <= 4 * L + 1  # at most one call per step in which some token was unmasked


@pytest.mark.parametrize("process,sampler", [
    ("uniform", "ancestral"), ("uniform", "euler"), ("sedd_absorb", "euler"),
    ("sedd_absorb", "analytic"), ("sedd_uniform", "analytic"),
])
def test_sampler_reproduces_the_law(process, sampler):
    out, _ = draw(SETUPS[process], sampler, steps=STEPS)
    tv = tv_distance(out.sequences)
    assert tv <= 0.03, f"{sampler} on {process}: TV {tv:.4f}"


def test_tau_leaping_reproduces_the_law_and_error_shrinks_with_steps():
    """Euler (tau-leaping, no final denoising step) on the exact SEDD-uniform ratios."""
    spec = {"name": "euler", "final_denoise": False}
    tv = {n: tv_distance(draw(sedd_uniform_setup, spec, steps=n)[0].sequences) for n in (2, 8, STEPS)}
    assert tv[2] > tv[8] > tv[STEPS], tv
    assert tv[2] > 0.3 and tv[STEPS] <= 0.03, tv
