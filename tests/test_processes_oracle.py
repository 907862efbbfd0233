"""Oracle tests: on a small enumerable distribution (length-3 rows over 3 symbols, an arbitrary joint
law) the exact denoiser of every process is computed by enumeration, and its NELBO is computed

* exactly: Σ over every corrupted x_t of q_t(x_t | x0) · loss, integrated over t by Gauss–Legendre
  quadrature (no Monte Carlo at all), and
* by Monte Carlo through the production path ``objective.nelbo_terms`` (which calls ``model(**inputs).logits``).

The NELBO must be an upper bound on −log p(x0) for every x0 and every process; for the masked
process it must equal it. With the exact denoiser the continuous-time bound is tight for every
family up to the prior term, which is checked too.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from textdiff.objective import nelbo_terms
from textdiff import build_process

K, L = 3, 3  # symbols, length
MASK = 3  # the [MASK] id for absorbing processes (V = 4); uniform processes use V = 3
X0 = torch.tensor(list(itertools.product(range(K), repeat=L)))  # [27, L] every clean row
P0 = torch.softmax(1.5 * torch.randn(len(X0), generator=torch.Generator().manual_seed(0), dtype=torch.float64), 0)  # arbitrary joint law
NLL = -torch.log(P0)  # [27] exact −log p(x0)

SPECS = {  # process spec, vocab size, mask id
    "masked": ({"name": "masked", "schedule": {"name": "loglinear", "eps": 0.0}}, 4, MASK),
    "masked_cosine": ({"name": "masked", "schedule": {"name": "cosine", "eps": 0.0}}, 4, MASK),
    "sedd_absorb": ({"name": "sedd_absorb", "schedule": {"name": "loglinear", "eps": 0.0}}, 4, MASK),
    "uniform": ({"name": "uniform"}, 3, None),
    "uniform_geometric": ({"name": "uniform", "schedule": {"name": "geometric", "sigma_min": 1e-4, "sigma_max": 10.0}}, 3, None),
    "sedd_uniform": ({"name": "sedd_uniform"}, 3, None),
    "ar": ({"name": "ar"}, 4, MASK),
}


def q_rows(process, t: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """q_t(x_t | x0) [S, 27] for rows x_t [S, L] at times t [S] (float64)."""
    a = process.alpha(t.double())[:, None]  # [S, 1]
    m = process.schedule.mask_rate(t.double())[:, None]  # 1 − α without cancellation
    out = torch.ones(xt.shape[0], len(X0), dtype=torch.float64)
    for l in range(L):
        hit = (xt[:, l, None] == X0[None, :, l]).double()  # [S, 27]
        if process.needs_mask_token:
            factor = a * hit + m * (xt[:, l, None] == MASK).double()
        else:
            factor = a * hit + m / process.vocab_size
        out = out * factor
    return out


def marginal(weights: torch.Tensor, l: int, V: int) -> torch.Tensor:
    """Σ_{x0 : x0^l = v} weights[:, x0] -> normalised log-probabilities [S, V] (−inf outside 0..K-1)."""
    m = weights @ torch.nn.functional.one_hot(X0[:, l], V).double()  # [S, V]
    return torch.log(m / m.sum(1, keepdim=True))


class Oracle(nn.Module):
    """The exact denoiser of ``process`` for P0, as a model: ``forward(input_ids, t) -> .logits [B, L, V]``."""

    def __init__(self, process, V: int):
        super().__init__()
        self.process, self.V = process, V
        self.dummy = nn.Parameter(torch.zeros(()))
        self.config = type("C", (), {"time_conditioning": True, "attention": "bidirectional"})()

    def forward(self, input_ids, t=None, **kwargs):
        S, V, name = input_ids.shape[0], self.V, self.process.config.name
        t = torch.zeros(S) if t is None else torch.as_tensor(t).reshape(-1).expand(S)
        out = torch.zeros(S, L, V, dtype=torch.float64)
        if name == "ar":  # input [START, x0_0, x0_1]: position i predicts x0_i from x0_{<i}
            for i in range(L):
                prefix = (X0[None, :, :i] == input_ids[:, None, 1:i + 1]).all(-1)  # [S, 27]
                out[:, i] = marginal(P0 * prefix, i, V).clamp_min(-1e4)
            return type("Out", (), {"logits": out})()
        like = q_rows(self.process, t, input_ids)  # [S, 27]
        for l in range(L):
            if name in ("masked", "sedd_absorb"):  # p(x0^l | x_t): the unmasked tokens decide
                out[:, l] = marginal(P0 * like, l, V).clamp_min(-1e4)
                if name == "sedd_absorb":  # l̃ = logit − log(V − 1) must equal log p(x0^l | x_t)
                    out[:, l] += math.log(V - 1)
            elif name == "uniform":  # UDLM's exact denoiser: the leave-one-out posterior q(x0^l | x_t^{-l})
                a = self.process.alpha(t.double())[:, None]
                q_own = a * (input_ids[:, l, None] == X0[None, :, l]).double() + (1 - a) / V
                out[:, l] = marginal(P0 * like / q_own, l, V)
            else:  # sedd_uniform: log p_t(x^{l<-y}) − log p_t(x)
                pt = []
                for y in range(V):
                    z = input_ids.clone()
                    z[:, l] = y
                    pt.append(q_rows(self.process, t, z) @ P0)
                pt = torch.stack(pt, 1)  # [S, V]
                out[:, l] = torch.log(pt / pt.gather(1, input_ids[:, l:l + 1]))
        return type("Out", (), {"logits": out})()


BREAKS = [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0]


def quadrature(nodes: int):
    """Composite Gauss–Legendre on intervals graded towards both ends (schedules are stiff there)."""
    u, w = np.polynomial.legendre.leggauss(nodes)
    ts, ws = [], []
    for lo, hi in zip(BREAKS[:-1], BREAKS[1:]):
        ts.append(lo + (hi - lo) * (u + 1) / 2)
        ws.append((hi - lo) / 2 * w)
    return torch.tensor(np.concatenate(ts)), torch.tensor(np.concatenate(ws))


def exact_nelbo(key: str, nodes: int = 12) -> tuple[torch.Tensor, object]:
    """NELBO(x0) [27] with the exact denoiser: enumeration over x_t, quadrature over t, plus prior."""
    spec, V, mask_id = SPECS[key]
    process = build_process(spec, vocab_size=V, mask_id=mask_id)
    oracle = Oracle(process, V)
    if key == "ar":
        inputs = process.model_inputs(X0, X0, None)["input_ids"]
        return process.loss(oracle(inputs).logits, X0, X0, torch.zeros(len(X0))).sum(1), process
    XT = torch.tensor(list(itertools.product(range(V), repeat=L)))  # [S, L] every x_t
    S, N = len(XT), len(X0)
    total = torch.zeros(N, dtype=torch.float64)
    ts, ws = quadrature(nodes)
    for t, w in zip(ts.tolist(), ws.tolist()):
        tt = torch.full((S,), t, dtype=torch.float64)
        q = q_rows(process, tt, XT)  # [S, 27]
        logits = oracle(XT, tt).logits  # [S, L, V]
        lg = logits[:, None].expand(S, N, L, V).reshape(-1, L, V)
        xt_all = XT[:, None].expand(S, N, L).reshape(-1, L)
        x0_all = X0[None].expand(S, N, L).reshape(-1, L)
        loss = process.loss(lg, xt_all, x0_all, torch.full((S * N,), t, dtype=torch.float64))
        loss = loss.double().sum(-1).view(S, N)
        loss = torch.where(q > 0, loss, torch.zeros_like(loss))  # impossible x_t carry no weight
        total += w * (q * loss).sum(0)
    total += process.prior_loss(X0).double().sum(1)
    return total, process


@pytest.fixture(scope="module")
def nelbos():
    return {k: exact_nelbo(k)[0] for k in SPECS}


BOUNDED = [k for k in SPECS if k != "uniform_geometric"]


@pytest.mark.parametrize("key", BOUNDED)
def test_nelbo_is_an_upper_bound_on_the_nll(nelbos, key):
    gap = nelbos[key] - NLL
    # on average over the data: E_p[NELBO] >= H(p) (Gibbs), for every family
    assert float((P0 * gap).sum()) > -1e-6, f"{key}: E[NELBO] below the entropy by {float((P0 * gap).sum()):.2e}"
    # and for every single row, up to quadrature / float32 error (for the uniform families the model's
    # marginal differs from P0 by the O(α(1)) prior mismatch, so a row may sit a hair below −log p)
    assert bool((gap > -1e-5).all()), f"{key}: NELBO below −log p(x0) by {float(gap.min()):.2e}"


@pytest.mark.parametrize("key", ["masked", "masked_cosine", "sedd_absorb", "ar"])
def test_nelbo_equals_nll_for_absorbing_and_ar(nelbos, key):
    # masked diffusion with the exact denoiser: an average of any-order AR factorisations, exactly −log p
    assert torch.allclose(nelbos[key], NLL, atol=1e-6, rtol=0)


@pytest.mark.parametrize("key", ["uniform", "sedd_uniform"])
def test_uniform_bounds_are_tight_up_to_the_prior(nelbos, key):
    # the continuous-time bound is tight with the exact reverse rates; α(1) = 1e-3 leaves a tiny prior term
    gap = nelbos[key] - NLL
    assert float(gap.abs().max()) < 1e-5


def test_geometric_schedule_misses_only_the_reconstruction_term(nelbos):
    """α(0) = e^{−σ_min} < 1: the data is already noised at t = 0, so the NELBO over [0, 1] lacks a
    reconstruction term; on average it falls short of the entropy of P0 by at most the entropy of that
    initial noise (data processing: the bound is on x_{t=0}, which has at most H(x_0 | x0) more nats)."""
    process = build_process(SPECS["uniform_geometric"][0], vocab_size=3)
    a0, V = float(process.alpha(torch.tensor(0.0, dtype=torch.float64))), 3
    hit, miss = a0 + (1 - a0) / V, (1 - a0) / V
    h0 = -(hit * math.log(hit) + (V - 1) * miss * math.log(miss))  # H(x_{t=0}^l | x0^l)
    gap = nelbos["uniform_geometric"] - NLL
    mean_gap = float((P0 * gap).sum())
    assert -L * h0 < mean_gap < -0.2 * L * h0  # bounded by H(x_0 | x0), and real (not a rounding artefact)


def test_quadrature_has_converged(nelbos):
    coarse, _ = exact_nelbo("sedd_uniform", nodes=8)
    fine = nelbos["sedd_uniform"]
    assert torch.allclose(coarse, fine, atol=2e-5)  # 8 vs 12 nodes per interval


def test_a_wrong_denoiser_pays_more():
    # the masked NELBO of a uniform (uninformed) denoiser is strictly above the NLL on average
    spec, V, mask_id = SPECS["masked"]
    process = build_process(spec, vocab_size=V, mask_id=mask_id)
    logits = torch.zeros(len(X0), L, V, dtype=torch.float64)
    xt = torch.full_like(X0, MASK)
    bound = process.loss(logits, xt, X0, torch.full((len(X0),), 0.5)).sum(1) * 0.5  # ∫ weight·1[mask] at t→1
    assert float((P0 * bound).sum()) > 0


@pytest.mark.parametrize("key", ["masked", "sedd_absorb", "uniform", "sedd_uniform"])
def test_monte_carlo_nelbo_through_nelbo_terms(nelbos, key):
    """The production path (corrupt -> model(**inputs).logits -> loss) agrees with the exact NELBO.

    Monte Carlo over x0 ~ P0 and x_t ~ q(x_t | x0) through ``nelbo_terms``, at the quadrature times
    (drawing t uniformly as well would make the estimator heavy-tailed: the weight blows up at t -> 0)."""
    spec, V, mask_id = SPECS[key]
    spec = dict(spec, time_conditioning=True)
    process = build_process(spec, vocab_size=V, mask_id=mask_id)
    oracle = Oracle(process, V)
    ts, ws = quadrature(4)
    n = 500
    gen = torch.Generator().manual_seed(1)
    x0 = X0[torch.multinomial(P0, n * len(ts), replacement=True, generator=gen)]
    t = ts.repeat_interleave(n)
    with torch.no_grad():
        terms = nelbo_terms(oracle, process, x0, t=t, generator=gen)
    per_row = (terms.loss.double().sum(1) + process.prior_loss(x0).double().sum(1)).view(len(ts), n)
    mc = float((ws * per_row.mean(1)).sum())  # Σ_k w_k = 1, so the prior term is counted once
    se = float(torch.sqrt((ws ** 2 * per_row.var(1) / n).sum()))
    exact = float((P0 * nelbos[key]).sum())
    assert abs(mc - exact) < 4 * se + 1e-3, (mc, exact, se)
    assert se < 0.08  # a meaningful comparison (entropy of P0 ≈ 2.5 nats)
    if key == "masked":  # and it estimates the entropy of P0: the bound is tight
        assert abs(mc - float((P0 * NLL).sum())) < 4 * se + 1e-3
