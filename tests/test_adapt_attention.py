"""Attention-mask annealing (textdiff.adapt.attention): exact ends, nesting, the rules, the read-out rows."""
import pytest
import torch

from textdiff.adapt.attention import (additive_mask, anneal_progress, annealed_allowed, annealed_mask, read_index,
                                      read_logits)
from textdiff.errors import ConfigError
from textdiff.models.masks import block_diffusion_mask

RULES = ["random", "fresh", "band"]


def block_causal_start(L, Lb):
    """p = 0 for the block layout, written out pair by pair: what the AR model sees."""
    m = torch.zeros(2 * L, 2 * L, dtype=torch.bool)
    for q in range(2 * L):
        for k in range(2 * L):
            qp, kp = q % L, k % L
            if q >= L:  # clean query: causal over the clean half
                m[q, k] = k >= L and kp <= qp
            elif k >= L:  # noisy query, clean key: only earlier blocks
                m[q, k] = kp // Lb < qp // Lb
            else:  # noisy query, noisy key: own block, not ahead
                m[q, k] = kp // Lb == qp // Lb and kp <= qp
    return m


def test_progress():
    assert anneal_progress(0, 100) == 0.0
    assert anneal_progress(50, 100) == 0.5
    assert anneal_progress(100, 100) == 1.0 and anneal_progress(500, 100) == 1.0
    assert anneal_progress(0, 0) == 1.0  # no annealing: the target from the first step


@pytest.mark.parametrize("rule", RULES)
def test_ends_are_exact(rule):
    L, Lb = 12, 4
    assert torch.equal(annealed_mask(0.0, L, "masked", rule=rule), torch.ones(L, L, dtype=torch.bool).tril())
    assert torch.equal(annealed_mask(1.0, L, "masked", rule=rule), torch.ones(L, L, dtype=torch.bool))
    assert torch.equal(annealed_mask(0.0, L, "block", Lb, rule=rule), block_causal_start(L, Lb))
    assert torch.equal(annealed_mask(1.0, L, "block", Lb, rule=rule, step=7), block_diffusion_mask(L, Lb)[0, 0])


@pytest.mark.parametrize("rule", ["random", "band"])
@pytest.mark.parametrize("target", ["masked", "block"])
def test_masks_grow_with_progress(rule, target):
    L, Lb = 16, 8
    masks = [annealed_mask(p, L, target, Lb if target == "block" else None, rule=rule, seed=3)
             for p in torch.linspace(0, 1, 11).tolist()]
    for a, b in zip(masks, masks[1:]):
        assert bool((a <= b).all())  # a pair once open stays open
    assert int(masks[0].sum()) < int(masks[5].sum()) < int(masks[-1].sum())


@pytest.mark.parametrize("rule", RULES)
def test_never_more_than_the_target_and_never_an_empty_row(rule):
    L, Lb = 16, 4
    for p in (0.0, 0.3, 0.8):
        for target, size in (("masked", None), ("block", Lb)):
            m = annealed_mask(p, L, target, size, rule=rule, step=5)
            full = annealed_mask(1.0, L, target, size)
            assert bool((m <= full).all())
            assert bool(m.diagonal().all())  # every row attends at least to itself


def test_random_rule_opens_a_fraction_p_of_future_keys():
    L = 128
    future = torch.ones(L, L, dtype=torch.bool).triu(1)
    n = int(future.sum())
    for p in (0.1, 0.5, 0.9):
        m = annealed_mask(p, L, "masked", rule="random", seed=11)
        assert abs(int((m & future).sum()) / n - p) < 0.02
    assert torch.equal(annealed_mask(0.4, L, rule="random", seed=11), annealed_mask(0.4, L, rule="random", seed=11))
    assert not torch.equal(annealed_mask(0.4, L, rule="random", seed=11), annealed_mask(0.4, L, rule="random", seed=12))


