"""Temperature / top-k / top-p: the shared filters every sampler uses."""
import torch

import textdiff

V = 6


def sampler(**fields):
    process = textdiff.build_process("uniform", vocab_size=V)
    return textdiff.build_sampler({"name": "euler", **fields}, process)


def test_filter_top_k_top_p_and_temperature():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05, 0.0]]))
    keep = lambda lg: (lg > float("-inf"))[0].tolist()  # noqa: E731
    assert keep(sampler(top_k=2).filter(logits)) == [True, True, False, False, False, False]
    # nucleus: the smallest set with mass >= 0.8 is {0.5, 0.2, 0.15}
    assert keep(sampler(top_p=0.8).filter(logits)) == [True, True, True, False, False, False]
    assert keep(sampler(top_p=0.3).filter(logits)) == [True, False, False, False, False, False]
    greedy = sampler(temperature=0.0).filter(logits)
    assert keep(greedy) == [True, False, False, False, False, False]
    cooled = torch.softmax(sampler(temperature=0.5).filter(logits), -1)
    squared = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64) ** 2  # T = 1/2: p^2, renormalised
    assert torch.allclose(cooled[0, :5], squared / squared.sum(), atol=1e-9)
    assert sampler().filter(logits).dtype == torch.float64


def test_filter_transition_keeps_the_jump_probability():
    probs = torch.tensor([[[0.7, 0.2, 0.06, 0.04, 0.0, 0.0]]], dtype=torch.float64)  # x_t = 0 stays w.p. 0.7
    x_t = torch.zeros(1, 1, dtype=torch.long)
    assert torch.equal(sampler().filter.transition(probs, x_t), probs)  # identity at the defaults
    greedy = sampler(temperature=0.0).filter.transition(probs, x_t)
    assert torch.allclose(greedy, torch.tensor([[[0.7, 0.3, 0, 0, 0, 0]]], dtype=torch.float64))
    top2 = sampler(top_k=2).filter.transition(probs, x_t)
    assert torch.allclose(top2, torch.tensor([[[0.7, 0.3 * 0.2 / 0.26, 0.3 * 0.06 / 0.26, 0, 0, 0]]], dtype=torch.float64))
    still = torch.tensor([[[1.0, 0, 0, 0, 0, 0]]], dtype=torch.float64)
    assert torch.equal(sampler(top_p=0.5).filter.transition(still, x_t), still)
