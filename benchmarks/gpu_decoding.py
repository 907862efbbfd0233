"""Section 3 of ``benchmarks/gpu.py``: decoding at LLaDA-8B's shapes (random weights, bf16).

textdiff's bidirectional Llama denoiser (the network LLaDA loads into) decodes semi-autoregressively
in blocks of 32 with

* LLaDA's low-confidence remasking (the ``confidence`` sampler, linear commit schedule, one token per
  step: steps = generation length) without a cache, with the approximate prefix cache and with the
  dual cache (Fast-dLLM's);
* Fast-dLLM's threshold rule (commit every prediction above 0.9, at least one) with each cache;

next to the ceiling of an AR model of the same size: transformers' ``LlamaForCausalLM.generate``
with its KV cache, greedy, one token per call. With ``--publisher-code`` the publishers' own
scripts (LLaDA's ``generate.py``, Fast-dLLM's ``generate*``; see ``benchmarks/published_decoding.py``
for the folder layout and the shims) run on the SAME weights at batch 1 (their scripts are written
for one row), and the tokens are compared with textdiff's (every mode here is greedy).

Random weights: the threshold rule commits as many tokens per call as THIS model is confident about
(init std 0.25 makes its predictions peaked, as in ``published_decoding.py``); a trained model's
calls per token differ, its seconds per call do not.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

import published_decoding as pub
from gpu_common import Settings, free_memory, interleaved, log
from textdiff import build_process, build_sampler
from textdiff.generation import generate
from textdiff.models.modeling_bidirectional import DiffusionLlamaConfig, DiffusionLlamaModel

GPU_SPEC = {"shapes": pub.LLADA_8B, "layers": 8, "prompt": 64, "lengths": (256, 512), "batches": (1, 8), "block": 32,
            "std": 0.25, "dtype": torch.bfloat16}
DRY_SPEC = {"shapes": pub.TINY, "layers": 2, "prompt": 8, "lengths": (16, 32), "batches": (1, 2), "block": 8,
            "std": 0.25, "dtype": torch.float32}
THRESHOLD = 0.9
CONFIDENCE = {"name": "confidence", "ordering": "confidence", "commit_schedule": "linear", "temperature": 0.0}
THRESHOLDED = {"name": "threshold", "threshold": THRESHOLD, "temperature": 0.0}
#: textdiff's modes: key -> (label, sampler, cache); keys shared with published_decoding.MODES match its rows
MODES = {
    "none": ("low-confidence, no cache", CONFIDENCE, "none"),
    "prefix": ("low-confidence, prefix cache", CONFIDENCE, "prefix"),
    "dual": ("low-confidence, dual cache", CONFIDENCE, "dual"),
    "threshold": (f"threshold {THRESHOLD}, no cache", THRESHOLDED, "none"),
    "threshold_prefix": (f"threshold {THRESHOLD}, prefix cache", THRESHOLDED, "prefix"),
    "threshold_dual": (f"threshold {THRESHOLD}, dual cache", THRESHOLDED, "dual"),
}


def llama_kwargs(shapes: dict, layers: int) -> dict:
    """transformers' Llama config fields of a LLaDA config (its names: d_model, n_heads, ...)."""
    return dict(vocab_size=shapes["embedding_size"], hidden_size=shapes["d_model"], intermediate_size=shapes["mlp_hidden_size"],
                num_hidden_layers=layers, num_attention_heads=shapes["n_heads"], num_key_value_heads=shapes["n_kv_heads"],
                max_position_embeddings=shapes["max_sequence_length"], rms_norm_eps=1e-5, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": shapes["rope_theta"]}, attention_bias=False, mlp_bias=False)


def built_on(device, dtype, build):
    """``build()`` with parameters created directly on ``device`` in ``dtype`` (no fp32 copy on the host)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return build().eval()
    finally:
        torch.set_default_dtype(old)


def ar_ceiling(shapes: dict, layers: int, settings: Settings, dtype):
    """A causal Llama of the same size (random weights) and its KV-cached greedy ``generate``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**llama_kwargs(shapes, layers), bos_token_id=None, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(1)
    return built_on(settings.device, dtype, lambda: LlamaForCausalLM(cfg))


def denoisers(spec: dict, layers: int, settings: Settings, folder: Path):
    """(textdiff denoiser, its process, publisher bundle or None, notes). With publisher code the
    checkpoint is made by the publisher's class (published layout) and loaded natively by
    ``DiffusionLM.from_pretrained``; without, textdiff's class is built directly."""
    shapes, dtype, notes = spec["shapes"], spec["dtype"], []
    ids = pub.special_ids(shapes["embedding_size"])
    bundle = None
    if settings.publisher_code:
        try:
            llada, fast, modeling = pub.publisher_code(Path(settings.publisher_code).expanduser().resolve())
        except SystemExit as e:  # its one-line error says which file is missing
            notes.append(f"publisher rows skipped: {str(e.code).removeprefix('error: ')}")
        except ImportError as e:
            notes.append(f"publisher rows skipped: the publisher code needs {e.name} (pip install {e.name})")
        else:
            torch.manual_seed(0)
            theirs, ids = pub.build_checkpoint(modeling, {**shapes, "init_device": settings.device.type}, layers,
                                               folder, seed=0, std=spec["std"])  # saved in float32
            theirs = theirs.to(dtype=dtype).eval()  # before ours loads: the float32 copy never sits beside it
            from textdiff.lm import DiffusionLM

            lm = DiffusionLM.from_pretrained(str(folder), device=str(settings.device), dtype=dtype)
            bundle = SimpleNamespace(llada=llada, fast=fast, model=theirs, ids=ids)
            return lm.model.eval(), lm.process, bundle, notes
    cfg = DiffusionLlamaConfig(mask_token_id=ids["mask"], initializer_range=spec["std"], **llama_kwargs(shapes, layers))
    torch.manual_seed(0)
    model = built_on(settings.device, dtype, lambda: DiffusionLlamaModel(cfg))
    process = build_process("masked", vocab_size=shapes["embedding_size"], mask_id=ids["mask"])
    if not settings.publisher_code:
        notes.append("no --publisher-code: the publishers' scripts were not run")
    return model, process, bundle, notes


def variants_for(model, process, ar, bundle, prompts, N, spec):
    """(name -> timed call, name -> one-block warm-up call, name -> row label) for one (length, batch)."""
    block, rows = spec["block"], prompts.tolist()

    def ours(sampler, cache, n):
        return lambda: generate(model, process, sampler, rows, max_new_tokens=n, steps=n, block_size=block,
                                use_cache=cache, stop_at_eos=False, seed=0)

    def ceiling(n):
        return lambda: ar.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n,
                                   do_sample=False, pad_token_id=0)

    calls, warm, labels = {}, {}, {}
    for key, (label, sampler, cache) in MODES.items():
        sampler = build_sampler(sampler, process)
        calls[key], warm[key], labels[key] = ours(sampler, cache, N), ours(sampler, cache, block), f"textdiff: {label}"
    calls["ar"], warm["ar"], labels["ar"] = ceiling(N), ceiling(block), "AR ceiling: LlamaForCausalLM.generate, KV cache"
    if bundle is not None and prompts.shape[0] == 1:
        args = SimpleNamespace(block=block, threshold=THRESHOLD)
        for key, name, call, *_ in pub.modes(bundle.llada, bundle.fast, args, bundle.ids["mask"]):
            calls[f"pub_{key}"] = (lambda call=call: call(bundle.model, prompts, N, N))
            warm[f"pub_{key}"] = (lambda call=call: call(bundle.model, prompts, block, block))
            labels[f"pub_{key}"] = f"publisher: {name}"
    return calls, warm, labels


