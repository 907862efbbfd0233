"""What a saved folder carries for people without textdiff: modeling code behind ``auto_map``, and a
model card (``README.md``).

Remote code. :func:`add_remote_code` copies the package's own network files, unchanged, into the
folder (``configuration_textdiff.py``, ``modeling_textdiff.py`` and the two modules it imports
relatively, ``cache.py`` and ``masks.py``: none imports textdiff, so they are the same code the
package runs) and adds ``auto_map`` to ``config.json``, so that, without textdiff installed::

    from transformers import AutoModel
    model = AutoModel.from_pretrained("owner/name", trust_remote_code=True)   # the denoiser, [B, L, V] logits

textdiff itself never runs those files: :meth:`textdiff.lm.DiffusionLM.from_pretrained` builds the
network from the installed package's classes (registered with the Auto classes, which transformers
prefers to a folder's ``auto_map`` when ``trust_remote_code`` is not set), and nothing in a folder
can switch ``trust_remote_code`` on: only the caller can. Plain ``AutoModel.from_pretrained(folder)``
*without* ``trust_remote_code`` works only after ``import textdiff`` (transformers has no hook
through which an installed package registers a ``model_type`` by itself).

LLaDA and Dream converted to ``textdiff_llama`` / ``textdiff_qwen2`` folders get the same:
``modeling_bidirectional.py`` (transformers' Llama / Qwen2 decoders run bidirectionally, Dream's
logits shift) with the files it imports relatively (``cache.py``, and ``modeling_textdiff.py`` for
the output class, with its own two imports), again the package's own files unchanged, importing
only torch and transformers; ``auto_map`` names the config and model classes in that file.

A Hugging Face network trained as a denoiser (:mod:`textdiff.models.external`) loads with its own
transformers class already and gets none.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

MODELS_DIR = Path(__file__).resolve().parent / "models"
REMOTE_CODE_FILES = ("configuration_textdiff.py", "modeling_textdiff.py", "cache.py", "masks.py")
AUTO_MAP = {
    "AutoConfig": "configuration_textdiff.TextDiffConfig",
    "AutoModel": "modeling_textdiff.TextDiffModel",
    "AutoModelForMaskedLM": "modeling_textdiff.TextDiffModel",
}


#: the HF-module denoisers: model_type -> (module file, config class, model class). LLaDA / Dream live in
#: models/modeling_bidirectional.py; LLaDA-MoE / LLaDA 2.0 in models/modeling_moe.py, which imports it.
BIDIRECTIONAL_CLASSES = {"textdiff_llama": ("modeling_bidirectional", "DiffusionLlamaConfig", "DiffusionLlamaModel"),
                         "textdiff_qwen2": ("modeling_bidirectional", "DiffusionQwen2Config", "DiffusionQwen2Model"),
                         "textdiff_qwen3_moe": ("modeling_moe", "DiffusionQwen3MoeConfig", "DiffusionQwen3MoeModel"),
                         "textdiff_glm4_moe": ("modeling_moe", "DiffusionGlm4MoeConfig", "DiffusionGlm4MoeModel")}
BIDIRECTIONAL_FILES = ("modeling_bidirectional.py", *REMOTE_CODE_FILES)


def remote_code_for(model_type) -> Optional[tuple[tuple[str, ...], dict]]:
    """(source files, auto_map) of a model_type that ships its modeling code, else None."""
    if model_type == "textdiff":
        return REMOTE_CODE_FILES, dict(AUTO_MAP)
    if model_type in BIDIRECTIONAL_CLASSES:
        module, config_class, model_class = BIDIRECTIONAL_CLASSES[model_type]
        files = BIDIRECTIONAL_FILES if module == "modeling_bidirectional" else (f"{module}.py", *BIDIRECTIONAL_FILES)
        model = f"{module}.{model_class}"
        return files, {"AutoConfig": f"{module}.{config_class}", "AutoModel": model, "AutoModelForMaskedLM": model}
    return None


def add_remote_code(folder) -> list[str]:
    """Copy the network's source files into ``folder`` and add ``auto_map`` to its config.json;
    returns the files written. A folder of another model_type (an external network) is left alone."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    code = remote_code_for(cfg.get("model_type"))
    if code is None:
        return []
    files, auto_map = code
    for name in files:
        (folder / name).write_text((MODELS_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    cfg["auto_map"] = auto_map
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return list(files)


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


def _fmt(x) -> str:
    return f"{x:,.4g}" if isinstance(x, float) else str(x)


def model_card(lm, folder: Path, repo_id: Optional[str] = None, source: Optional[Path] = None) -> str:
    """README.md text: what the model is, its recipe and data (``config.yaml`` of the run), its last
    training / validation metrics (``metrics.jsonl`` beside the run's final/), and usage."""
    import textdiff
    import yaml

    from .config import to_dict

    name = repo_id or folder.name
    proc = to_dict(lm.process.config)
    sampler = to_dict(lm.sampler_config)
    params = sum(p.numel() for p in lm.model.parameters())
    recipe = None
    for where in [p for p in (folder, source) if p is not None]:
        if (Path(where) / "config.yaml").is_file():
            recipe = yaml.safe_load((Path(where) / "config.yaml").read_text())
            break
    metrics = None
    if source is not None and (Path(source).parent / "metrics.jsonl").is_file():
        metrics = _metrics_summary(Path(source).parent / "metrics.jsonl")
    remote = "auto_map" in json.loads((folder / "config.json").read_text())
    tags = ["textdiff", "text-diffusion", f"{proc.get('name', 'diffusion')}-process"]
    lines = ["---", "library_name: textdiff", "tags:"] + [f"- {t}" for t in tags] + ["---", "", f"# {name}", "",
             f"A discrete text diffusion language model trained with [textdiff](https://pypi.org/project/textdiff/) "
             f"{textdiff.__version__}.", "",
             "| | |", "|---|---|",
             f"| forward process | `{proc.get('name')}` (schedule `{(proc.get('schedule') or {}).get('name', '-')}`) |",
             f"| default sampler | `{sampler.get('name')}` |",
             f"| network | `{lm.model.config.model_type}`, {params:,} parameters |",
             f"| context | {lm.seq_len} tokens |",
             f"| vocabulary | {len(lm.tokenizer):,} tokens (mask id {lm.tokenizer.mask_token_id}, EOS id {lm.tokenizer.eos_token_id}) |"]
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
                   if getattr(lm.model.config, "time_conditioning", False) else
                   "logits = model(ids).logits   # [1, L, V]: the denoiser's prediction at every position"), "```"]
    return "\n".join(lines) + "\n"
