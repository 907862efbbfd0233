"""The RL policy loss (textdiff/rl/loss.py) and group advantages (textdiff/rl/advantages.py)."""
import math

import pytest
import torch

from textdiff.errors import ConfigError
from textdiff.rl.advantages import combine_rewards, group_advantages
from textdiff.rl.loss import aggregate, kl_estimate, sequence_policy_loss, token_policy_loss


def leaf(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) - 2).requires_grad_(True)


# ---- advantages ---------------------------------------------------------------------------------


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    a = group_advantages(r, 4, "none")
    assert torch.allclose(a.advantages, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    g = group_advantages(r, 4, "group")
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()  # unbiased, as TRL
    assert torch.allclose(g.advantages[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    assert torch.equal(g.advantages[4:], torch.zeros(4))  # equal rewards: no signal
    assert g.frac_reward_zero_std == 0.5
    b = group_advantages(r, 4, "batch")
    assert torch.allclose(b.advantages, a.advantages / (r.std() + 1e-4))


def test_advantages_are_centred_per_group_and_scale_free():
    r = torch.randn(24, generator=torch.Generator().manual_seed(0))
    for scale in ("group", "batch", "none"):
        a = group_advantages(r, 6, scale).advantages.view(4, 6)
        assert torch.allclose(a.sum(1), torch.zeros(4), atol=1e-5)
    g1, g2 = group_advantages(r, 6, "group").advantages, group_advantages(10 * r + 3, 6, "group").advantages
    assert torch.allclose(g1, g2, atol=1e-3)  # invariant to the reward's scale and offset (up to the 1e-4)


def test_bad_groups_and_rewards_raise_one_line_errors():
    with pytest.raises(ConfigError, match="groups of num_generations=4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ConfigError, match="scale_rewards"):
        group_advantages(torch.zeros(4), 2, "std")
    with pytest.raises(ConfigError, match="one each"):
        combine_rewards(torch.zeros(3, 2), [1.0])


def test_combine_rewards_weights_and_none(capsys):
    per = torch.tensor([[1.0, 0.5], [float("nan"), 1.0], [float("nan"), float("nan")]])
    total = combine_rewards(per, [2.0, 1.0])
    assert torch.allclose(total, torch.tensor([2.5, 1.0, 0.0]))
    assert "every reward function returned None" in capsys.readouterr().err


# ---- KL ------------------------------------------------------------------------------------------


def test_k3_and_k2_are_nonnegative_and_k3_is_unbiased_for_the_kl():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    kl = float((p * (p / q).log()).sum())  # KL(p || q), p = π_θ, q = π_ref
    exact_k3 = float((p * kl_estimate(p.log(), q.log(), "k3")).sum())  # E_{y ~ p}[k3]
    assert exact_k3 == pytest.approx(kl, rel=1e-12)
    d = torch.linspace(-5, 5, 101, dtype=torch.float64)
    for est in ("k3", "k2"):
        assert (kl_estimate(torch.zeros_like(d), d, est) >= 0).all()
    assert float(kl_estimate(torch.zeros(()), torch.zeros(()), "k3")) == 0.0
    with pytest.raises(ConfigError, match="kl_estimator"):
        kl_estimate(d, d, "k1")


# ---- the clipped surrogate -------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_gradient_at_ratio_one_is_reinforce(loss_type):
    """μ = 1 (old = current): ∇ℓ = −∇ agg(A · log π) — the REINFORCE gradient of the
    advantage-weighted log-probability, whatever the aggregation."""
    logp = leaf(4, 5)
    adv = torch.tensor([1.0, -0.5, 2.0, 0.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    ent = torch.arange(20, dtype=torch.float64).view(4, 5)
    out = token_policy_loss(logp, adv, mask, loss_type=loss_type, max_completion_length=5, num_items=9.0, entropy=ent)
    assert out.entropy == pytest.approx(float(ent[mask.bool()].mean()))
    (g,) = torch.autograd.grad(out.loss, logp)
    ref = leaf(4, 5)
    (want,) = torch.autograd.grad(aggregate(-adv[:, None] * ref, mask, loss_type, 5, 9.0), ref)
    assert torch.allclose(g, want)
    assert out.clip_ratio == 0.0 and out.ratio_mean == pytest.approx(1.0)


def test_clipping_removes_the_gradient_only_where_it_should():
    logp = torch.tensor([[0.5, 0.5, -0.5, -0.5, 0.1]], dtype=torch.float64).repeat(2, 1).requires_grad_(True)
    old = torch.zeros(2, 5, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.ones(2, 5)
    out = token_policy_loss(logp, adv, mask, old_logp=old, epsilon=0.2, epsilon_high=0.28, loss_type="bnpo")
    (g,) = torch.autograd.grad(out.loss, logp)
    r = logp.detach().exp()
    # A > 0: r = e^0.5 > 1.28 clipped (no grad); r = e^-0.5 < 0.8 keeps its gradient −A r / 10
    # A < 0: r = e^-0.5 < 0.8 clipped; r = e^0.5 keeps its gradient
    live = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 0, 0, 1]], dtype=torch.bool)
    want = torch.where(live, -adv[:, None] * r / 10, torch.zeros_like(r))
    assert torch.allclose(g, want)
    assert out.clip_ratio_high == pytest.approx(0.2) and out.clip_ratio_low == pytest.approx(0.2)
    assert out.clip_ratio == pytest.approx(0.4)


def test_kl_term_pulls_towards_the_reference():
    logp = leaf(3, 4)
    ref = logp.detach() + 0.3
    mask = torch.ones(3, 4)
    out = token_policy_loss(logp, torch.zeros(3, dtype=torch.float64), mask, ref_logp=ref, beta=0.5, loss_type="bnpo")
    (g,) = torch.autograd.grad(out.loss, logp)
    # d/dlogp of β (e^d − d − 1), d = ref − logp: β (1 − e^d) / count
    assert torch.allclose(g, 0.5 * (1 - math.exp(0.3)) * torch.ones(3, 4, dtype=torch.float64) / 12)
    assert out.kl == pytest.approx(math.exp(0.3) - 0.3 - 1)
    with pytest.raises(ConfigError, match="ref_logp"):
        token_policy_loss(logp, torch.zeros(3), mask, beta=0.1)


def test_sequence_loss_uses_the_length_normalised_ratio():
    elbo = leaf(4)
    n = torch.tensor([10, 4, 1, 7])
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    out = sequence_policy_loss(elbo, adv, n)
    (g,) = torch.autograd.grad(out.loss, elbo)
    assert torch.allclose(g, -adv / n / 4)  # ratio 1: REINFORCE on ELBO / |y|, mean over sequences
    old = elbo.detach() - torch.tensor([3.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # row 0: r = e^0.3 > 1.2
    clipped = sequence_policy_loss(elbo, adv, n, old_elbo=old, row_mask=torch.tensor([1, 1, 0, 1]))
    (g2,) = torch.autograd.grad(clipped.loss, elbo)
    assert g2[0] == 0 and g2[2] == 0  # clipped above with A > 0; masked row
    assert torch.allclose(g2[[1, 3]], (-adv / n / 3)[[1, 3]])
    assert clipped.clip_ratio_high == pytest.approx(1 / 3)
