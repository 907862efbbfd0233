"""The model card (``README.md``) of a saved folder: what the model is, its recipe and data, its last
training / validation metrics, and how to use it with and without textdiff."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .layout import RECIPE_FILE


def _metrics_summary(metrics_file: Path) -> dict:
    """The last training line and the last validation line of a run's metrics.jsonl."""
    last_train, last_val = None, None
    for line in metrics_file.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "train_loss" in row:
            last_train = row
        if any(k.startswith("val_") for k in row):
            last_val = row
    return {"train": last_train, "val": last_val}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("textdiff")
    except PackageNotFoundError:  # a source checkout that is not installed
        return "(source checkout)"


def _fmt(x) -> str:
    return f"{x:,.4g}" if isinstance(x, float) else str(x)


def model_card(folder: Path, name: str, model, tokenizer, meta: dict, repo_id: Optional[str] = None,
               metrics_file: Optional[Path] = None) -> str:
    """README.md text for the model folder ``name`` being written in ``folder``: what the model is
    (``meta``: its textdiff.json), its recipe and data (``config.yaml`` in the folder, when the model
    came from a run), its last training / validation metrics (``metrics_file``: the run's
    metrics.jsonl), and usage."""
    import yaml

    name = repo_id or name
    proc, sampler = meta["process"], meta["sampler"]
    params = sum(p.numel() for p in model.parameters())
    recipe = yaml.safe_load((folder / RECIPE_FILE).read_text()) if (folder / RECIPE_FILE).is_file() else None
    metrics = _metrics_summary(metrics_file) if metrics_file is not None and Path(metrics_file).is_file() else None
    remote = "auto_map" in json.loads((folder / "config.json").read_text())
    tags = ["textdiff", "text-diffusion", f"{proc.get('name', 'diffusion')}-process"]
    lines = ["---", "library_name: textdiff", "tags:"] + [f"- {t}" for t in tags] + ["---", "", f"# {name}", "",
             f"A discrete text diffusion language model trained with [textdiff](https://pypi.org/project/textdiff/) "
             f"{_version()}.", "",
             "| | |", "|---|---|",
             f"| forward process | `{proc.get('name')}` (schedule `{(proc.get('schedule') or {}).get('name', '-')}`) |",
             f"| default sampler | `{sampler.get('name')}` |",
             f"| network | `{model.config.model_type}`, {params:,} parameters |",
             f"| context | {meta.get('seq_len')} tokens |",
             f"| vocabulary | {len(tokenizer):,} tokens (mask id {tokenizer.mask_token_id}, EOS id {tokenizer.eos_token_id}) |"]
    if recipe is not None:
        data = recipe.get("data") or {}
        train = recipe.get("train") or {}
        lines += ["", "## Training recipe", "",
                  f"Data: source `{data.get('source')}`" + (f" ({data.get('path')})" if data.get("path") else "")
                  + f", rows of {data.get('seq_len')} tokens, layout `{data.get('layout')}`, held-out fraction "
                  f"{data.get('val_fraction')}.",
                  f"Training: {train.get('max_steps')} steps, batch {train.get('batch_size')}, lr {train.get('lr')}, "
                  f"seed {train.get('seed')}. The full recipe (`config.yaml`):", "",
                  "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```"]
    if metrics is not None and (metrics["train"] or metrics["val"]):
        lines += ["", "## Metrics (last lines of the run's metrics.jsonl)", "", "| metric | value | step |", "|---|---|---|"]
        for row in (metrics["train"], metrics["val"]):
            if row:
                lines += [f"| {k} | {_fmt(v)} | {row.get('step')} |" for k, v in row.items()
                          if k != "step" and isinstance(v, (int, float))]
        lines += ["", "`val_nelbo` is the NELBO in nats per token (an upper bound on the NLL; exact for AR models), "
                  "`val_ppl_bound` its exponential."]
    ref = repo_id or "path/to/this/folder"
    lines += ["", "## Usage", "", "With textdiff (`pip install textdiff`):", "", "```python",
              "from textdiff import DiffusionLM", "",
              f'lm = DiffusionLM.from_pretrained("{ref}")',
              'print(lm.generate(["The"], max_new_tokens=32, seed=0)[0])',
              'print(lm.score(["Some text."]))   # NELBO in nats', "```"]
    if remote:
        lines += ["", "Without textdiff, the denoiser alone in plain `transformers` (its modeling code ships in this "
                  "repository, hence `trust_remote_code=True`; sampling loops are textdiff's):", "", "```python",
                  "import torch",
                  "from transformers import AutoModel, AutoTokenizer", "",
                  f'tok = AutoTokenizer.from_pretrained("{ref}")',
                  f'model = AutoModel.from_pretrained("{ref}", trust_remote_code=True).eval()',
                  'ids = tok("The cat", return_tensors="pt", add_special_tokens=False).input_ids',
                  "ids = torch.cat([ids, torch.full((1, 4), tok.mask_token_id)], dim=1)  # 4 masked positions",
                  ("logits = model(ids, t=torch.tensor([0.5])).logits   # [1, L, V] at time t (time-conditioned)"
                   if getattr(model.config, "time_conditioning", False) else
                   "logits = model(ids).logits   # [1, L, V]: the denoiser's prediction at every position"), "```"]
    return "\n".join(lines) + "\n"
