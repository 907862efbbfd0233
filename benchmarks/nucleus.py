"""Nucleus (top-p) filtering, Dream's filtered scoring and UDLM's top-p step at V = 50,257, against
the earlier code in the same process.

    OMP_NUM_THREADS=1 python benchmarks/nucleus.py            # ~5 min

1. ``nucleus`` alone on rows [n, V] of float64 logits (one thread, best of ``--repeats``):
   * ``sort``: the definition, a full descending sort and a running sum per row (what reference
     implementations do);
   * ``tiers`` (8cb9326, kept below): top-k selections of 128, then 8x larger, and a full sort for the
     rows that need more than V / 8 tokens (flat rows);
   * ``histogram eager`` (096d860): the cut from bit-pattern bins in eager PyTorch passes;
   * ``histogram compiled`` (today's :func:`textdiff.samplers.nucleus.nucleus` on CPU): the same cut in
     the compiled row loops of :mod:`textdiff.samplers.nucleus_jit`.
   Rows: ``flat`` (N(0, 0.45²) logits / T = 0.2: what a random-init model gives at Dream's temperature;
   the nucleus holds ~26% of the vocabulary) and ``peaked`` (N(0, 4²): tens of tokens hold the mass).
   The kept sets are checked equal.
2. Dream's default decoding step (entropy order scored from p̃, T = 0.2, top-p 0.95) on the logits of
   the random-init benchmark model of ``sampling.py`` (hidden 512, 3 layers, batch 4, L = 256, half the
   positions [MASK]): the step as a fraction of that model's forward, with today's fused path (compiled
   cut), the same path in eager passes (096d860), filter-then-score (``fused_filter = False``) with
   today's nucleus, and with 8cb9326's nucleus; the committed tokens are checked equal.
3. UDLM's ancestral step with top-p 0.9 (every position read) at t = 0.99 … 0.01 (tokens: the row's
   argmax with probability 1 − t, else random): today's bounds on p̃0(x) with the cut only where needed,
   against cutting every row (096d860's read) compiled and eager; the tokens are checked equal.

Results: ``benchmarks/results/nucleus.{md,json}``; compare only ratios within one run.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import report  # noqa: E402

import textdiff  # noqa: E402
import textdiff.samplers.base as sampler_base  # noqa: E402
from textdiff.models import TextDiffConfig, TextDiffModel  # noqa: E402
import textdiff.samplers.nucleus as nucleus_module  # noqa: E402
from textdiff.samplers import uniform_rows  # noqa: E402
from textdiff.samplers.nucleus import nucleus  # noqa: E402
DREAM = {"name": "confidence", "ordering": "entropy", "temperature": 0.2, "top_p": 0.95, "score_from": "sampling",
         "commit_rounding": "floor", "time_eps": 1e-3}


@contextlib.contextmanager
def compiled(on: bool):
    """The nucleus through its compiled row loops (numba) or its eager passes, for the block."""
    saved = nucleus_module.USE_JIT
    nucleus_module.USE_JIT = on
    try:
        yield
    finally:
        nucleus_module.USE_JIT = saved


def nucleus_by_sort(lg: torch.Tensor, top_p: float) -> torch.Tensor:
    """The definition: sort, running sum, keep while the mass ranked above is below top_p."""
    srt, order = torch.sort(lg, dim=-1, descending=True)
    p = torch.softmax(srt, -1)
    drop = torch.zeros_like(lg, dtype=torch.bool).scatter(-1, order, (p.cumsum(-1) - p) >= top_p)
    return lg.masked_fill(drop, float("-inf"))


def nucleus_tiers(lg: torch.Tensor, top_p: float, first_k: int = 128, growth: int = 8) -> torch.Tensor:
    """textdiff's nucleus at 8cb9326: top-k tiers, a full sort for flat rows (kept as the baseline)."""
    shape, V = lg.shape, lg.shape[-1]
    flat = lg.reshape(-1, V)
    lse = torch.logsumexp(flat, dim=-1)
    cut = torch.empty(flat.shape[0], dtype=flat.dtype, device=flat.device)
    rest = torch.arange(flat.shape[0], device=flat.device)
    k = min(first_k, V)
    while rest.numel():
        rows = flat if rest.numel() == flat.shape[0] else flat[rest]
        top = rows.topk(k, dim=-1).values if k < V else torch.sort(rows, dim=-1, descending=True).values
        p = torch.exp(top - lse[rest][:, None])
        mass = p.cumsum(-1)
        done = (mass[:, -1] >= top_p) | (k >= V)
        kept = ((mass - p)[done] < top_p).sum(-1).clamp_min(1)
        cut[rest[done]] = top[done].gather(-1, (kept - 1)[:, None]).squeeze(-1)
        need = k * top_p / mass[~done, -1].clamp_min(1e-300)
        rest, k = rest[~done], k * growth
        if rest.numel() and (k >= V or bool((need > V / growth).any())):
            k = V
    return flat.masked_fill(flat < cut[:, None], float("-inf")).reshape(shape)


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def section_nucleus(args, rows):
    g = torch.Generator().manual_seed(0)
    kinds = {"flat": torch.randn(args.rows, args.vocab, generator=g, dtype=torch.float64) * 0.45 / 0.2,
             "peaked": torch.randn(args.rows, args.vocab, generator=g, dtype=torch.float64) * 4.0}
    nucleus(kinds["flat"][:2], 0.9)  # the compiled loops' first call loads them (or compiles, once)
    for kind, lg in kinds.items():
        for top_p in (0.9, 0.95):
            t_sort, ref = best(lambda: nucleus_by_sort(lg, top_p), args.repeats)
            t_tiers, tiers = best(lambda: nucleus_tiers(lg, top_p), args.repeats)
            with compiled(False):
                t_eager, eager = best(lambda: nucleus(lg, top_p), args.repeats)
            t_new, new = best(lambda: nucleus(lg, top_p), args.repeats)
            same = all(torch.equal(torch.isinf(o), torch.isinf(ref)) for o in (new, eager, tiers))
            row = {"section": 1, "rows": f"{kind} {args.rows} x {args.vocab}", "top_p": top_p,
                   "kept_fraction": round(float(torch.isfinite(new).double().mean()), 4),
                   "sort_ms_per_row": round(t_sort / args.rows * 1e3, 3), "tiers_ms_per_row": round(t_tiers / args.rows * 1e3, 3),
                   "histogram_eager_ms_per_row": round(t_eager / args.rows * 1e3, 3),
                   "histogram_compiled_ms_per_row": round(t_new / args.rows * 1e3, 3), "vs_sort": round(t_sort / t_new, 1),
                   "vs_tiers": round(t_tiers / t_new, 1), "vs_eager": round(t_eager / t_new, 1), "same_kept_sets": same}
            rows.append(row)
            print(row, flush=True)


