"""The contract every (sampler, compatible process) pair must honour, run through ``generate()``.

Parametrised over the COMPATIBLE pairs of ``textdiff.available("sampler") x
textdiff.available("process")`` (a sampler that refuses a process at build time is left out here;
``test_incompatible_pairs_raise_one_line_errors`` checks those refusals).
"""
from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch

import textdiff
from textdiff.config import resolve_section
from textdiff.errors import IncompatibleError, TextDiffError
from textdiff.generation import generate
from textdiff.models.configuration_textdiff import TextDiffConfig
from textdiff.models.modeling_textdiff import TextDiffModel

V = 10  # vocabulary: 0..8 ordinary tokens, 9 = [MASK]
MASK = V - 1
N = 8  # new tokens per row
PROMPTS = [[1, 2, 3], [4], []]
SEEDS = [11, 12, 13]
FILTERED = {"temperature": 0.8, "top_k": 5, "top_p": 0.9}

def _serves(sampler: str, process: str) -> bool:
    try:
        textdiff.build_sampler(sampler, textdiff.build_process(process, vocab_size=V, mask_id=MASK))
        return True
    except IncompatibleError:
        return False


ALL_PAIRS = [(s, p) for s in textdiff.available("sampler") for p in textdiff.available("process")]
PAIRS = [(s, p) for s, p in ALL_PAIRS if _serves(s, p)]


def build_process(name):
    try:
        return textdiff.build_process(name, vocab_size=V, mask_id=MASK)
    except TextDiffError as e:  # a process that needs more than a name to build
        pytest.skip(f"process {name!r} does not build from defaults: {e}")


def build_pair(sampler, process_name, **fields):
    process = build_process(process_name)
    try:
        return process, textdiff.build_sampler({"name": sampler, **fields}, process)
    except IncompatibleError:
        pytest.skip(f"{sampler} does not serve {process_name}")


@functools.lru_cache(maxsize=None)
def tiny_model(process_name):
    """A random tiny denoiser shaped for the process (attention kind, block size, time input)."""
    process = build_process(process_name)
    attention = getattr(process, "required_attention", None) or "bidirectional"
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2.0,
                         max_position_embeddings=64, time_conditioning=process.time_conditioning, cond_dim=16,
                         attention=attention, initializer_range=0.5,
                         block_size=getattr(process, "block_size", None) if attention == "block_causal" else None)
    return TextDiffModel(cfg).eval()


def gen_kwargs(process):
    """Block processes decode block by block; next-token processes one token per block."""
    if getattr(process, "logits_shift", 0):
        return {"block_size": 1, "steps": N}
    if getattr(process, "required_attention", None) == "block_causal":
        return {"block_size": process.block_size, "steps": N}
    return {"steps": N}


def prompts_for(process):
    # a next-token model has no position −1 to predict the first token from: every prompt needs one
    return [p or [5] for p in PROMPTS] if getattr(process, "logits_shift", 0) else PROMPTS


@functools.lru_cache(maxsize=None)
def run(sampler, process_name, filtered=False):
    """(process, sampler, output, states) for one batched generation with per-row seeds."""
    process, smp = build_pair(sampler, process_name, **(FILTERED if filtered else {}))
    states = []
    out = generate(tiny_model(process_name), process, smp, prompts_for(process), max_new_tokens=N, seed=SEEDS,
                   callback=lambda info: states.append(info.x), **gen_kwargs(process))
    return process, smp, out, states


def absorbing(process) -> bool:
    try:
        process.is_noise(torch.zeros(1, 1, dtype=torch.long))
        return True
    except IncompatibleError:
        return False


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler,process", PAIRS)
def test_shapes_dtypes_and_vocabulary(sampler, process):
    proc, smp, out, states = run(sampler, process)
    prompts = prompts_for(proc)
    P = max(len(p) for p in prompts)
    assert out.sequences.shape == (len(prompts), P + N) and out.sequences.dtype == torch.long
    assert len(out.generated) == len(prompts) and all(len(g) == N for g in out.generated)
    assert int(out.sequences.min()) >= 0 and int(out.sequences.max()) < V
    assert states and all(s.shape == out.sequences.shape for s in states)
    assert 1 <= out.nfe <= out.model_calls and out.steps >= 1