def rows_for(timed, labels, prompts, N, P) -> list:
    """Table rows of one (length, batch): tokens/s, model calls per generated position, ratios to no cache."""
    B, base = prompts.shape[0], timed["none"].median
    rows = []
    for key, tm in timed.items():
        out = tm.result
        if key == "ar":
            calls, seq = N, out
        elif key.startswith("pub_"):
            seq, calls = out
        else:
            calls, seq = out.model_calls, out.sequences
        row = {"gen_length": N, "batch": B, "method": labels[key], "seconds": round(tm.median, 4),
               "tokens_per_s": round(B * N / tm.median, 1), "calls_per_token": round(int(calls) / N, 4),
               "ms_per_call": round(1e3 * tm.median / int(calls), 3), "vs_no_cache": round(base / tm.median, 2),
               "rounds": len(tm.seconds)}
        mine = timed.get(key.removeprefix("pub_"))
        if key.startswith("pub_") and mine is not None:
            a, b = seq[0, P:].tolist(), mine.result.sequences[0, P:].tolist()
            row["tokens_agree"] = f"{sum(x == y for x, y in zip(a, b))}/{len(a)}"
            row["textdiff_speedup"] = round(tm.median / mine.median, 2)  # publisher seconds / textdiff seconds, same mode
        rows.append(row)
    return rows


