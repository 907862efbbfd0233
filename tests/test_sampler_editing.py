"""The token-editing sampler (``editing``, LLaDA 2.1) step by step on hand-made logits: mask-to-token
commits, token-to-token edits of the window's own tokens only, and when a window ends."""
from __future__ import annotations

import pytest
import torch

import textdiff
from textdiff.errors import ConfigError

V, M = 10, 9  # vocabulary 0..8 + [MASK]


def _logits(*rows):
    """[1, W, V] logits: each row is (token, logit) -> that token at the logit, every other at 0."""
    out = torch.zeros(1, len(rows), V)
    for i, (tok, val) in enumerate(rows):
        out[0, i, tok] = val
    return out


def _sampler(**fields):
    process = textdiff.build_process("masked", vocab_size=V, mask_id=M)
    smp = textdiff.build_sampler({"name": "editing", "temperature": 0.0, **fields}, process)
    return smp


def test_commits_above_threshold_and_edits_only_the_windows_own_tokens():
    smp = _sampler(threshold=0.9, editing_threshold=0.8, max_post_steps=2)
    smp.set_timesteps(3)
    x = torch.tensor([[3, M, M, M]])  # position 0 was a token when the window began: never edited
    smp.begin(x)
    (t0, s0), (t1, s1) = smp.pairs()[:2]
    # step 1: position 1 is sure of 5 (commits), 2 and 3 unsure (the best of them commits: min_commit 1)
    x = smp.step(_logits((8, 20.0), (5, 20.0), (6, 1.0), (7, 2.0)), torch.tensor([t0]), torch.tensor([s0]), x).x_s
    assert x.tolist() == [[3, 5, M, 7]]
    assert not smp.finished(x)
    # step 2: the model now prefers 4 at position 1 (edit), 2 at position 3 but unsure (kept), 6 at 2 (commit)
    x = smp.step(_logits((8, 20.0), (4, 20.0), (6, 20.0), (2, 1.0)), torch.tensor([t1]), torch.tensor([s1]), x).x_s
    assert x.tolist() == [[3, 4, 6, 7]]


def test_a_window_ends_after_a_step_without_mask_or_edit_or_its_post_steps():
    for post, calls in ((0, 1), (3, 4)):
        smp = _sampler(threshold=0.5, editing_threshold=0.5, max_post_steps=post)
        smp.set_timesteps(1)
        x = torch.tensor([[M, M]])
        smp.begin(x)
        assert len(smp.pairs()) == 1 + post  # the mask phase, then the post steps at t = s = 0
        n, flip = 0, 0
        for t, s in smp.pairs():
            if smp.finished(x):
                break
            flip = 1 - flip  # the model changes its mind every step: an edit at every post step
            x = smp.step(_logits((1 + flip, 20.0), (3, 20.0)), torch.tensor([t]), torch.tensor([s]), x).x_s
            n += 1
        assert n == calls and smp.finished(x)
    smp = _sampler(threshold=0.5, editing_threshold=0.5, max_post_steps=5)
    smp.set_timesteps(1)
    x = torch.tensor([[M, M]])
    smp.begin(x)
    pairs = smp.pairs()
    x = smp.step(_logits((1, 20.0), (3, 20.0)), torch.tensor([pairs[0][0]]), torch.tensor([pairs[0][1]]), x).x_s
    assert not smp.finished(x)  # no [MASK] left, but that step could not yet know there is no edit
    x = smp.step(_logits((1, 20.0), (3, 20.0)), torch.tensor([0.0]), torch.tensor([0.0]), x).x_s
    assert smp.finished(x)  # a post step with no edit ends the window


def test_a_finished_row_is_not_changed_by_the_batchs_later_steps():
    smp = _sampler(threshold=0.5, editing_threshold=0.5, max_post_steps=4)
    smp.set_timesteps(1)
    x = torch.tensor([[M, M], [M, M]])
    smp.begin(x)
    t, s = torch.ones(2), torch.zeros(2)
    same = torch.cat([_logits((1, 20.0), (3, 20.0))] * 2)
    x = smp.step(same, t, s, x).x_s
    x = smp.step(same, s, s, x).x_s  # no edit anywhere: both rows end
    assert smp.finished(x)
    other = torch.cat([_logits((2, 20.0), (4, 20.0))] * 2)
    assert torch.equal(smp.step(other, s, s, x).x_s, x)


def test_mask_logit_keep_ranks_with_the_mask_in_the_softmax():
    """[MASK] holding most of the mass: its confidence stays below τ with "keep", above it with "drop"."""
    logits = _logits((1, 5.0), (2, 5.0))
    logits[0, :, M] = 6.0
    for mode, commits in (("drop", 2), ("keep", 1)):
        smp = _sampler(threshold=0.5, mask_logit=mode, max_post_steps=0)
        smp.set_timesteps(2)
        x = torch.tensor([[M, M]])
        smp.begin(x)
        t, s = smp.pairs()[0]
        x_s = smp.step(logits, torch.tensor([t]), torch.tensor([s]), x).x_s
        # "keep": the argmax is [MASK] itself at both positions, so a commit leaves it as it is (the publisher too)
        assert int((x_s != x).sum()) == (commits if mode == "drop" else 0)


@pytest.mark.parametrize("field,value", [("editing_threshold", 1.5), ("max_post_steps", -1), ("min_commit", 0),
                                         ("mask_logit", "sometimes"), ("rng", "torch")])
def test_bad_fields_are_one_line_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        _sampler(**{field: value})
