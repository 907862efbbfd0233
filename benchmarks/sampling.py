"""Sampling cost at a real vocabulary: each sampler's own work per step as a fraction of one denoiser
forward, and end-to-end ancestral tokens/s, against the samplers of 6e76ef1 (issue 16) in the same run.

    OMP_NUM_THREADS=1 python benchmarks/sampling.py --repeats 2 --e2e-batch 1 --e2e-length 64 --e2e-steps 64  # ~10 min
    OMP_NUM_THREADS=1 python benchmarks/sampling.py --skip steps window   # the issue's e2e size (long: the baseline)

Model: a random-init textdiff denoiser with the GPT-2 vocabulary size (V = 50,257), ``--hidden``
(512), ``--layers`` (3), ``--heads`` (8), batch ``--batch`` (4); the lm_head is most of a forward, as
in real models (at hidden 256 a forward is half as long and every ``frac`` about twice as large).

1. Per step (``--lengths`` 256 and 1024): the logits of a mid-run state (half the positions [MASK]
   for absorbing processes, t = 0.5, s = t − 1/steps) are computed once; then the sampler's ``step``
   alone is timed, today's (new) and 6e76ef1's (baseline) interleaved, ``--repeats`` times, best of each.
   ``frac`` = step time / forward time (the forward of the same model and state; with
   ``--interleave-forward``, a forward timed before each repeat of each pair, best of those: the
   machine's speed drifts by up to 2x over minutes when shared). At L = 1024 the
   baseline runs only for ``--baseline-1024`` pairs (each of its steps costs seconds).
2. End-to-end ancestral (masked): whole ``generate()`` runs of ``--e2e-batch`` (4) rows of
   ``--e2e-length`` (256) new tokens in ``--e2e-steps`` (256) steps, cached NFE on, timed from the call to
   the finished sample, baseline (with 6e76ef1's float32 attention) and new alternated
   ``--e2e-repeats`` times, best of each; tokens/s = B L / seconds. At the issue's size the baseline
   run alone takes tens of minutes (each of its steps costs several forwards); ``--e2e-batch 1
   --e2e-length 64 --e2e-steps 64`` keeps one token per step on average at a fraction of the time.
3. Windowed decoding (semi-AR, block ``--block``): forward time and output-layer rows with
   ``logits_to_keep`` (the window) against the full context (a model that ignores it).

Results: ``benchmarks/results/sampling.{md,json}``. Timings are wall-clock; compare only ratios
within one run (the machine may be shared).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import report  # noqa: E402
import sampling_baseline as base  # noqa: E402

import textdiff  # noqa: E402
import textdiff.models.modeling_textdiff as modeling  # noqa: E402
from textdiff.contexts import make_context  # noqa: E402
from textdiff.generation import _model_call, generate  # noqa: E402
from textdiff.models import TextDiffConfig, TextDiffModel  # noqa: E402

# Dream's default decoding (textdiff/models/published/dream.py): entropy order scored from the filtered p̃
DREAM_DEFAULT = {"ordering": "entropy", "temperature": 0.2, "top_p": 0.95, "score_from": "sampling",
                 "commit_rounding": "floor", "time_eps": 1e-3}
PAIRS = [("ancestral", "masked", {}), ("ancestral", "uniform", {}), ("ancestral", "uniform", {"top_k": 50}),
         ("first_hitting", "masked", {}), ("confidence", "masked", {}), ("confidence", "masked", {"temperature": 0.0}),
         ("threshold", "masked", {"temperature": 0.0}), ("remdm", "masked", {}), ("euler", "uniform", {}),
         ("euler", "uniform", {"top_k": 50}), ("euler", "sedd_absorb", {}), ("euler", "sedd_uniform", {}),
         ("analytic", "sedd_absorb", {}), ("analytic", "sedd_uniform", {}),
         ("confidence", "masked", DREAM_DEFAULT), ("ancestral", "masked", {"top_p": 0.9}),
         ("ancestral", "uniform", {"top_p": 0.9}), ("euler", "sedd_uniform", {"top_p": 0.9})]


class FullRows(torch.nn.Module):
    """The model behind a forward without ``logits_to_keep`` (every row through the output layer)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, t=None, attention_mask=None, position_ids=None, cache=None, update_cache=False):
        return self.model(input_ids, t=t, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                          update_cache=update_cache)


