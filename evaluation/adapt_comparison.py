"""AR -> diffusion adaptation against training from scratch, on the CPU (issue 26's target).

    python -m evaluation.adapt_comparison                      # the short version: ~2.5 min of CPU (1 thread)
    python -m evaluation.adapt_comparison --ar-steps 1200 --steps 600 --seq-len 128   # longer

1. an AR model of the quickstart architecture (recipes/ar-quickstart.yaml's process, the quickstart's
   network and tokenizer, shrunk by the options) trains ``--ar-steps`` steps;
2. for each target (masked = MDLM, block = BD3-LM with L' = 4), the SAME architecture trains
   ``--steps`` steps twice on the same corpus, rows and batch (so the same tokens): adapted from the AR
   model (recipes/adapt-quickstart*.yaml's adapt section) and from a random initialisation (the
   quickstart / bd3lm-quickstart recipes);
3. before adapting, the next-token NLL of the AR model and of the adapted model at step 0 (causal
   mask, shift) on validation rows (``step0_next_token``);
4. the validation NELBO (fixed validation noise, the trainer's own evaluation) of both is recorded at
   every evaluation; the target is adapted PPL bound <= 0.8 x scratch PPL bound after the same steps.

Writes ``evaluation/results/adapt_comparison.json`` (curves, settings, ratios, times). The AR model's
own steps are reported separately: the adapted model has seen ``ar_steps + steps`` steps of data in all.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "evaluation" / "results" / "adapt_comparison.json"


def recipe(name: str) -> dict:
    return yaml.safe_load((ROOT / "recipes" / name).read_text())


def common(raw: dict, out: Path, args, steps: int, tokenizer=None) -> dict:
    """The shared, shrunk setting: data, network size, batch, evaluation; fp32, no compile."""
    raw = {k: v for k, v in raw.items() if k not in ("name",)}
    raw["output_dir"] = str(out)
    raw["data"] = {"source": "embedded", "layout": "wrap", "seq_len": args.seq_len, "val_fraction": 0.05}
    if tokenizer is not None:
        raw["tokenizer"] = {"path": str(tokenizer)}
    else:
        raw["tokenizer"] = {"train": "bpe", "vocab_size": args.vocab}
    if "model" in raw:
        raw["model"] = {**raw["model"], "hidden_size": args.hidden, "num_layers": args.layers, "num_heads": args.heads}
    train = {k: v for k, v in raw["train"].items() if k != "max_minutes"}
    raw["train"] = {**train, "max_steps": steps, "batch_size": args.batch, "compile": False, "mixed_precision": "no",
                    "num_threads": args.threads, "warmup_steps": min(train.get("warmup_steps", 50), steps // 10),
                    "eval_every": args.eval_every, "eval_batches": args.eval_batches, "eval_t_samples": 2,
                    "save_every": steps, "log_every": 25, "trackers": [], "seed": 0}
    return raw


def run(raw: dict) -> tuple[Path, list[dict], float]:
    from textdiff.config import load_recipe
    from textdiff.training.loop import train

    start = time.perf_counter()
    final = train(load_recipe(raw=raw))
    seconds = time.perf_counter() - start
    lines = [json.loads(ln) for ln in (Path(raw["output_dir"]) / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    curve = [{"step": ln["step"], "val_nelbo": ln["val_nelbo"], "val_ppl_bound": math.exp(ln["val_nelbo"])}
             for ln in lines if "val_nelbo" in ln]
    return final, curve, seconds


def step0_next_token_nll(adapted_raw: dict, rows: int = 64) -> dict:
    """Next-token NLL (nats/token, tokens 1..L-1 of validation rows) of the AR model and of its
    adapted wrapper at step 0 (causal mask, shift): equal for a transformers model; for a textdiff AR
    model the adapted rows lack the start token the AR model was trained with, so they differ a little."""
    import torch

    from textdiff.config import load_recipe
    from textdiff.training.setup import prepare_run

    raw = {**adapted_raw, "output_dir": adapted_raw["output_dir"] + "-step0",
           "adapt": {**adapted_raw["adapt"], "anneal_steps": max(1, adapted_raw["adapt"].get("anneal_steps", 1))}}
    Path(raw["output_dir"]).mkdir(parents=True, exist_ok=True)
    run = prepare_run(load_recipe(raw=raw), is_main=False)
    x0 = torch.as_tensor(run.val_rows[:rows]["input_ids"])  # [n, L]
    model = run.model.eval()
    with torch.no_grad():
        lg = model(x0).logits.double()  # row i predicts token i (the shift)
        lg[..., run.process.mask_id] = float("-inf")
        adapted = -torch.log_softmax(lg, -1)[:, 1:].gather(-1, x0[:, 1:, None]).mean()
        start = torch.full_like(x0[:, :1], run.process.mask_id)  # the AR process's start token
        ar = -torch.log_softmax(model.hf(torch.cat([start, x0[:, :-1]], 1)).logits.double(), -1)[:, 1:].gather(
            -1, x0[:, 1:, None]).mean()
    return {"ar_nll": round(float(ar), 4), "adapted_step0_nll": round(float(adapted), 4)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ar-steps", type=int, default=400)
    p.add_argument("--steps", type=int, default=200, help="adapted and scratch steps (each)")
    p.add_argument("--anneal-steps", type=int, default=40)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=40)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--targets", default="masked,block")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="adapt_comparison_"))
    result = {"command": "python -m evaluation.adapt_comparison " + " ".join(argv or []), "settings": vars(args),
              "targets": {}}

    ar_raw = common(recipe("ar-quickstart.yaml"), work / "ar", args, args.ar_steps)
    ar_raw["train"]["lr"] = recipe("quickstart.yaml")["train"]["lr"]  # the shrunk network likes the quickstart's lr
    ar_final, ar_curve, ar_s = run(ar_raw)
    result["ar"] = {"steps": args.ar_steps, "seconds": round(ar_s, 1), "curve": ar_curve,
                    "note": "next-token NLL (exact), not comparable to the diffusion bounds"}
    sources = {"masked": ("quickstart.yaml", "adapt-quickstart.yaml"),
               "block": ("bd3lm-quickstart.yaml", "adapt-quickstart-bd3lm.yaml")}
    for target in args.targets.split(","):
        scratch_name, adapt_name = sources[target]
        scratch = common(recipe(scratch_name), work / f"scratch-{target}", args, args.steps, tokenizer=ar_final)
        scratch["process"]["time_conditioning"] = False  # the adapted network has no time input either
        adapted = common(recipe(adapt_name), work / f"adapt-{target}", args, args.steps, tokenizer=ar_final)
        adapted["train"]["init_from"] = str(ar_final)
        adapted["adapt"] = {**adapted["adapt"], "anneal_steps": args.anneal_steps}
        adapted["adapt"].pop("block_schedule", None)  # the same block size for every step, as the scratch run
        step0 = step0_next_token_nll(adapted)
        _, s_curve, s_s = run(scratch)
        _, a_curve, a_s = run(adapted)
        ratio = a_curve[-1]["val_ppl_bound"] / s_curve[-1]["val_ppl_bound"]
        result["targets"][target] = {
            "scratch": {"recipe": scratch_name, "lr": scratch["train"]["lr"], "seconds": round(s_s, 1), "curve": s_curve},
            "adapted": {"recipe": adapt_name, "lr": adapted["train"]["lr"], "seconds": round(a_s, 1), "curve": a_curve},
            "ppl_bound_ratio": round(ratio, 4), "target_met": ratio <= 0.8, "step0_next_token": step0}
        print(f"{target}: adapted PPL bound {a_curve[-1]['val_ppl_bound']:.1f} vs scratch "
              f"{s_curve[-1]['val_ppl_bound']:.1f} after {args.steps} steps: ratio {ratio:.3f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
