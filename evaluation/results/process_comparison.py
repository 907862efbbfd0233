"""Collect the process comparison (runs made by process_comparison.sh) into process_comparison.json.

    OMP_NUM_THREADS=1 taskset -c 1 python evaluation/results/process_comparison.py /tmp/process_comparison --bench --per-t

For every run: the final validation NELBO over the whole PTB valid split (nats/token, prior term
included; exact NLL for AR), its PPL bound, the logged train tokens/s, the parameter count; for the
absorbing families also the ε term the log-linear schedule (eps = 1e-3) leaves out (see
``textdiff/processes/masked.py``), measured with the trained model, and the corrected bound.

Because the CPU core is shared, logged tokens/s are noisy; ``--bench`` also times one training step
of every family round-robin in one process (same network, same batch), so the ratios share conditions.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

FAMILIES = ["ar", "masked", "sedd_absorb", "udlm", "sedd_uniform", "udlm_t", "masked_t", "sedd_uniform_t"]


def read_run(folder: Path) -> dict:
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [x for x in lines if "train_loss" in x]
    val = [x for x in lines if "val_nelbo" in x]
    recipe = yaml.safe_load((folder / "config.yaml").read_text())
    return {
        "process": recipe["process"]["name"], "time_conditioning": recipe["process"]["time_conditioning"],
        "steps": train[-1]["step"], "final_train_loss": train[-1]["train_loss"],
        "val_nelbo": val[-1]["val_nelbo"], "val_ppl_bound": val[-1]["val_ppl_bound"], "val_tokens": val[-1]["val_tokens"],
        "val_unigram_ppl": next((x["val_unigram_ppl"] for x in val if "val_unigram_ppl" in x), None),
        "train_tokens_per_s_logged": statistics.mean(x["tokens_per_s"] for x in train[1:]) if len(train) > 1 else None,
        "train_elapsed_s": train[-1]["elapsed_s"],
    }


def load(folder: Path):
    from textdiff.data import load_documents, tokenize_rows
    from textdiff.config import load_recipe
    from textdiff.models import TextDiffModel
    from textdiff import build_process
    from textdiff.tokenization import load_tokenizer

    recipe = load_recipe(folder / "config.yaml")
    tok = load_tokenizer(str(folder / "final"))
    model = TextDiffModel.from_pretrained(str(folder / "final")).eval()
    process = build_process(recipe.process, vocab_size=len(tok), mask_id=tok.mask_token_id)
    rows = tokenize_rows(load_documents(recipe.data.val_source, recipe.data, split="validation"), tok, recipe.data)
    return recipe, model, process, rows


@torch.no_grad()
def eps_term(folder: Path) -> float:
    """ε · E[loss at t = 1 on all-[MASK] rows] per token: the mask rates in (1 − ε, 1] the NELBO skips."""
    recipe, model, process, rows = load(folder)
    eps = 1.0 - float(process.schedule.mask_rate(torch.ones((), dtype=torch.float64)))
    w1 = float(-process.schedule.dalpha(torch.ones((), dtype=torch.float64)) / process.schedule.mask_rate(torch.ones((), dtype=torch.float64)))
    total, count = 0.0, 0
    for start in range(0, len(rows), 64):
        x0 = rows[start:start + 64]["input_ids"]
        xt = torch.full_like(x0, process.mask_id)
        kw = {"t": torch.ones(x0.shape[0])} if process.time_conditioning else {}
        logits = model(xt, **kw).logits
        total += float(process.loss(logits, xt, x0, torch.ones(x0.shape[0])).sum()) / w1
        count += x0.numel()
    return eps * total / count


def bench(root: Path, families, rounds: int = 12) -> dict:
    """Median tokens/s of one optimizer step per family, timed round-robin in this process."""
    torch.set_num_threads(1)
    setups = {}
    for fam in families:
        recipe, model, process, rows = load(root / fam)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x0 = rows[0:recipe.train.batch_size]["input_ids"]
        setups[fam] = (model, process, opt, x0)
    from textdiff.objective import nelbo_terms

    times = {f: [] for f in families}
    for r in range(rounds + 2):
        for fam in families:
            model, process, opt, x0 = setups[fam]
            start = time.perf_counter()
            terms = nelbo_terms(model, process, x0, generator=torch.Generator().manual_seed(r))
            terms.mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if r >= 2:  # warm-up rounds excluded
                times[fam].append(time.perf_counter() - start)
    return {fam: x0.numel() / statistics.median(ts) for fam, ts in times.items() for x0 in [setups[fam][3]]}


@torch.no_grad()
def per_t(folder: Path, ts=(0.05, 0.2, 0.4, 0.6, 0.8, 0.95), rows: int = 64, draws: int = 2) -> dict:
    """The NELBO integrand (nats per token) at fixed t on the first ``rows`` validation rows, averaged
    over ``draws`` noise draws: the NELBO is its integral over t in [0, 1]."""
    from textdiff.objective import nelbo_terms

    recipe, model, process, data = load(folder)
    x0 = data[0:rows]["input_ids"]  # [rows, L]
    out = {}
    for t0 in ts:
        t = torch.full((x0.shape[0],), t0)
        vals = [float(nelbo_terms(model, process, x0, t=t, generator=torch.Generator().manual_seed(d)).loss.sum()) / x0.numel()
                for d in range(draws)]
        out[str(t0)] = statistics.mean(vals)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--per-t", action="store_true", help="the NELBO integrand at fixed t per diffusion family")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = ap.parse_args()
    found = [f for f in FAMILIES if (args.root / f / "final").is_dir()]
    runs = {}
    for fam in found:
        runs[fam] = read_run(args.root / fam)
        runs[fam]["parameters"] = sum(p.numel() for p in load(args.root / fam)[1].parameters())
        cmd = args.root.parent / f"{args.root.name}.{fam}.cmd"
        runs[fam]["command"] = cmd.read_text().strip() if cmd.is_file() else None
        if runs[fam]["process"] in ("masked", "sedd_absorb"):
            term = eps_term(args.root / fam)
            runs[fam]["eps_term"] = term
            runs[fam]["val_nelbo_with_eps_term"] = runs[fam]["val_nelbo"] + term
            runs[fam]["val_ppl_bound_with_eps_term"] = float(torch.tensor(runs[fam]["val_nelbo"] + term).exp())
    if found:  # tokens per PTB word (line ends counted as words), for a per-word PPL column
        from textdiff.tokenization import load_tokenizer

        tok = load_tokenizer(str(args.root / found[0] / "final"))
        recipe = yaml.safe_load((args.root / found[0] / "config.yaml").read_text())
        text = Path(recipe["data"]["val_source"]).read_text().splitlines()
        lines = [x for x in text if x.strip()]
        n_tokens = sum(len(ids) + 1 for ids in tok(lines, add_special_tokens=False)["input_ids"])
        n_words = sum(len(x.split()) + 1 for x in lines)
        for r in runs.values():
            nll = r.get("val_nelbo_with_eps_term", r["val_nelbo"])
            r["val_ppl_bound_per_word"] = float(torch.tensor(nll * n_tokens / n_words).exp())
    result = {"runs": runs, "threads": 1, "cpu": "taskset -c 1 (one shared core)", "torch": torch.__version__}
    if found:
        result["valid_tokens_per_word"] = n_tokens / n_words
    if args.bench:
        result["bench_tokens_per_s"] = bench(args.root, found)
    if args.per_t:
        result["per_t_nelbo_integrand"] = {fam: per_t(args.root / fam) for fam in found if runs[fam]["process"] != "ar"}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