class old_attention:
    """Patch in 6e76ef1's float32 eager attention (the baseline's forward)."""

    def __enter__(self):
        self.saved, modeling.eager_attention = modeling.eager_attention, base.eager_attention

    def __exit__(self, *exc):
        modeling.eager_attention = self.saved


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def build_model(args, max_pos):
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                         max_position_embeddings=max_pos, mask_token_id=args.vocab - 1)
    return TextDiffModel(cfg).eval()


def label(sampler, process, knobs):
    return f"{sampler}/{process}" + "".join(f" {k}={v}" for k, v in knobs.items())


@torch.no_grad()
def section_steps(args, model, rows):
    V, B = args.vocab, args.batch
    for L in args.lengths:
        g = torch.Generator().manual_seed(0)
        masked = torch.where(torch.rand(B, L, generator=g) < 0.5, V - 1, torch.randint(0, V - 1, (B, L), generator=g))
        tokens = torch.randint(0, V - 1, (B, L), generator=g)
        times = []
        for _ in range(args.repeats):  # the forward's cost does not depend on the token values: one best-of
            times += [timed(lambda: model(masked)), timed(lambda: model(tokens))]
        fwd = {"absorbing": min(times), "uniform": min(times)}
        with old_attention():
            fwd_old = min(timed(lambda: model(masked)) for _ in range(args.repeats))
        logits = {"absorbing": model(masked).logits, "uniform": model(tokens).logits}
        t = torch.full((B,), 0.5, dtype=torch.float64)
        s = t - 1.0 / args.steps
        for sampler, pname, knobs in PAIRS:
            if args.pairs and label(sampler, pname, knobs) not in args.pairs:
                continue
            proc = textdiff.build_process(pname, vocab_size=V, mask_id=V - 1)
            kind = "absorbing" if pname in ("masked", "sedd_absorb") else "uniform"
            x, lg = (masked, logits[kind]) if kind == "absorbing" else (tokens, logits[kind])
            new = textdiff.build_sampler({"name": sampler, **knobs}, proc)
            old = base.BASELINES[sampler](new.config, proc) if args.baseline_repeats else None
            run_base = L == min(args.lengths) or args.baseline_1024 == "all" or label(sampler, pname, knobs) in args.baseline_1024.split(",")
            tn, tb, tf = [], [], []
            for r in range(args.repeats):
                if args.interleave_forward:  # the forward timed beside the steps: the machine's speed drifts
                    tf.append(timed(lambda: model(x)))
                gen = [torch.Generator().manual_seed(b + r) for b in range(B)]
                tn.append(timed(lambda: new.step(lg, t, s, x, gen)))
                if run_base and r < args.baseline_repeats:
                    gen = [torch.Generator().manual_seed(b + r) for b in range(B)]
                    tb.append(timed(lambda: old.step(lg, t, s, x, gen)))
            new_s, fwd_s = min(tn), min(tf) if tf else fwd[kind]
            row = {"section": 1, "L": L, "pair": label(sampler, pname, knobs), "forward_s": round(fwd_s, 3),
                   "new_step_s": round(new_s, 4), "new_frac": round(new_s / fwd_s, 3)}
            if tb:
                row.update(baseline_step_s=round(min(tb), 3), baseline_frac=round(min(tb) / fwd_old, 2),
                           speedup=round(min(tb) / new_s, 1))
            rows.append(row)
            print(row, flush=True)
        rows.append({"section": 1, "L": L, "pair": "forward (new: float64 attention at inference) / baseline forward",
                     "forward_s": round(fwd["absorbing"], 3), "baseline_forward_s": round(fwd_old, 3)})


def e2e_run(model, proc, sampler, args, baseline):
    """(seconds, model calls) of one whole ``generate()`` run: --e2e-batch rows of --e2e-length new
    tokens in --e2e-steps steps (cached NFE on: a step that changed nothing reuses the logits)."""
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    with old_attention() if baseline else _Null():
        t0 = time.perf_counter()
        out = generate(model, proc, sampler, None, batch_size=args.e2e_batch, max_new_tokens=args.e2e_length,
                       steps=args.e2e_steps, seed=0, stop_at_eos=False)
        took = time.perf_counter() - t0
    hook.remove()
    assert not bool((out.sequences == proc.mask_id).any())  # a finished sample: no [MASK] left
    return took, len(calls)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def section_e2e(args, model, rows):
    V = args.vocab
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=V - 1)
    new = textdiff.build_sampler("ancestral", proc)
    old = base.BaselineAncestral(new.config, proc)
    tn, tb = [], []
    for _ in range(args.e2e_repeats):  # alternated, best of each
        tb.append(e2e_run(model, proc, old, args, True))
        tn.append(e2e_run(model, proc, new, args, False))
    tokens = args.e2e_batch * args.e2e_length
    (per_new, nfe_new), (per_old, nfe_old) = min(tn), min(tb)
    row = {"section": 2, "pair": f"ancestral/masked B={args.e2e_batch} L={args.e2e_length} steps={args.e2e_steps}",
           "new_s": round(per_new, 2), "baseline_s": round(per_old, 2), "new_tokens_per_s": round(tokens / per_new, 2),
           "baseline_tokens_per_s": round(tokens / per_old, 3), "speedup": round(per_old / per_new, 2),
           "new_model_calls": nfe_new, "baseline_model_calls": nfe_old, "runs": len(tn)}
    rows.append(row)
    print(row, flush=True)


