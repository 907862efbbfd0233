"""Cost of the float64 ``exact`` eager attention at inference (issue 16): forward time of the same model
on the same inputs with the exact branch on (today) and off (float32 softmax and P V), as a ratio.

    OMP_NUM_THREADS=1 python benchmarks/attention_precision.py            # ~2-3 min on one core

Model: the one of ``benchmarks/sampling.py`` (random init, V = 50,257, hidden 512, 3 layers, 8 heads),
batch ``--batch`` (4), L in ``--lengths`` (256 1024). ``attention_s`` times the attention core alone
(scores, softmax, P V) on the same shapes, so the share of a forward it takes is visible, also for
the exact branch as it was before (float64 softmax and P V over the whole [B, H, L, T]). Exact and
float32 runs are interleaved, ``--repeats`` times, best of each (the machine may be shared).
Results: ``benchmarks/results/attention_precision.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import sampling_baseline as base  # noqa: E402

import textdiff.models.modeling_textdiff as modeling  # noqa: E402
from textdiff.models import TextDiffConfig, TextDiffModel  # noqa: E402

RESULTS = Path(__file__).parent / "results"


class float32_attention:
    """Patch in the float32 eager attention (softmax in float32, P V in float32) while active."""

    def __enter__(self):
        self.saved, modeling.eager_attention = modeling.eager_attention, base.eager_attention

    def __exit__(self, *exc):
        modeling.eager_attention = self.saved


def exact_before(q, k, v, mask, is_causal):
    """The exact branch as it was before (main 9fd8cd0): softmax and P V over [B, H, L, T] in float64."""
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    return (torch.softmax(scores.double(), dim=-1) @ v.double()).to(v.dtype)


def best(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


@torch.no_grad()
def measure(args):
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                         num_heads=args.heads, max_position_embeddings=max(args.lengths), mask_token_id=args.vocab - 1)
    model = TextDiffModel(cfg).eval()
    rows = []
    for L in args.lengths:
        x = torch.randint(0, args.vocab, (args.batch, L), generator=torch.Generator().manual_seed(L))
        H, Dh = args.heads, args.hidden // args.heads
        q, k, v = (torch.randn(args.batch, H, L, Dh) for _ in range(3))
        te, tf, ae, af, ab = [], [], [], [], []
        model(x)  # warm-up
        for _ in range(args.repeats):
            te.append(best(lambda: model(x), 1))
            with float32_attention():
                tf.append(best(lambda: model(x), 1))
            ae.append(best(lambda: modeling.eager_attention(q, k, v, None, False), 1))
            af.append(best(lambda: base.eager_attention(q, k, v, None, False), 1))
            ab.append(best(lambda: exact_before(q, k, v, None, False), 1))
        row = {"L": L, "batch": args.batch, "forward_exact_s": round(min(te), 3), "forward_float32_s": round(min(tf), 3),
               "ratio_exact_over_float32": round(min(te) / min(tf), 3),
               "attention_exact_s": round(min(ae), 4), "attention_float32_s": round(min(af), 4),
               "attention_exact_before_s": round(min(ab), 4),
               "attention_extra_share_of_forward": round(args.layers * (min(ae) - min(af)) / min(tf), 3),
               "before_extra_share_of_forward": round(args.layers * (min(ab) - min(af)) / min(tf), 3)}
        rows.append(row)
        print(row, flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = measure(args)
    command = "OMP_NUM_THREADS=1 python " + " ".join(sys.argv)
    keys = list(rows[0])
    text = ["# Cost of the float64 exact attention at inference (issue 16)", "", f"Command: `{command}`  ",
            f"torch {torch.__version__}, {torch.get_num_threads()} thread; model of benchmarks/sampling.py "
            f"(hidden {args.hidden}, {args.layers} layers, V = {args.vocab}); best of {args.repeats}, interleaved; "
            f"total {time.perf_counter() - started:.1f} s.", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    text += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attention_precision.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    (RESULTS / "attention_precision.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
