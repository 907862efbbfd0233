"""generate(): infilling, EOS, streaming, NFE counting, seeds, sampler-specific schedules, bad input."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import textdiff
from textdiff.errors import TextDiffError
from textdiff.generation import generate, stream
from textdiff.models.configuration_textdiff import TextDiffConfig
from textdiff.models.modeling_textdiff import TextDiffModel

V, MASK, EOS = 12, 11, 10


def masked(**fields):
    return textdiff.build_process({"name": "masked", **fields}, vocab_size=V, mask_id=MASK)


def tiny(attention="bidirectional", block_size=None, time_conditioning=False, seed=0):
    torch.manual_seed(seed)
    cfg = TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2.0, cond_dim=16,
                         max_position_embeddings=32, attention=attention, block_size=block_size,
                         time_conditioning=time_conditioning, initializer_range=0.5)
    return TextDiffModel(cfg).eval()


class RuleModel(torch.nn.Module):
    """Predicts token 1 + position % 4 with certainty, and EOS at position ``eos_at``."""

    def __init__(self, eos_at=5):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(attention="bidirectional", max_position_embeddings=64, block_size=None,
                                      time_conditioning=False, num_layers=1)
        self.eos_at = eos_at
        self.calls = 0

    def forward(self, input_ids, t=None, attention_mask=None, position_ids=None, cache=None, update_cache=False):
        self.calls += 1
        target = torch.where(position_ids == self.eos_at, EOS, 1 + position_ids % 4)
        return torch.nn.functional.one_hot(target, V).float() * 30.0


# ---- infilling, prefixes, EOS -------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["ancestral", "first_hitting", "confidence", "threshold", "remdm"])
def test_infilling_keeps_every_frozen_position(sampler):
    process = masked()
    template = torch.tensor([[3, MASK, MASK, 4, MASK, 5, 5, MASK], [MASK, 2, MASK, MASK, 7, MASK, 1, MASK]])
    states = []
    out = generate(tiny(), process, sampler, [[1, 2], [6]], template=template, steps=4, seed=0,
                   callback=lambda i: states.append(i.x[:, -8:]))
    frozen = template != MASK
    for x in states + [out.sequences[:, -8:]]:
        assert torch.equal(x[frozen], template[frozen])
    assert not bool((out.sequences == MASK).any())
    assert out.sequences[0, :2].tolist() == [1, 2] and out.sequences[1, 1].item() == 6


def test_uniform_process_infills_with_an_explicit_marker():
    process = textdiff.build_process("uniform", vocab_size=V)
    template = torch.tensor([3, 0, 0, 4])  # 0 marks the blanks here
    out = generate(tiny(), process, "ancestral", [[1]], template=template, infill_id=0, steps=4, seed=0)
    assert out.sequences[0, [1, 4]].tolist() == [3, 4]
    with pytest.raises(TextDiffError, match="infill_id"):
        generate(tiny(), process, "ancestral", [[1]], template=template, steps=4)


def test_stop_at_eos_cuts_rows_and_block_decoding_stops_early():
    process = masked()
    model = RuleModel(eos_at=5)
    full = generate(model, process, {"name": "ancestral", "temperature": 0.0}, [[1], [2, 3]], max_new_tokens=12,
                    steps=12, eos_token_id=EOS, seed=0)
    # new tokens start at position 2 (the longest prompt): positions 2, 3, 4 then EOS at 5
    assert full.generated == [[3, 4, 1], [3, 4, 1]] and full.lengths == [3, 3]
    kept = generate(model, process, {"name": "ancestral", "temperature": 0.0}, [[1]], max_new_tokens=12, steps=12,
                    eos_token_id=EOS, stop_at_eos=False, seed=0)
    assert len(kept.generated[0]) == 12 and kept.generated[0][4] == EOS
    blocks = generate(model, process, {"name": "ancestral", "temperature": 0.0}, [[1], [2, 3]], max_new_tokens=12,
                      steps=12, block_size=4, eos_token_id=EOS, seed=0)
    # blocks start at a block-aligned position (4): position 4 then EOS at 5, in the first block
    assert blocks.generated == [[1], [1]]
    assert blocks.sequences.shape[1] == 2 + 4  # stopped after the first block, which holds every EOS
    no_stop = generate(model, process, {"name": "ancestral", "temperature": 0.0}, [[1], [2, 3]], max_new_tokens=12,
                       steps=12, block_size=4, seed=0)
    assert blocks.nfe < no_stop.nfe and no_stop.sequences.shape[1] == 2 + 12


# ---- streaming, counting, seeds -----------------------------------------------------------------


def test_stream_yields_every_step_and_matches_generate():
    process = masked()
    seen = []
    out = generate(tiny(), process, "ancestral", [[1, 2]], max_new_tokens=6, steps=6, seed=3,
                   callback=lambda i: seen.append(i))
    s = stream(tiny(), process, "ancestral", [[1, 2]], max_new_tokens=6, steps=6, seed=3)
    infos = list(s)
    assert len(infos) == len(seen) == out.steps
    assert all(torch.equal(a.x, b.x) for a, b in zip(infos, seen))
    assert torch.equal(s.output.sequences, out.sequences) and s.output.nfe == out.nfe
    assert [i.t for i in infos] == sorted([i.t for i in infos], reverse=True)
    masks = [int((i.x == MASK).sum()) for i in infos]
    assert masks == sorted(masks, reverse=True) and masks[-1] == 0  # the stream shows the decoding


def test_nfe_and_model_calls_count_cache_prefill_and_commits():
    """With an exact block cache, model_calls = every forward (prefill + commits included)."""
    process = textdiff.build_process({"name": "block", "block_size": 4}, vocab_size=V, mask_id=MASK)
    model = tiny("block_causal", block_size=4)
    forwards = []
    handle = model.register_forward_hook(lambda *a: forwards.append(1))
    out = generate(model, process, {"name": "ancestral", "cache_unchanged": False}, [[1, 2, 3]], max_new_tokens=8,
                   steps=8, block_size=4, seed=0)
    handle.remove()
    assert out.model_calls == len(forwards)
    assert out.nfe == out.steps == 8 and out.model_calls > out.nfe  # + prompt prefill / block commits
    cached = generate(model, process, "ancestral", [[1, 2, 3]], max_new_tokens=8, steps=32, block_size=4, seed=0)
    assert cached.nfe < cached.steps  # the cached-NFE rule skipped calls where nothing changed


def test_seed_and_generators_make_results_repeatable():
    process = masked()
    a = generate(tiny(), process, "ancestral", [[1], [2]], max_new_tokens=8, steps=8, seed=5)
    b = generate(tiny(), process, "ancestral", [[1], [2]], max_new_tokens=8, steps=8, seed=[5, 6])
    gens = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    c = generate(tiny(), process, "ancestral", [[1], [2]], max_new_tokens=8, steps=8, generator=gens)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.sequences, c.sequences)
    one = generate(tiny(), process, "ancestral", [[1], [2]], max_new_tokens=8, steps=8, generator=torch.Generator().manual_seed(1))
    two = generate(tiny(), process, "ancestral", [[1], [2]], max_new_tokens=8, steps=8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one.sequences, two.sequences)


# ---- sampler-specific behaviour -----------------------------------------------------------------


def test_first_hitting_times_are_per_row_decreasing_and_one_step_per_mask():
    process = masked(time_conditioning=True)
    smp = textdiff.build_sampler("first_hitting", process)
    smp.set_timesteps(1)
    x = torch.tensor([[MASK, MASK, MASK, 2], [MASK, 1, 2, 3]])
    smp.begin(x, generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    grid = smp.timesteps
    assert grid.shape == (2, 4)
    assert bool((grid[0, :3] > 0).all()) and bool((grid[0, :3].diff() < 0).all()) and grid[0, 3] == 0
    assert grid[1, 0] > 0 and bool((grid[1, 1:] == 0).all())
    ts = []
    out = generate(tiny(time_conditioning=True), process, smp, [[1], [2]],
                   template=torch.tensor([[MASK, MASK, MASK, 2], [MASK, 1, 2, 3]]), seed=0,
                   callback=lambda i: ts.append(i.t))
    assert out.nfe == 3 and all(t.shape == (2,) for t in ts)
    assert not bool((out.sequences == MASK).any())


def test_confidence_commit_schedule_follows_llada_linear_split():
    process = masked()
    masks = []
    generate(tiny(), process, {"name": "confidence", "ordering": "margin"}, [[1]], max_new_tokens=10, steps=4, seed=0,
             callback=lambda i: masks.append(int((i.x == MASK).sum())))
    assert [10 - masks[0]] + [a - b for a, b in zip(masks, masks[1:])] == [3, 3, 2, 2]
    for kind in ("cosine", "process"):
        masks = []
        generate(tiny(), process, {"name": "confidence", "commit_schedule": kind, "ordering": "entropy"}, [[1]],
                 max_new_tokens=10, steps=5, seed=0, callback=lambda i: masks.append(int((i.x == MASK).sum())))
        assert masks[-1] == 0 and all(a > b for a, b in zip([10] + masks, masks))  # >= 1 per step


def test_confidence_commits_the_most_confident_positions_first():
    process = masked()
    smp = textdiff.build_sampler({"name": "confidence", "temperature": 0.0}, process)
    logits = torch.zeros(1, 4, V)
    logits[0, :, 3] = torch.tensor([1.0, 4.0, 2.0, 3.0])  # position 1 most confident, then 3
    x = torch.full((1, 4), MASK)
    out = smp.step(logits, torch.tensor([1.0]), torch.tensor([0.5]), x)  # linear: commit 2 of 4
    assert out.x_s[0].tolist() == [MASK, 3, MASK, 3]


def test_threshold_commits_all_confident_tokens_and_at_least_one():
    process = masked()
    everything = generate(tiny(), process, {"name": "threshold", "threshold": 0.0}, [[1]], max_new_tokens=8, steps=8, seed=0)
    assert everything.nfe == 1  # every confidence exceeds 0: one step decodes all, the loop stops
    one_by_one = generate(tiny(), process, {"name": "threshold", "threshold": 1.0}, [[1]], max_new_tokens=8, steps=8, seed=0)
    assert one_by_one.nfe == 8 and not bool((one_by_one.sequences == MASK).any())


def test_remdm_with_zero_eta_is_ancestral_and_revises_otherwise():
    process = masked()
    plain = generate(tiny(), process, {"name": "ancestral", "cache_unchanged": False}, [[1]], max_new_tokens=8, steps=8, seed=0)
    zero = generate(tiny(), process, {"name": "remdm", "eta": 0.0}, [[1]], max_new_tokens=8, steps=8, seed=0)
    assert torch.equal(plain.sequences, zero.sequences)
    states = []
    out = generate(tiny(), process, {"name": "remdm", "strategy": "rescale", "eta": 1.0}, [[1]] * 4, max_new_tokens=8,
                   steps=16, seed=0, callback=lambda i: states.append(i.x))
    remasked = any(bool(((a != MASK) & (b == MASK)).any()) for a, b in zip(states, states[1:]))
    assert remasked and not bool((out.sequences == MASK).any())


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    ({"prompts": []}, "no prompts"),
    ({"prompts": [[1] * 40]}, "positions"),
    ({"sampler": "nope"}, "unknown sampler"),
    ({"steps": 0}, "steps"),
    ({"sampler": {"name": "ancestral", "top_p": 0.0}}, "top_p"),
    ({"sampler": {"name": "ancestral", "top_p": 1.5}}, "top_p"),
    ({"sampler": {"name": "ancestral", "top_k": 0}}, "top_k"),
    ({"sampler": {"name": "ancestral", "temperature": -1.0}}, "temperature"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"block_size": 0}, "block_size"),
    ({"prompts": [[1, 99]]}, "vocabulary"),
    ({"seed": [1, 2, 3]}, "seeds"),
    ({"prompts": "hello"}, "token-id lists"),
])
def test_bad_input_raises_one_line_errors(kwargs, match):
    args = {"prompts": [[1], [2]], "sampler": "ancestral", "max_new_tokens": 4, "steps": 4}
    args.update(kwargs)
    with pytest.raises(TextDiffError, match=match) as err:
        generate(tiny(), masked(), args.pop("sampler"), args.pop("prompts"), **args)
    assert "\n" not in str(err.value)


def test_sampler_config_objects_validate_on_construction():
    from textdiff.samplers import AncestralConfig, AncestralSampler

    with pytest.raises(TextDiffError, match="top_p"):
        AncestralSampler(AncestralConfig(top_p=2.0), masked())
