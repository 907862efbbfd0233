"""Complementary masks (textdiff.adapt.complementary): coverage, and on an exact denoiser the pair
estimate of the NELBO is unbiased (where the docstring says) and has a lower variance."""
import itertools
import math

import numpy as np
import pytest
import torch

from textdiff.adapt.complementary import complement_of, complement_ratio, complementary_corrupt, pair_nelbo

MASK = 99
SCHEDULES = {  # name: (alpha(t), alpha'(t)), all with alpha(0) = 1, alpha(1) = 0 unless clipped
    "loglinear": (lambda t: 1 - t, lambda t: -torch.ones_like(t)),
    "cosine": (lambda t: torch.cos(math.pi * t / 2), lambda t: -(math.pi / 2) * torch.sin(math.pi * t / 2)),
    "clipped_symmetric": (lambda t: 0.9 - 0.8 * t, lambda t: torch.full_like(t, -0.8)),
    "clipped_asymmetric": (lambda t: 0.7 - 0.5 * t, lambda t: torch.full_like(t, -0.5)),
}


# ---- coverage ------------------------------------------------------------------------------------

def test_pair_covers_each_free_token_exactly_once():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 50, (6, 40), generator=g)
    frozen = torch.zeros_like(x0, dtype=torch.bool)
    frozen[:, :7] = True  # a prompt
    x_t, x_bar = complementary_corrupt(x0, torch.rand(6, generator=g), MASK, frozen, generator=g)
    m, m_bar = x_t == MASK, x_bar == MASK
    assert not bool((m & m_bar).any())
    assert torch.equal(m | m_bar, ~frozen)
    assert torch.equal(x_t[~m], x0[~m]) and torch.equal(x_bar[~m_bar], x0[~m_bar])


def test_complement_of_a_process_draw():
    from textdiff.processes.base import build_process

    process = build_process({"name": "block", "block_size": 4}, vocab_size=100, mask_id=MASK)
    x0 = torch.randint(0, 50, (5, 16))
    frozen = torch.zeros_like(x0, dtype=torch.bool)
    frozen[:, :3] = True
    g = torch.Generator().manual_seed(3)
    x_t = process.corrupt(x0, process.sample_t(5, generator=g, seq_len=16), frozen=frozen, generator=g)
    x_bar = complement_of(x_t, x0, MASK, frozen)
    assert torch.equal((x_t == MASK) ^ (x_bar == MASK), ~frozen)  # each free token in exactly one row


def test_rates_and_per_token_rates():
    x0 = torch.randint(0, 50, (4, 4000))
    x_t, x_bar = complementary_corrupt(x0, torch.full((4,), 0.3), MASK, generator=torch.Generator().manual_seed(1))
    assert abs((x_t == MASK).double().mean().item() - 0.3) < 0.02
    assert abs((x_bar == MASK).double().mean().item() - 0.7) < 0.02
    rate = torch.zeros(4, 4000)
    rate[:, 2000:] = 1.0  # two "blocks": one never masked, one always
    x_t, x_bar = complementary_corrupt(x0, rate, MASK)
    assert bool((x_t[:, 2000:] == MASK).all()) and not bool((x_t[:, :2000] == MASK).any())
    assert bool((x_bar[:, :2000] == MASK).all()) and not bool((x_bar[:, 2000:] == MASK).any())


def test_per_row_generators_are_batch_invariant():
    x0 = torch.randint(0, 50, (3, 16))
    rate = torch.tensor([0.2, 0.5, 0.8])
    both = complementary_corrupt(x0, rate, MASK, generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    for b, s in enumerate((5, 6, 7)):
        alone = complementary_corrupt(x0[b:b + 1], rate[b:b + 1], MASK, generator=[torch.Generator().manual_seed(s)])
        assert torch.equal(both[0][b], alone[0][0]) and torch.equal(both[1][b], alone[1][0])


def test_ratio_and_pair():
    assert torch.allclose(complement_ratio(torch.tensor([0.25, 0.5, 1.0])), torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.equal(complement_ratio(torch.tensor([0.25, 0.0]), "flat"), torch.ones(2, dtype=torch.float64))
    loss = torch.tensor([[1.0, 0.0]])
    out = pair_nelbo(loss, torch.zeros(1, 2), complement_ratio(torch.tensor([0.0])))  # alpha = 0: nothing to add
    assert torch.equal(out, torch.tensor([[0.5, 0.0]]))
    out = pair_nelbo(loss, torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 3.0]]))
    assert torch.allclose(out, torch.tensor([[0.5, 3.0]]))


# ---- an exact denoiser ---------------------------------------------------------------------------

L, V = 4, 3


def joint(seed=0):
    g = torch.Generator().manual_seed(seed)
    p = -torch.log(torch.rand(V ** L, generator=g, dtype=torch.float64))  # Dirichlet(1) over all sequences
    return p / p.sum()


SEQS = torch.tensor(list(itertools.product(range(V), repeat=L)))  # [V^L, L]


