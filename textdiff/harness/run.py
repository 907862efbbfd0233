"""Run an evaluation suite: ``textdiff eval SUITE [key=value ...]`` (SUITE a YAML file or a shipped
suite's name, e.g. ``quickstart``); ``python -m textdiff.harness`` is the same.

Writes the suite's ``output_dir`` (default ``runs/eval/<name>`` under the working directory; an
existing one only with ``--overwrite``, and only a report folder textdiff wrote):

* ``report.json``: every figure and the full protocol (models and their process / sampler configs,
  steps, seeds, precision, datasets and layouts, reference model, textdiff version, git commit);
* ``report.md``: the same as tables;
* ``genppl_entropy_vs_steps.png`` and ``quality_vs_speed.png`` when the suite generates text.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..errors import ConfigError
from ..progress import Progress
from ..signatures import checked
from .corpora import lambada_pairs, load_corpus
from .suite import ConditionalTask, GenerationTask, LikelihoodTask, load_suite, output_dir, resolve

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # textdiff/ (a git checkout when installed editable)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TIMING_KEYS = ("seconds", "speed", "created_utc", "wall_seconds")  # numbers that vary run to run


def git_commit() -> dict:
    """The commit of the textdiff checkout in use and whether it has local changes (read-only git
    calls; None for an installed wheel, which is not a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PACKAGE_DIR,
                               capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _label(spec) -> str:
    if spec.label:
        return spec.label
    p = Path(spec.path)
    return p.parent.name if p.name in ("final",) else p.name


def load_model(spec, suite):
    from ..lm import DiffusionLM

    device = suite.device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = resolve(spec.path)
    dtype = DTYPES[suite.precision]
    tokenizer = str(resolve(spec.tokenizer)) if spec.tokenizer else None
    lm = DiffusionLM.from_pretrained(path, device=device, dtype=None if dtype == torch.float32 else dtype, tokenizer=tokenizer)
    info = {"label": _label(spec), "path": str(spec.path), "resolved_path": str(path), "tokenizer": spec.tokenizer,
            "process": to_dict(lm.process.config), "default_sampler": to_dict(lm.sampler_config),
            "seq_len": lm.seq_len, "vocab_size": len(lm.tokenizer), "precision": suite.precision, "device": device,
            "parameters": int(sum(p.numel() for p in lm.model.parameters()))}
    return lm, info


def run_likelihood(lm, task: LikelihoodTask, suite, docs, progress=None) -> dict:
    from ..eval.elbo import evaluate_likelihood, text_rows

    seq_len = task.seq_len or lm.seq_len
    cap = min(x for x in (task.max_rows, suite.max_rows, 10**12) if x is not None)
    rows = text_rows(docs, lm.tokenizer, seq_len, task.layout, max_rows=None if cap == 10**12 else cap)
    with Progress(len(rows), task.name, unit="row", enabled=progress) as bar:
        res = evaluate_likelihood(lm.model, lm.process, rows, batch_size=task.batch_size, t_samples=task.t_samples,
                                  t_sampling=task.t_sampling, seed=suite.seed, ci_level=task.ci_level,
                                  bootstrap=task.bootstrap, layout=task.layout, tokenizer=lm.tokenizer, progress=bar)
    return {**res.to_dict(), "max_rows": None if cap == 10**12 else cap}


def run_conditional(lm, task: ConditionalTask, suite, docs, progress=None) -> dict:
    from ..eval.common import mean_interval, safe_exp
    from ..eval.conditional import conditional_nll, greedy_match

    cap = min(x for x in (task.max_examples, suite.max_examples, 10**12) if x is not None)
    pairs = lambada_pairs(docs, None if cap == 10**12 else cap)
    nlls, tokens, hits, started = [], [], [], time.perf_counter()
    bar = Progress(len(pairs), task.name, unit="example", enabled=progress)
    for i, (context, answer) in enumerate(pairs):
        p = lm.tokenizer(context, add_special_tokens=False)["input_ids"]
        a = lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
        score = conditional_nll(lm.model, lm.process, p, a, mc_samples=task.mc_samples, seed=suite.seed, index=i,
                                seq_len=lm.seq_len)
        nlls.append(score.nll)
        tokens.append(score.answer_tokens)
        if task.greedy:
            room = (lm.seq_len or 10**9) - (0 if lm.process.is_diffusion else 1)  # AR: the start token takes a position
            keep = p[max(0, len(p) + len(a) - room):]
            hits.append(greedy_match(lm.model, lm.process, keep, a, pad_token_id=lm.tokenizer.pad_token_id or 0))
        bar.update(1, tokens=(len(p) + len(a)) * (task.mc_samples if lm.process.is_diffusion else 1))
    bar.close()
    mean, se, ci = mean_interval(nlls, task.ci_level)
    per_token = float(np.sum(nlls) / np.sum(tokens))
    return {"examples": len(pairs), "mc_samples": task.mc_samples if lm.process.is_diffusion else 1,
            "estimator": "nelbo" if lm.process.is_diffusion else "exact", "nll_per_example": mean,
            "nll_per_example_ci": ci, "ci_level": task.ci_level, "nll_per_answer_token": per_token,
            "answer_ppl_bound": safe_exp(per_token), "answer_tokens": int(np.sum(tokens)),
            "greedy_accuracy": float(np.mean(hits)) if hits else None, "seconds": time.perf_counter() - started}


def run_generation(lm, info, spec, task: GenerationTask, suite, refs: dict, human: dict, progress=None) -> list[dict]:
    from ..eval.diversity import diversity
    from ..eval.gen_ppl import generative_perplexity, load_reference
    from ..eval.mauve import mauve_score
    from ..eval.speed import sample_texts

    sampler_spec = task.sampler or spec.sampler
    sampler = lm.make_sampler(sampler_spec)
    n = min(x for x in (task.num_samples, suite.max_samples) if x is not None)
    length = task.max_new_tokens or lm.seq_len
    ref = None
    metrics = list(task.metrics)
    if "mauve" in metrics:
        from ..extras import installed, skip_note

        if not installed("mauve"):  # known before sampling: the other metrics still run
            print(skip_note(f"task {task.name!r}: MAUVE", "mauve", "mauve"), file=sys.stderr)
            metrics.remove("mauve")
    if task.reference is not None and "gen_ppl" in metrics and task.reference.optional and not resolve(task.reference.path).exists():
        print(f"note: task {task.name!r}: reference model {task.reference.path!r} is absent, gen_ppl skipped "
              "(train it or set tasks.N.reference.path=...; see the suite's header)", file=sys.stderr)
        metrics.remove("gen_ppl")
    if task.reference is not None and "gen_ppl" in metrics:
        local = resolve(task.reference.path)
        key = str(local) if local.exists() else task.reference.path  # else a hub name (online)
        if key not in refs:
            refs[key] = load_reference(key, device=lm.device)
        ref = refs[key]
    out = []
    ar = not lm.process.is_diffusion
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    if ar and limit is not None and length + 1 > limit:
        length = limit - 1  # the AR start token takes one position: at most context − 1 new tokens
    for steps in ([length] if ar else task.steps):  # an AR model decodes one token per step: one run
        with Progress(n, f"{task.name} ({steps} steps)", unit="sample", enabled=progress) as bar:
            ids, texts, speed = sample_texts(lm.model, lm.process, lm.tokenizer, num_samples=n, max_new_tokens=length,
                                             steps=steps, sampler=sampler, batch_size=task.batch_size, seed=suite.seed,
                                             block_size=task.block_size, progress=bar)
        entry = {"steps": steps, "num_samples": n, "max_new_tokens": length, "sampler": to_dict(sampler.config),
                 "block_size": 1 if ar else task.block_size, "seed": suite.seed, "speed": speed}
        if "gen_ppl" in metrics:
            entry["gen_ppl"] = generative_perplexity(ref, token_ids=ids, source_tokenizer=lm.tokenizer,
                                                     retokenize_mode=task.retokenize, eos=task.eos,
                                                     ci_level=task.ci_level, seed=suite.seed)
            entry["gen_ppl"]["protocol"]["note"] = task.reference.note
        if "diversity" in metrics:
            entry["diversity"] = {**diversity(ids), "tokenizer": "the evaluated model's"}
        if "mauve" in metrics:
            m = task.mauve
            if id(m) not in human:
                human[id(m)] = load_corpus(m.dataset, Path.cwd())
            mref = ref if ref is not None else None
            if mref is None:
                raise ConfigError(f"task {task.name!r}: mauve features come from the reference LM; give reference:")
            entry["mauve"] = mauve_score(p_texts=texts, q_texts=human[id(m)][: len(texts)], reference=mref,
                                         seeds=m.seeds, num_buckets=m.num_buckets)
        entry["samples"] = texts[: task.keep_samples]
        out.append(entry)
    return out


def run_suite(suite, raw: dict, argv: list[str], progress=None) -> dict:
    """Every (model, task) of the suite; ``progress=False`` hides the bars (shown on a terminal only)."""
    import textdiff

    import datasets

    datasets.disable_progress_bars()
    started = time.perf_counter()
    if suite.threads:
        torch.set_num_threads(suite.threads)
    torch.manual_seed(suite.seed)
    corpora, refs, human, models, results = {}, {}, {}, [], []
    for spec in suite.models:
        lm, info = load_model(spec, suite)
        models.append(info)
        for task in suite.tasks:
            base = {"model": info["label"], "task": task.name, "metric": task.metric}
            if isinstance(task, (LikelihoodTask, ConditionalTask)):
                key = json.dumps(to_dict(task.dataset), sort_keys=True)
                if key not in corpora:
                    corpora[key] = load_corpus(task.dataset, Path.cwd())
                dataset = {**to_dict(task.dataset), "documents": len(corpora[key])}
                if isinstance(task, LikelihoodTask):
                    results.append({**base, "dataset": dataset, **run_likelihood(lm, task, suite, corpora[key], progress)})
                else:
                    results.append({**base, "dataset": dataset, **run_conditional(lm, task, suite, corpora[key], progress)})
            else:
                for entry in run_generation(lm, info, spec, task, suite, refs, human, progress):
                    results.append({**base, **entry})
            print(f"[{info['label']}] {task.name}: done", file=sys.stderr)
    return {
        "suite": suite.name,
        "notes": suite.notes,
        "command": "textdiff eval " + " ".join(argv),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "textdiff_version": textdiff.__version__,
        "git": git_commit(),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": _version("transformers"), "threads": torch.get_num_threads(),
                        "platform": platform.platform()},
        "protocol": {"seed": suite.seed, "precision": suite.precision, "device": suite.device or "auto",
                     "caps": {"max_rows": suite.max_rows, "max_examples": suite.max_examples, "max_samples": suite.max_samples},
                     "sampling": "float64 Gumbel-max categorical draws (textdiff.categorical), one generator per sample",
                     "suite": raw},
        "models": models,
        "results": results,
        "wall_seconds": time.perf_counter() - started,
    }


