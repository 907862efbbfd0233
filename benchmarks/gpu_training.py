"""Sections 1 and 2 of ``benchmarks/gpu.py``: training throughput and MFU at MDLM's small shapes
next to a same-size GPT-2, and BD3-LM training with the FlexAttention block mask against the dense one.

Every textdiff step is the real one of ``textdiff train``: the process corrupts x0, the denoiser runs
under bf16 autocast, the per-token NELBO (``nelbo_terms``: the process's ``loss``) is averaged,
then backward, gradient clipping at 1.0 and a fused AdamW step (fp32 weights, as with
``mixed_precision: bf16``). Random weights, random token rows.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from gpu_common import SectionFailed, Settings, compile_model, free_memory, interleaved, log, rounded, sync
from textdiff import build_process
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff.objective import nelbo_terms

# recipes/mdlm-owt-small.yaml: 12 x 768, L = 1024, GPT-2 vocabulary + [MASK]
GPU_SHAPES = {"vocab": 50258, "hidden": 768, "layers": 12, "heads": 12, "seq_len": 1024, "dropout": 0.1,
              "batches": (8, 16, 32, 64, 128, 256), "bd3_batch": 16, "flex_tile": 128}
DRY_SHAPES = {"vocab": 128, "hidden": 32, "layers": 2, "heads": 2, "seq_len": 64, "dropout": 0.1,
              "batches": (2, 4), "bd3_batch": 2, "flex_tile": 16}
BLOCK_SIZES = (4, 16)  # L' of section 2
LOSS_RTOL = 1e-2  # flex vs dense loss: bf16 autocast rounds the two attention kernels differently (~1 bf16 ulp)


def shapes(settings: Settings) -> dict:
    return DRY_SHAPES if settings.dry_run else GPU_SHAPES


def flops_per_token(s: dict) -> float:
    """Training FLOPs per token, forward + backward (PaLM's count): 6 · (weight-matrix parameters,
    12 d² per layer + the V × d output layer) + 12 · layers · L · d for the attention scores and
    values. The same count for both models (same shapes), so MFU compares like tokens/s."""
    d, n = s["hidden"], s["layers"]
    return 6 * (12 * n * d * d + s["vocab"] * d) + 12 * n * s["seq_len"] * d


def random_rows(batch: int, s: dict, device, seed: int = 0) -> torch.Tensor:
    """x0 [B, L]: random tokens below the [MASK] id (V − 1)."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, s["vocab"] - 1, (batch, s["seq_len"]), generator=g, device=device)


def optimizer_for(model, settings: Settings):
    return torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), weight_decay=0.0, fused=settings.cuda)


def make_step(loss_fn: Callable[..., torch.Tensor], model, optimizer, settings: Settings, backward: bool = True):
    """One training step ``step(update=True, **kw) -> loss``: ``loss_fn(**kw)`` under bf16 autocast,
    backward, clip at 1.0, AdamW. ``update=False`` stops after backward (gradients dropped);
    ``backward=False`` (the CPU's FlexAttention, which has no backward there) stops after the loss."""
    def step(update: bool = True, **kw) -> torch.Tensor:
        if not backward:
            with torch.no_grad(), settings.autocast():
                return loss_fn(**kw)
        with settings.autocast():
            loss = loss_fn(**kw)
        try:
            loss.backward()
            if update:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
        finally:
            optimizer.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error) or "ALLOC_FAILED" in str(error)


def largest_batch(try_batch: Callable[[int], None], candidates, device) -> tuple[Optional[int], list]:
    """The largest of ``candidates`` (ascending) for which ``try_batch(B)`` runs without running out of
    memory, stopping at the first failure; and [[B, fits], ...] as tried."""
    best, tried = None, []
    for b in candidates:
        try:
            try_batch(b)
            fits = True
        except RuntimeError as e:  # torch.OutOfMemoryError, or cuBLAS failing to allocate its workspace
            if not is_oom(e):
                raise
            fits = False
        free_memory(device)
        tried.append([b, fits])
        if not fits:
            break
        best = b
    return best, tried


# ---------------------------------------------------------------------------------------------
# Section 1: MDLM training vs GPT-2
# ---------------------------------------------------------------------------------------------


def mdlm_model(s: dict, device, block_size: Optional[int] = None, dropout: Optional[float] = None):
    """The recipe's denoiser (no time conditioning): bidirectional, or block-causal with ``block_size``."""
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_layers=s["layers"], num_heads=s["heads"],
                         mlp_ratio=4.0, dropout=s["dropout"] if dropout is None else dropout,
                         max_position_embeddings=s["seq_len"], attention="block_causal" if block_size else "bidirectional",
                         block_size=block_size, mask_token_id=s["vocab"] - 1)
    return TextDiffModel(cfg).to(device).train()