def nll(p, x0, l, visible):
    """−log p(x0_l | x0 at the visible positions), other positions summed out."""
    agree = torch.ones(len(SEQS), dtype=torch.bool)
    for j in range(L):
        if visible[j]:
            agree &= SEQS[:, j] == x0[j]
    hit = agree & (SEQS[:, l] == x0[l])
    return -math.log(float(p[hit].sum() / p[agree].sum()))


def token_losses(p, x0, masks, blocks):
    """[n_masks, L]: −log p(x0_l | visible) at masked l (0 elsewhere); visible = earlier blocks +
    the unmasked tokens of l's block (blocks = L for the masked target)."""
    out = torch.zeros(len(masks), L, dtype=torch.float64)
    for i, m in enumerate(masks.tolist()):
        for l in range(L):
            if m[l]:
                b = l // blocks
                visible = [j // blocks < b or (j // blocks == b and not m[j]) for j in range(L)]
                out[i, l] = nll(p, x0, l, visible)
    return out


def gauss_legendre(n):
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.tensor((x + 1) / 2), torch.tensor(w / 2)


def moments(schedule, p, x0, n=200):
    """E[f], E[pair], Var f, Var pair for the masked target by exact enumeration over masks and
    Gauss-Legendre quadrature over t ~ U(0, 1)."""
    alpha, dalpha = SCHEDULES[schedule]
    masks = torch.tensor(list(itertools.product([False, True], repeat=L)))  # [16, L]
    nll_m = token_losses(p, x0, masks, blocks=L)
    nll_bar = token_losses(p, x0, ~masks, blocks=L)
    t, q = gauss_legendre(n)
    a, da = alpha(t), dalpha(t)
    rho = 1 - a
    w = -da / rho  # [n] the process's ELBO weight
    k = masks.sum(1).double()
    prob = rho[:, None] ** k * (1 - rho[:, None]) ** (L - k)  # [n, 16] P(m | t)
    loss = w[:, None, None] * nll_m  # [n, 16, L]
    loss_bar = w[:, None, None] * nll_bar
    ratio = complement_ratio(a)[:, None, None].expand(loss.shape)
    f = loss.sum(-1)
    pair = pair_nelbo(loss, loss_bar, ratio).sum(-1)
    mean = lambda v: float((q[:, None] * prob * v).sum())  # noqa: E731
    return {"f": mean(f), "pair": mean(pair), "var_f": mean(f ** 2) - mean(f) ** 2,
            "var_pair": mean(pair ** 2) - mean(pair) ** 2}


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pair_is_unbiased_and_both_equal_the_exact_nll(schedule, seed):
    p = joint(seed)
    x0 = SEQS[int(torch.argmax(p))]
    exact = -math.log(float(p[int(torch.argmax(p))]))
    m = moments(schedule, p, x0)
    assert m["f"] == pytest.approx(exact, rel=1e-8)  # MDLM's bound is tight for the exact denoiser
    assert m["pair"] == pytest.approx(exact, rel=1e-8)


def test_symmetric_clipped_band_unbiased_asymmetric_not():
    p = joint(3)
    x0 = SEQS[5]
    sym = moments("clipped_symmetric", p, x0)
    assert sym["pair"] == pytest.approx(sym["f"], rel=1e-9)
    asym = moments("clipped_asymmetric", p, x0)
    assert abs(asym["pair"] - asym["f"]) > 1e-3  # the band [0.3, 0.8] is not its own mirror image


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_variance_is_below_two_independent_rows(seed):
    """Same compute (two rows): the pair beats two independent draws, Var f / 2."""
    p = joint(seed)
    for x in (int(torch.argmax(p)), 7):
        m = moments("clipped_symmetric", p, SEQS[x])
        assert m["var_pair"] < 0.5 * m["var_f"]


def test_block_target_pair_is_unbiased():
    """Two blocks of 2, one t per block: E[pair] = E[f] = −log p(x0) (chain rule over blocks)."""
    p = joint(4)
    x0 = SEQS[int(torch.argmax(p))]
    exact = -math.log(float(p[int(torch.argmax(p))]))
    masks = torch.tensor(list(itertools.product([False, True], repeat=L)))
    nll_m, nll_bar = token_losses(p, x0, masks, blocks=2), token_losses(p, x0, ~masks, blocks=2)
    t, q = gauss_legendre(8)  # log-linear: the integrands are polynomials, 8 nodes are exact
    t0, t1 = torch.meshgrid(t, t, indexing="ij")
    tt = torch.stack([t0, t0, t1, t1], -1).reshape(-1, L)  # [64, L] per-token time, constant per block
    qq = (q[:, None] * q[None, :]).reshape(-1)
    rho = tt  # alpha = 1 - t
    w = 1 / tt
    prob = torch.where(masks[None], rho[:, None], 1 - rho[:, None]).prod(-1)  # [64, 16]
    loss = w[:, None] * nll_m[None]
    loss_bar = w[:, None] * nll_bar[None]
    ratio = complement_ratio(1 - tt)[:, None].expand(loss.shape)
    f = loss.sum(-1)
    pair = pair_nelbo(loss, loss_bar, ratio).sum(-1)
    assert float((qq[:, None] * prob * f).sum()) == pytest.approx(exact, rel=1e-8)
    assert float((qq[:, None] * prob * pair).sum()) == pytest.approx(exact, rel=1e-8)