@torch.no_grad()
def section_window(args, model, rows):
    V, B, L, Lb = args.vocab, args.batch, args.window_context, args.block
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=V - 1)
    x = torch.full((B, L), V - 1)
    x[:, : L // 2] = torch.randint(0, V - 1, (B, L // 2), generator=torch.Generator().manual_seed(1))
    valid = torch.ones(B, L, dtype=torch.bool)
    pos = torch.arange(L).expand(B, L)
    lo, hi = L // 2, L // 2 + Lb
    t = torch.full((B,), 0.5)
    keep = make_context(model, proc, _model_call(model, proc), valid, pos, block_size=Lb, cache="none")
    full = FullRows(model)
    every = make_context(full, proc, _model_call(full, proc), valid, pos, block_size=Lb, cache="none")
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    tk, tf = [], []
    for _ in range(args.repeats):
        tf.append(timed(lambda: every.logits(x, lo, hi, t)))
        tk.append(timed(lambda: keep.logits(x, lo, hi, t)))
    hook.remove()
    same = bool(torch.equal(keep.logits(x, lo, hi, t), every.logits(x, lo, hi, t)))
    row = {"section": 3, "pair": f"semi-AR masked, context {L}, window {Lb}, no cache",
           "lm_head_rows_per_call_keep": seen[1] * B, "lm_head_rows_per_call_full": seen[0] * B,
           "forward_s_keep": round(min(tk), 3), "forward_s_full": round(min(tf), 3),
           "speedup": round(min(tf) / min(tk), 2), "identical_logits": same}
    rows.append(row)
    print(row, flush=True)


def markdown(rows, meta):
    out = ["# Sampling cost (issue 16)", "", f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}, torch "
           f"{meta['torch']}, {meta['threads']} thread. Model: {meta['model']}. Ratios within this run; "
           f"total {meta['total_seconds']} s.", ""]
    titles = {1: "Sampler work per step (frac = step / one forward; baseline = 6e76ef1)",
              2: "End-to-end ancestral: whole generate() runs, timed", 3: "Windowed decoding: output layer on the window"}
    return "\n".join(out + report.sections(rows, titles))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-repeats", type=int, default=1)
    ap.add_argument("--baseline-1024", default="ancestral/masked,confidence/masked", help="pairs (or 'all') whose baseline runs at L > min")
    ap.add_argument("--e2e-batch", type=int, default=4)
    ap.add_argument("--e2e-steps", type=int, default=256)
    ap.add_argument("--e2e-length", type=int, default=256)
    ap.add_argument("--e2e-repeats", type=int, default=1)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--window-context", type=int, default=256)
    ap.add_argument("--skip", nargs="*", default=[], choices=["steps", "e2e", "window"])
    ap.add_argument("--pairs", nargs="*", default=[], help="time only these pairs (labels as printed), e.g. 'ancestral/masked'")
    ap.add_argument("--interleave-forward", action="store_true", help="time a forward beside each pair's steps")
    ap.add_argument("--name", default="sampling")
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    model = build_model(args, max(max(args.lengths), args.e2e_length, 256))
    rows = []
    if "steps" not in args.skip:
        section_steps(args, model, rows)
    if "e2e" not in args.skip:
        section_e2e(args, model, rows)
    if "window" not in args.skip:
        section_window(args, model, rows)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    meta = {"command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv), "machine": report.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "model": f"random init, V={args.vocab}, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, "
                     f"batch {args.batch}, {n:.1f}M parameters", "total_seconds": round(time.perf_counter() - started, 1)}
    report.save(args.name, rows, meta, markdown(rows, meta))

if __name__ == "__main__":
    main()