def _version(name: str):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


@checked
def main(argv=None, progress=None, overwrite: bool = False) -> Path:
    """Run the suite named by argv[0] with key=value overrides argv[1:]; returns the report.json path.
    The report folder is written as every textdiff folder is (:mod:`textdiff.models.format.writer`):
    staged beside ``output_dir`` and renamed into place; an existing one is replaced only with
    ``overwrite`` and only when textdiff wrote it."""
    from ..models.format import check_target, staged_folder
    from .report import write_markdown, write_plots

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise ConfigError("usage: textdiff eval SUITE [key=value ...] (SUITE: a YAML file or quickstart, zero_shot, process_comparison)")
    suite, raw = load_suite(argv[0], argv[1:])
    out = output_dir(suite)
    check_target(out, "eval", overwrite, what="output_dir")  # before the (long) run
    report = run_suite(suite, raw, argv, progress)
    with staged_folder(out, "eval", overwrite=overwrite, what="output_dir") as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=_jsonable, ensure_ascii=False), encoding="utf-8")
        write_markdown(report, tmp / "report.md")
        plots = [out / p.name for p in write_plots(report, tmp)]
    path = out / "report.json"
    print(f"wrote {path}, {out / 'report.md'}" + "".join(f", {p}" for p in plots))
    return path


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")