@torch.no_grad()
def section_dream(args, rows):
    V, B, L = args.vocab, 4, 256
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=V, hidden_size=512, num_layers=3, num_heads=8, max_position_embeddings=L,
                         mask_token_id=V - 1)
    model = TextDiffModel(cfg).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.rand(B, L, generator=g) < 0.5, V - 1, torch.randint(0, V - 1, (B, L), generator=g))
    fwd, out = best(lambda: model(x), args.repeats)
    logits = out.logits
    proc = textdiff.build_process("masked", vocab_size=V, mask_id=V - 1)
    t = torch.full((B,), 0.5, dtype=torch.float64)
    s = t - 1.0 / 256
    variants = {"fused, compiled cut (today)": (True, None, True), "fused, eager passes (096d860)": (True, None, False),
                "filter then score, today's nucleus": (False, None, True),
                "filter then score, 8cb9326's nucleus": (False, nucleus_tiers, False)}
    results = {}
    for name, (fused, old_nucleus, jit) in variants.items():
        smp = textdiff.build_sampler(DREAM, proc)
        smp.fused_filter = fused
        saved = sampler_base.nucleus
        if old_nucleus is not None:
            sampler_base.nucleus = lambda lg, top_p, inplace=False: old_nucleus(lg, top_p)
        try:
            step = lambda: smp.step(logits, t, s, x, [torch.Generator().manual_seed(b) for b in range(B)])  # noqa: E731
            with compiled(jit):
                took, res = best(step, args.repeats if old_nucleus is None else 1)
        finally:
            sampler_base.nucleus = saved
        results[name] = (took, res.x_s)
    ref = results["fused, compiled cut (today)"][1]
    for name, (took, x_s) in results.items():
        row = {"section": 2, "variant": name, "forward_s": round(fwd, 3), "step_s": round(took, 4),
               "frac_of_forward": round(took / fwd, 3), "same_tokens_as_fused": bool(torch.equal(x_s, ref))}
        rows.append(row)
        print(row, flush=True)
    return model, x


