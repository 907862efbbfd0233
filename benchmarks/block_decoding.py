"""Block decoding speed and cache accuracy, as ratios against baselines run in the same process.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/block_decoding.py            # random-init models
    ... --block-model runs/bd3lm-quickstart/final --masked-model runs/quickstart/final  # trained ones

Sections (all models of the same size; random init unless checkpoints are given):

1. Exact KV cache vs recomputing the whole prefix, N = ``--tokens`` (1024) at L' = ``--block`` (16):
   tokens/s, NFE, identical output.
2. Methods at N = ``--table-tokens``: the AR baseline (causal model, exact KV cache, one token per
   call), block diffusion with and without the cache, full-sequence masked diffusion, semi-AR blocks of
   a bidirectional model with the approximate prefix / dual caches; fixed steps and threshold decoding.
3. Approximate caches against the uncached output of the same bidirectional model: token agreement
   (same seeds, greedy threshold decoding) and, replayed along the cached run, the max |logit
   difference| and the argmax agreement on masked positions.

Timings are wall-clock on whatever machine runs this; compare only ratios within one run.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from textdiff.contexts import make_context
from textdiff.generation import _model_call, generate, left_pad
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff import build_process, build_sampler

RESULTS = Path(__file__).parent / "results"


def random_model(attention, block_size, args, max_pos):
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                         max_position_embeddings=max_pos, attention=attention,
                         block_size=block_size if attention == "block_causal" else None, mask_token_id=args.vocab - 1)
    return TextDiffModel(cfg).eval()


def load(path):
    from textdiff.lm import DiffusionLM

    lm = DiffusionLM.from_pretrained(path)
    return lm.model.eval(), lm.process


def n_params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def run(model, process, sampler, n, steps, prompts, **kw):
    """generate() once (after a short warm-up of two blocks), return a result row."""
    wb = kw.get("block_size") or 16
    generate(model, process, sampler, prompts, max_new_tokens=2 * wb, steps=2 * max(1, steps * wb // n),
             seed=list(range(len(prompts))), **kw)
    out = generate(model, process, sampler, prompts, max_new_tokens=n, steps=steps, seed=list(range(len(prompts))), **kw)
    tokens = sum(out.lengths)
    return out, {"tokens": tokens, "seconds": round(out.seconds, 3), "tokens_per_s": round(tokens / out.seconds, 1),
                 "nfe": out.nfe, "model_calls": out.model_calls}


def section_exact(args, rows):
    N, Lb = args.tokens, args.block
    model = random_model("block_causal", Lb, args, N + Lb)
    proc = build_process({"name": "block", "block_size": Lb}, args.vocab, args.vocab - 1)
    sampler = build_sampler("ancestral", proc)
    steps = N // Lb * args.steps_per_block
    prompts = [[1]]
    cached, a = run(model, proc, sampler, N, steps, prompts, block_size=Lb, use_cache="exact")
    plain, b = run(model, proc, sampler, N, steps, prompts, block_size=Lb, use_cache="none")
    same = bool(torch.equal(cached.sequences, plain.sequences))
    rows.append({"section": 1, "method": f"BD3 L'={Lb} exact KV cache", **a, "speedup": round(b["seconds"] / a["seconds"], 2),
                 "identical_output": same})
    rows.append({"section": 1, "method": f"BD3 L'={Lb} recompute prefix (no cache)", **b, "speedup": 1.0, "identical_output": same})
    return n_params(model)


def section_methods(args, rows, block_ckpt=None, masked_ckpt=None):
    N, Lb = args.table_tokens, args.block
    max_pos = max(N + Lb, 256)
    if block_ckpt:
        bd3, bproc = load(block_ckpt)
        Lb = bd3.config.block_size
    else:
        bd3 = random_model("block_causal", Lb, args, max_pos)
        bproc = build_process({"name": "block", "block_size": Lb}, args.vocab, args.vocab - 1)
    if masked_ckpt:
        bidir, mproc = load(masked_ckpt)
    else:
        bidir = random_model("bidirectional", None, args, max_pos)
        mproc = build_process("masked", args.vocab, args.vocab - 1)
    V = bproc.vocab_size
    if block_ckpt:  # the AR baseline's speed does not depend on training: same size, random init
        cfg = copy.deepcopy(bd3.config)
        cfg.attention, cfg.block_size, cfg.max_position_embeddings = "causal", None, max(cfg.max_position_embeddings, max_pos)
        torch.manual_seed(0)
        ar = TextDiffModel(cfg).eval()
    else:
        ar = random_model("causal", None, args, max_pos)
    prompts = [[min(5, V - 2)]] * args.batch
    fixed = N  # one token per call, as the AR baseline
    fast = N // 4
    thr = {"name": "threshold", "threshold": args.threshold, "temperature": 0.0}
    aproc = build_process("ar", V, bproc.mask_id)
    table = [
        ("AR baseline, causal, exact KV cache", ar, aproc, "ancestral", fixed, dict(block_size=1, use_cache="exact")),
        (f"BD3 L'={Lb} exact cache, {fixed} steps", bd3, bproc, "ancestral", fixed, dict(block_size=Lb, use_cache="exact")),
        (f"BD3 L'={Lb} no cache, {fixed} steps", bd3, bproc, "ancestral", fixed, dict(block_size=Lb, use_cache="none")),
        (f"BD3 L'={Lb} exact cache, {fast} steps", bd3, bproc, "ancestral", fast, dict(block_size=Lb, use_cache="exact")),
        (f"BD3 L'={Lb} exact cache, threshold {args.threshold}", bd3, bproc, thr, fixed, dict(block_size=Lb, use_cache="exact")),
        (f"masked full-sequence, {fixed} steps", bidir, mproc, "ancestral", fixed, dict(block_size=None, use_cache="none")),
        (f"masked full-sequence, {fast} steps", bidir, mproc, "ancestral", fast, dict(block_size=None, use_cache="none")),
        (f"masked semi-AR L'={Lb}, no cache, threshold", bidir, mproc, thr, fixed, dict(block_size=Lb, use_cache="none")),
        (f"masked semi-AR L'={Lb}, prefix cache (approx), threshold", bidir, mproc, thr, fixed, dict(block_size=Lb, use_cache="prefix")),
        (f"masked semi-AR L'={Lb}, dual cache (approx), threshold", bidir, mproc, thr, fixed, dict(block_size=Lb, use_cache="dual")),
    ]
    base = None
    for name, model, proc, sampler, steps, kw in table:
        _, r = run(model, proc, build_sampler(sampler, proc), N, steps, prompts, **kw)
        base = base or r["tokens_per_s"]
        rows.append({"section": 2, "method": name, **r, "vs_first_row": round(r["tokens_per_s"] / base, 2)})
    return bidir, mproc, Lb


@torch.no_grad()
def replay(model, proc, mode, N, Lb, steps_per_block, threshold, batch):
    """Decode with the approximate cache ``mode``; at every step also compute the uncached logits
    on the same state. Returns (max |Δ logit|, mean |Δ logit|, argmax agreement on masked positions)."""
    ids, pv = left_pad([[5]] * batch, 0, "cpu")
    B, P = ids.shape
    x = torch.cat([ids, proc.prior((B, N))], 1)
    valid = torch.cat([pv, torch.ones(B, N, dtype=torch.bool)], 1)
    pos = torch.arange(P + N).expand(B, -1)
    call = _model_call(model, proc)
    approx = make_context(model, proc, call, valid, pos, block_size=Lb, cache=mode)
    exact = make_context(model, proc, call, valid, pos, block_size=Lb, cache="none")
    sampler = build_sampler({"name": "threshold", "threshold": threshold, "temperature": 0.0}, proc)
    worst, total, count, agree, masked = 0.0, 0.0, 0, 0, 0
    for lo in range(P, P + N, Lb):
        hi = lo + Lb
        sampler.set_timesteps(steps_per_block)
        for t_f, s_f in sampler.pairs():
            win = x[:, lo:hi]
            if sampler.finished(win):
                break
            t, s = torch.full((B,), t_f), torch.full((B,), s_f)
            la, le = approx.logits(x, lo, hi, t.float()), exact.logits(x, lo, hi, t.float())
            m = proc.is_noise(win)
            d = (la - le).abs()[m]
            worst, total, count = max(worst, float(d.max())), total + float(d.sum()), count + d.numel()
            agree += int((la.argmax(-1) == le.argmax(-1))[m].sum())
            masked += int(m.sum())
            x[:, lo:hi] = sampler.step(la, t.double(), s.double(), win).x_s
        approx.commit(x, lo, hi)
        exact.commit(x, lo, hi)
    return worst, total / max(count, 1), agree / max(masked, 1)


def section_approx(args, rows, bidir, mproc, Lb):
    N = args.table_tokens
    thr = {"name": "threshold", "threshold": args.threshold, "temperature": 0.0}
    prompts = [[5]] * args.batch
    kw = dict(max_new_tokens=N, steps=N, block_size=Lb, seed=list(range(args.batch)))
    ref = generate(bidir, mproc, thr, prompts, use_cache="none", **kw)
    for mode in ("prefix", "dual"):
        out = generate(bidir, mproc, thr, prompts, use_cache=mode, **kw)
        got, want = out.sequences[:, -N:], ref.sequences[:, -N:]
        worst, mean, argmax = replay(bidir, mproc, mode, N, Lb, Lb, args.threshold, args.batch)
        rows.append({"section": 3, "method": f"{mode} cache vs uncached", "token_agreement": round(float((got == want).float().mean()), 4),
                     "identical_rows": int((got == want).all(1).sum()), "rows": args.batch, "max_abs_logit_diff": round(worst, 4),
                     "mean_abs_logit_diff": round(mean, 5), "argmax_agreement_on_masked": round(argmax, 4),
                     "nfe": out.nfe, "nfe_uncached": ref.nfe, "seconds": round(out.seconds, 3), "seconds_uncached": round(ref.seconds, 3)})


def section_length(args, rows, block_ckpt):
    """Variable length: stop at EOS and slide the cache window beyond the training context."""
    from textdiff.lm import DiffusionLM

    lm = DiffusionLM.from_pretrained(block_ckpt)
    model, proc, tok = lm.model.eval(), lm.process, lm.tokenizer
    Lb, ctx = model.config.block_size, model.config.max_position_embeddings
    N = 4 * ctx  # four times the training context
    window = ctx - 2 * Lb
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in ("The", "Return the", "This module", "If the")]
    prompts = [p for p in prompts for _ in range(args.batch // 2 or 1)]
    out = generate(model, proc, "ancestral", prompts, max_new_tokens=N, steps=N, block_size=Lb, max_context=window,
                   seed=list(range(len(prompts))), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    rows.append({"section": 4, "method": f"BD3 L'={Lb}, stop at EOS, window {window} of context {ctx}, up to {N} new",
                 "lengths": out.lengths, "mean_length": round(sum(out.lengths) / len(out.lengths), 1),
                 "beyond_context": sum(n > ctx for n in out.lengths), "rows": len(prompts),
                 "seconds": round(out.seconds, 2), "nfe": out.nfe})


def markdown(rows, meta) -> str:
    lines = [f"# Block decoding benchmark ({meta['model']})", "", f"Command: `{meta['command']}`  ",
             f"Machine: {meta['machine']}, torch {meta['torch']}, 1 thread. Ratios are within this run.", ""]
    for sec in sorted({r["section"] for r in rows}):
        part = [r for r in rows if r["section"] == sec]
        keys = [k for k in part[0] if k != "section"]
        lines += [f"## Section {sec}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in part]
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--steps-per-block", type=int, default=4)
    ap.add_argument("--table-tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--block-model", help="a trained block-diffusion model folder (section 2)")
    ap.add_argument("--masked-model", help="a trained full-sequence masked model folder (sections 2, 3)")
    ap.add_argument("--skip-exact", action="store_true", help="skip section 1")
    ap.add_argument("--name", default="block_decoding")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    started = time.perf_counter()
    size = section_exact(args, rows) if not args.skip_exact else None
    bidir, mproc, Lb = section_methods(args, rows, args.block_model, args.masked_model)
    section_approx(args, rows, bidir, mproc, Lb)
    if args.block_model:
        section_length(args, rows, args.block_model)
    desc = (f"trained: {args.block_model}, {args.masked_model}" if args.block_model or args.masked_model else
            f"random init, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, vocab {args.vocab}"
            + (f", {size:.2f}M parameters" if size else ""))
    import sys

    meta = {"model": desc, "command": "python " + " ".join(sys.argv), "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__, "total_seconds": round(time.perf_counter() - started, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    text = markdown(rows, meta)
    (RESULTS / f"{args.name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