def gpt2_model(s: dict, device):
    """transformers' GPT-2 of the same size (tied embeddings, as released), SDPA attention."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    p = s["dropout"]
    cfg = GPT2Config(vocab_size=s["vocab"], n_positions=s["seq_len"], n_embd=s["hidden"], n_layer=s["layers"],
                     n_head=s["heads"], resid_pdrop=p, embd_pdrop=p, attn_pdrop=p, bos_token_id=0, eos_token_id=0, use_cache=False,
                     attn_implementation="sdpa")
    return GPT2LMHeadModel(cfg).to(device).train()


def compiled_step(name, model, step_for, batches, s, settings: Settings, notes: list):
    """(the compiled model's step at ``batches[name]``, seconds of its first two steps: compilation).
    Should the compiled step run out of memory where the eager one did not, the batch is halved."""
    compiled = compile_model(model, settings)
    while True:
        step = step_for(name, compiled, random_rows(batches[name], s, settings.device, seed=1))
        start = time.perf_counter()
        try:
            step(), step()
            sync(settings.device)
            return step, time.perf_counter() - start
        except RuntimeError as e:
            if not is_oom(e) or batches[name] <= s["batches"][0]:
                raise
        free_memory(settings.device)
        batches[name] //= 2
        notes.append(f"{name}: the compiled step ran out of memory; batch halved to {batches[name]}")
        log(notes[-1])


def section_training(settings: Settings, budget) -> tuple[list, list]:
    """Section 1 rows and notes: tokens/s and MFU of the masked-diffusion step and GPT-2's, each at
    the largest batch (of ``batches``) whose eager step fits beside the other model."""
    s, device = shapes(settings), settings.device
    process = build_process({"name": "masked", "schedule": {"name": "loglinear", "eps": 1e-3}, "time_conditioning": False},
                            vocab_size=s["vocab"], mask_id=s["vocab"] - 1)
    models = {"textdiff": mdlm_model(s, device), "gpt2": gpt2_model(s, device)}
    optimizers = {k: optimizer_for(m, settings) for k, m in models.items()}

    def step_for(name, model, x0):
        if name == "textdiff":
            return make_step(lambda: nelbo_terms(model, process, x0).mean(), models[name], optimizers[name], settings)
        return make_step(lambda: model(input_ids=x0, labels=x0).loss, models[name], optimizers[name], settings)

    batches, notes = {}, []
    for name, model in models.items():  # eager steps (a compiled step that still runs out of memory halves its batch)
        best, tried = largest_batch(lambda b: step_for(name, model, random_rows(b, s, device))(), s["batches"], device)
        if best is None:
            raise RuntimeError(f"{name}: not even batch {s['batches'][0]} fits")
        batches[name] = best
        notes.append(f"{name}: batch search (eager step, both models resident) {tried} -> {best}")
        log(f"training: {name} batch {best} (tried {tried})")
    steps, first = {}, {}
    for name, model in models.items():
        steps[name], first[name] = compiled_step(name, model, step_for, batches, s, settings, notes)
    timed = interleaved(steps, settings, budget)

    fpt = flops_per_token(s)
    rows = []
    for name, label in (("textdiff", "textdiff masked diffusion (MDLM, SUBS NELBO)"), ("gpt2", "transformers GPT-2 (causal LM loss)")):
        tm, tokens = timed[name], batches[name] * s["seq_len"]
        tps = tokens / tm.median
        achieved = tps * fpt / 1e12
        rows.append({"model": label, "params_M": round(sum(p.numel() for p in models[name].parameters()) / 1e6, 1),
                     "batch": batches[name], "step_ms": round(1e3 * tm.median, 1), "tokens_per_s": round(tps),
                     "model_tflops": round(achieved, 2),
                     "mfu_vs_measured": rounded(achieved / settings.matmul_tflops, 4),
                     "mfu_vs_datasheet": rounded(achieved / settings.datasheet_tflops, 4) if settings.datasheet_tflops else "n/a",
                     "peak_gib": rounded(tm.peak_gib, 2) if tm.peak_gib is not None else "n/a (CPU)",
                     "first_steps_s": round(first[name], 1), "rounds": len(tm.seconds)})
    rows[0]["vs_gpt2"] = round(rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"], 3)
    rows[1]["vs_gpt2"] = 1.0
    notes.append(f"FLOPs per token {fpt / 1e9:.4f} G = 6 (12 n_layers d^2 + V d) + 12 n_layers L d, the same count for both "
                 f"models; MFU = model_tflops / {settings.matmul_tflops:.1f} (measured) or / the datasheet figure")
    notes.append("step = forward under bf16 autocast + loss + backward + clip 1.0 + AdamW (fp32 weights; fused on CUDA); "
                 f"dropout {s['dropout']} (the recipe's); first_steps_s = the first two compiled steps (compilation); "
                 "then the median of interleaved rounds")
    return rows, notes


# ---------------------------------------------------------------------------------------------
# Section 2: BD3-LM training, FlexAttention block mask vs the dense SDPA mask
# ---------------------------------------------------------------------------------------------


def section_bd3(settings: Settings, budget) -> tuple[list, list]:
    """Section 2 rows and notes: for each L', one model trained alternately through the compiled
    FlexAttention ``BlockMask`` and through the dense bool mask (SDPA): loss on one fixed batch
    (must agree within bf16 tolerance), tokens/s, peak memory."""
    s, device = shapes(settings), settings.device
    backward = settings.cuda  # FlexAttention has no backward on the CPU: the dry run times the loss only
    B, rows, notes = s["bd3_batch"], [], []
    for i, Lb in enumerate(BLOCK_SIZES):
        if rows and not budget.affords(budget.used() / (len(rows) // 2)):
            notes.append(f"L'={Lb} skipped: over the section's time budget")
            continue
        model = compile_model(mdlm_model(s, device, block_size=Lb, dropout=0.0), settings)
        optimizer = optimizer_for(model, settings)
        x0 = random_rows(B, s, device, seed=2)
        steps, losses = {}, {}
        for backend in ("flex", "sdpa"):
            process = build_process({"name": "block", "block_size": Lb, "attention_backend": backend, "flex_tile": s["flex_tile"]},
                                    vocab_size=s["vocab"], mask_id=s["vocab"] - 1)

            def loss_fn(process=process, model=model, x0=x0, t=None, seed=None):
                gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
                return nelbo_terms(model, process, x0, t=t, generator=gen).mean()

            steps[backend] = make_step(loss_fn, model, optimizer, settings, backward=backward)
        t_fixed = build_process({"name": "block", "block_size": Lb}, s["vocab"], s["vocab"] - 1).sample_t(
            B, device=device, generator=torch.Generator().manual_seed(3), seq_len=s["seq_len"])
        for backend, step in steps.items():  # same weights, same t, same masks: compiles the training graphs too
            losses[backend] = float(step(update=False, t=t_fixed, seed=4))
        log(f"bd3: L'={Lb} loss flex {losses['flex']:.5f} dense {losses['sdpa']:.5f}")
        timed = interleaved(steps, settings, budget.share(len(BLOCK_SIZES) - i))
        rel = abs(losses["flex"] - losses["sdpa"]) / abs(losses["sdpa"])
        for backend, label in (("flex", "FlexAttention BlockMask, compiled"), ("sdpa", "dense bool mask, SDPA")):
            tm = timed[backend]
            rows.append({"block": Lb, "mask": label, "batch": B, "step_ms": round(1e3 * tm.median, 1),
                         "tokens_per_s": round(B * s["seq_len"] / tm.median), "loss_fixed_batch": round(losses[backend], 5),
                         "loss_rel_diff": rounded(rel, 6), "loss_equal": rel <= LOSS_RTOL,
                         "peak_gib": rounded(tm.peak_gib, 2) if tm.peak_gib is not None else "n/a (CPU)",
                         "rounds": len(tm.seconds)})
        ratio = timed["sdpa"].median / timed["flex"].median
        rows[-2]["flex_vs_dense"], rows[-1]["flex_vs_dense"] = round(ratio, 3), 1.0
        del model, optimizer, steps
        free_memory(device)
    notes.append(f"one model per L' (block-causal, dropout 0), trained alternately through both masks; tokens = B x L "
                 f"(the model runs on [x_t ; x0], 2L = {2 * s['seq_len']}); flex tile {s['flex_tile']}; loss_equal: "
                 f"relative difference <= {LOSS_RTOL} on one fixed batch (same weights, t and masks)")
    if not backward:
        notes.append("CPU dry run: forward + loss only for both masks (FlexAttention has no backward on the CPU)")
    bad = sorted({r["block"] for r in rows if not r["loss_equal"]})
    if bad:
        raise SectionFailed(f"FlexAttention and dense losses differ by more than {LOSS_RTOL} (relative) at L' = {bad}", rows, notes)
    return rows, notes