def section_decoding(settings: Settings, budget) -> tuple[list, list]:
    """Section 3 rows and notes (see the module docstring)."""
    spec = dict(DRY_SPEC if settings.dry_run else GPU_SPEC)
    spec["std"] = settings.decode_std or spec["std"]
    layers = settings.decode_layers or spec["layers"]
    shapes, P = spec["shapes"], spec["prompt"]
    with tempfile.TemporaryDirectory() as tmp:
        model, process, bundle, notes = denoisers(spec, layers, settings, Path(tmp) / "llada")
    ar = ar_ceiling(shapes, layers, settings, spec["dtype"])
    n_params = sum(p.numel() for p in model.parameters()) / 1e9
    log(f"decoding: {layers} layers, {n_params:.2f} B parameters per model")
    low = min(pub.special_ids(shapes["embedding_size"]).values())
    g = torch.Generator().manual_seed(5)
    rows, last = [], None
    configs = [(N, B) for N in spec["lengths"] for B in spec["batches"]]  # the headline (256, batch 1) first
    for i, (N, B) in enumerate(configs):
        cost = B * N * (P + N)  # compute-bound scaling of a round from the previous configuration
        if last is not None and not budget.affords(last[0] * cost / last[1]):
            notes.append(f"length {N}, batch {B} skipped: over the section's time budget")
            continue
        prompts = torch.randint(0, low - 1, (B, P), generator=g).to(settings.device)
        calls, warm, labels = variants_for(model, process, ar, bundle, prompts, N, spec)
        timed = interleaved(calls, settings, budget.share(len(configs) - i), warm=warm)
        rows += rows_for(timed, labels, prompts, N, P)
        last = (sum(tm.median for tm in timed.values()), cost)
        log(f"decoding: length {N}, batch {B}: {len(timed)} methods, {len(timed['none'].seconds)} round(s)")
        free_memory(settings.device)
    s = shapes
    notes.insert(0, f"LLaDA-8B shapes except the layer count: {layers} of 32 layers, d_model {s['d_model']}, {s['n_heads']} heads, "
                    f"MLP {s['mlp_hidden_size']}, vocab {s['embedding_size']} ({n_params:.2f} B parameters per model), "
                    f"random weights (std {spec['std']}), {str(spec['dtype']).removeprefix('torch.')}; prompt {P} random tokens, "
                    f"block {spec['block']}, steps = generation length (threshold: at most that)")
    notes.append("calls_per_token = network forwards of the batch / generated positions per row (cache fills included); "
                 "ms_per_call = seconds / forwards; vs_no_cache = seconds of low-confidence no-cache / seconds; "
                 "median of interleaved rounds after a one-block warm-up")
    notes.append("random weights: how many tokens the threshold commits per call (calls_per_token) is this model's "
                 "confidence, not a trained one's; ms_per_call (what a cache saves per forward) does not depend on the weights")
    return rows, notes