@pytest.mark.parametrize("sampler,process", PAIRS)
def test_prompt_is_kept_and_no_mask_is_left(sampler, process):
    proc, smp, out, states = run(sampler, process)
    prompts = prompts_for(proc)
    P = max(len(p) for p in prompts)
    for b, p in enumerate(prompts):
        assert out.sequences[b, P - len(p):P].tolist() == p
        assert all(s[b, P - len(p):P].tolist() == p for s in states)
    if absorbing(proc):
        assert not bool(proc.is_noise(out.sequences[:, P:]).any())


@pytest.mark.parametrize("sampler,process", PAIRS)
def test_determinism_under_a_seed(sampler, process):
    proc, smp, out, _ = run(sampler, process)
    again = generate(tiny_model(process), proc, smp, prompts_for(proc), max_new_tokens=N, seed=SEEDS,
                     **gen_kwargs(proc))
    assert torch.equal(out.sequences, again.sequences)
    other = generate(tiny_model(process), proc, smp, prompts_for(proc), max_new_tokens=N, seed=[s + 100 for s in SEEDS],
                     **gen_kwargs(proc))
    assert not torch.equal(out.sequences, other.sequences)  # the seed matters


@pytest.mark.parametrize("sampler,process", PAIRS)
def test_committed_tokens_never_change(sampler, process):
    proc, smp, out, states = run(sampler, process)
    if smp.revises or not absorbing(proc):
        pytest.skip("revising sampler or a process without committed tokens (uniform / SEDD-uniform)")
    for before, after in zip(states, states[1:] + [out.sequences]):
        committed = ~proc.is_noise(before)
        assert torch.equal(before[committed], after[committed])


@pytest.mark.parametrize("sampler,process", PAIRS)
def test_batch_invariance(sampler, process):
    """Each row of a batch equals the row generated alone with the same seed."""
    proc, smp, out, _ = run(sampler, process)
    prompts = prompts_for(proc)
    P = max(len(p) for p in prompts)
    for b, p in enumerate(prompts):
        alone = generate(tiny_model(process), proc, smp, [p], max_new_tokens=N, seed=[SEEDS[b]], **gen_kwargs(proc))
        assert alone.sequences[0, len(p):].tolist() == out.sequences[b, P:].tolist(), f"row {b}"


@pytest.mark.parametrize("sampler,process", PAIRS)
def test_temperature_top_k_top_p_are_supported(sampler, process):
    proc, smp, out, _ = run(sampler, process, filtered=True)
    assert smp.config.top_k == 5 and smp.config.top_p == 0.9
    assert int(out.sequences.min()) >= 0 and int(out.sequences.max()) < V
    if absorbing(proc):
        P = out.sequences.shape[1] - N
        assert not bool(proc.is_noise(out.sequences[:, P:]).any())


@pytest.mark.parametrize("sampler", textdiff.available("sampler"))
def test_config_round_trips_through_json(sampler):
    cls = textdiff.registry.config_class("sampler", sampler)
    cfg = cls(temperature=0.7, top_k=4, top_p=0.95)
    back = resolve_section("sampler", json.loads(json.dumps(dataclasses.asdict(cfg))), "sampler")
    assert type(back) is cls and back == cfg
    assert resolve_section("sampler", sampler, "sampler") == cls()  # the name alone gives the defaults


def test_incompatible_pairs_raise_one_line_errors():
    refused = []
    for sampler, name in ALL_PAIRS:
        try:
            process = textdiff.build_process(name, vocab_size=V, mask_id=MASK)
        except TextDiffError:
            continue
        try:
            textdiff.build_sampler(sampler, process)
        except IncompatibleError as e:
            msg = str(e)
            assert "\n" not in msg and "works with" in msg and sampler in msg and name in msg, msg
            fits = msg.split("works with:")[1]
            assert all(p.strip() for p in fits.split(","))  # names what fits
            refused.append((sampler, name))
    assert ("first_hitting", "uniform") in refused and ("analytic", "masked") in refused
    assert ("euler", "masked") in refused and ("confidence", "sedd_uniform") in refused