def test_fresh_rule_redraws_each_step_with_the_same_rate():
    L, p = 128, 0.5
    future = torch.ones(L, L, dtype=torch.bool).triu(1)
    a = annealed_mask(p, L, rule="fresh", step=10) & future
    b = annealed_mask(p, L, rule="fresh", step=11) & future
    assert not torch.equal(a, b)
    overlap = int((a & b).sum()) / int(future.sum())
    assert abs(overlap - p * p) < 0.02  # independent Bernoulli(p) patterns, as in DiffuLLaMA
    assert torch.equal(annealed_mask(p, L, rule="random", step=10), annealed_mask(p, L, rule="random", step=11))


def test_band_rule_sees_floor_p_d_keys_ahead():
    L = 11  # D = L - 1 = 10
    for p, ahead in ((0.0, 0), (0.25, 2), (0.5, 5), (0.99, 9), (1.0, 10)):
        m = annealed_mask(p, L, "masked", rule="band")
        for q in range(L):
            assert int(m[q, q + 1:].sum()) == min(ahead, L - 1 - q)
    L, Lb = 16, 4  # D = L' - 1 = 3
    m = annealed_mask(0.7, L, "block", Lb, rule="band")  # floor(0.7 * 3) = 2 keys ahead inside the block
    assert int(m[0, :Lb].sum()) == 3 and int(m[L + 1, L:L + Lb].sum()) == 4


def test_elementwise_rule_matches_the_dense_mask():
    L, Lb, p = 8, 4, 0.6
    q = torch.arange(2 * L)[:, None]
    k = torch.arange(2 * L)[None, :]
    assert torch.equal(annealed_allowed(q, k, p, L, "block", Lb, "random", 2), annealed_mask(p, L, "block", Lb, "random", 2))


def test_additive_form():
    allowed = annealed_mask(0.0, 5)
    add = additive_mask(allowed, torch.bfloat16)
    assert add.shape == (1, 1, 5, 5) and add.dtype == torch.bfloat16
    assert bool((add[0, 0][allowed] == 0).all()) and bool((add[0, 0][~allowed] == torch.finfo(torch.bfloat16).min).all())


def test_read_index():
    assert read_index(6, "masked", shift=False).tolist() == [0, 1, 2, 3, 4, 5]
    assert read_index(6, "masked", shift=True).tolist() == [0, 0, 1, 2, 3, 4]  # Dream: token 0 keeps row 0
    assert read_index(8, "block", 4, shift=False).tolist() == list(range(8))  # the noisy half
    # token 4 starts block 1: read at the CLEAN row of position 3 (row 8 + 3)
    assert read_index(8, "block", 4, shift=True).tolist() == [0, 0, 1, 2, 11, 4, 5, 6]
    assert read_index(4, "block", 1, shift=True).tolist() == [0, 4, 5, 6]  # L' = 1: every token from the clean prefix
    logits = torch.arange(16.0).view(1, 16, 1)
    assert read_logits(logits, 8, "block", 4).flatten().tolist() == [0, 0, 1, 2, 11, 4, 5, 6]


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("rule", RULES)
def test_no_row_that_predicts_a_token_sees_that_clean_token(shift, rule):
    """The row read for token i never attends to x0_i (the clean copy at row L + i in the block layout)."""
    L, Lb = 12, 4
    for p in (0.0, 0.5, 1.0):
        m = annealed_mask(p, L, "block", Lb, rule=rule, step=3)
        rows = read_index(L, "block", Lb, shift)
        for i in range(L):
            assert not bool(m[rows[i], L + i])


def test_bad_block_size():
    with pytest.raises(ConfigError, match="divide"):
        annealed_mask(0.5, 10, "block", 4)
    with pytest.raises(ConfigError, match="divide"):
        read_index(10, "block", 3)
    with pytest.raises(ConfigError, match="target"):
        annealed_mask(0.5, 8, "blocks", 4)
    with pytest.raises(ConfigError, match="divide"):
        annealed_mask(0.5, 8, "block")  # no block size