def cut_every_row(rows, x, nucleus_knobs, moves, may_draw, bufs):
    """096d860's UDLM top-p read: the nucleus of every row, exactly (no bounds)."""
    f = uniform_rows.filtered_weights(rows, *nucleus_knobs, bufs)
    return f.w.gather(-1, x[:, None])[:, 0] / f.total, lambda i, u: uniform_rows.inverse_cdf(f.w[i], u)


@torch.no_grad()
def section_uniform(args, rows, model, x):
    """UDLM ancestral with top-p 0.9 across the run (t from 0.99 to 0.01, s = t − 1/256): the rows that
    need the cut are those in doubt or drawing from p̃0, so the cost follows the moves."""
    V, B = args.vocab, x.shape[0]
    proc = textdiff.build_process("uniform", vocab_size=V)
    smp = textdiff.build_sampler({"name": "ancestral", "top_p": 0.9}, proc)
    smp.set_timesteps(256)
    fwd, out = best(lambda: model(x), args.repeats)
    logits = out.logits
    g = torch.Generator().manual_seed(1)
    for tv in (0.99, 0.5, 0.1, 0.01):
        t = torch.full((B,), tv, dtype=torch.float64)
        s = t - 1.0 / 256
        # the tokens: each position holds its row's argmax with probability 1 − t (the model agrees late)
        xt = torch.where(torch.rand(x.shape, generator=g) < 1 - tv, logits.argmax(-1), torch.randint(0, V, x.shape, generator=g))
        seeds = lambda: [torch.Generator().manual_seed(b) for b in range(B)]  # noqa: E731
        times, outs = {}, {}
        for name, (fn, jit) in {"bounds, compiled cut (today)": (uniform_rows._nucleus_p0, True),
                                "cut every row, compiled": (cut_every_row, True),
                                "cut every row, eager (096d860)": (cut_every_row, False)}.items():
            saved = uniform_rows._nucleus_p0
            uniform_rows._nucleus_p0 = fn
            try:
                with compiled(jit):
                    times[name], res = best(lambda: smp.step(logits, t, s, xt, seeds()), args.repeats)
            finally:
                uniform_rows._nucleus_p0 = saved
            outs[name] = res.x_s
        ref = outs["bounds, compiled cut (today)"]
        moved = float((ref != xt).double().mean())
        for name, took in times.items():
            row = {"section": 3, "t": tv, "variant": name, "forward_s": round(fwd, 3), "step_s": round(took, 4),
                   "frac_of_forward": round(took / fwd, 3), "moved_fraction": round(moved, 4),
                   "same_tokens_as_today": bool(torch.equal(outs[name], ref))}
            rows.append(row)
            print(row, flush=True)


def markdown(rows, meta):
    out = ["# Nucleus filtering and Dream's filtered scoring (issue 16)", "", f"Command: `{meta['command']}`  ",
           f"Machine: {meta['machine']}, torch {meta['torch']}, 1 thread; total {meta['total_seconds']} s.", ""]
    titles = {1: "nucleus alone (float64 logits, V = 50,257)",
              2: "Dream's default step (random-init model, batch 4, L = 256, half [MASK])",
              3: "UDLM ancestral, top-p 0.9, across the run (same model, every position read)"}
    return "\n".join(out + report.sections(rows, titles))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="nucleus")
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    section_nucleus(args, rows)
    model, x = section_dream(args, rows)
    section_uniform(args, rows, model, x)
    meta = {"command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv), "machine": report.machine(),
            "torch": torch.__version__, "total_seconds": round(time.perf_counter() - started, 1)}
    report.save(args.name, rows, meta, markdown(rows, meta))

if __name__ == "__main__":
    main()