# ---- the last step goes to the data, for every schedule ---------------------------------------------

ABSORBING = [p for p in ("masked", "block", "sedd_absorb") if p in textdiff.available("process")]


@pytest.mark.parametrize("schedule", textdiff.available("schedule"))
@pytest.mark.parametrize("process", ABSORBING)
def test_last_step_leaves_no_mask_for_every_schedule(process, schedule):
    """Every compatible sampler, through generate() and as one direct step t -> s = 0 from all [MASK]:
    no [MASK] is left, whatever α(0) of the schedule (geometric: e^{-σ_min}; clipped: 1 − β)."""
    proc = textdiff.build_process({"name": process, "schedule": {"name": schedule}}, vocab_size=V, mask_id=MASK)
    model = tiny_model(process)
    served = [s for s in textdiff.available("sampler") if _serves(s, process)]
    assert served
    x_t = torch.full((16, N), MASK)
    with torch.no_grad():
        logits = model(x_t).logits
    for name in served:
        smp = textdiff.build_sampler(name, proc)
        out = generate(model, proc, smp, PROMPTS, max_new_tokens=N, seed=SEEDS, **{**gen_kwargs(proc), "steps": 2})
        P = out.sequences.shape[1] - N
        assert not bool(proc.is_noise(out.sequences[:, P:]).any()), f"{name}: [MASK] left"
        smp.set_timesteps(4)
        t, s = torch.full((16,), 0.25, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
        if name == "first_hitting":  # one token per step by design: the last of its steps sees one [MASK]
            one = x_t.clone()
            one[:, 1:] = 3
            assert not bool(proc.is_noise(smp.step(logits, t, s, one, torch.Generator().manual_seed(0)).x_s).any())
            continue
        x_s = smp.step(logits, t, s, x_t, torch.Generator().manual_seed(0)).x_s
        assert not bool(proc.is_noise(x_s).any()), f"{name}: the step to s = 0 left a [MASK]"


@pytest.mark.parametrize("schedule", textdiff.available("schedule"))
def test_s_zero_is_the_data_for_every_schedule(schedule):
    """α_s = 1 at s = 0: the uniform posterior with a known x0 returns x0 exactly (even if α(0) < 1)."""
    proc = textdiff.build_process({"name": "uniform", "schedule": {"name": schedule}}, vocab_size=V)
    a0, m0 = proc.survival(torch.zeros(3, dtype=torch.float64))
    assert bool((a0 == 1).all()) and bool((m0 == 0).all())
    x0 = torch.arange(6).view(2, 3)
    logits = torch.where(torch.nn.functional.one_hot(x0, V).bool(), 0.0, -1e4).double()
    x_t = (x0 + 1) % V
    probs = proc.reverse_probs(logits, x_t, torch.full((2,), 0.5, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(probs.gather(-1, x0[..., None]), torch.ones(2, 3, 1, dtype=torch.float64), atol=1e-12)


def test_padded_rows_get_the_logits_they_get_alone():
    """Sampling forwards (no grad) give a row in a left-padded batch exactly its logits alone, and
    equal positions exactly equal logits: the confidence samplers rank exact values without rounding."""
    model = tiny_model("masked")
    ids = torch.full((2, 11), MASK)
    ids[0, :3] = torch.tensor([1, 2, 3])
    valid = torch.ones(2, 11, dtype=torch.long)
    valid[1, :3] = 0
    with torch.no_grad():
        batched = model(ids, attention_mask=valid, position_ids=(valid.cumsum(1) - 1).clamp_min(0)).logits
        alone = model(ids[1:, 3:]).logits
    assert torch.equal(batched[1, 3:], alone[0])
    assert bool((alone[0] == alone[0, :1]).all())  # identical [MASK] positions, identical logits
