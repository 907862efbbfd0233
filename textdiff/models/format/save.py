"""The one writer of a model folder: ``DiffusionLM.save_pretrained``, ``textdiff convert`` and a
training run's ``final/`` all come here (through :func:`~.writer.staged_folder`, so the rules of
writing that never destroys hold for each)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from . import card
from .layout import CARD_FILE, PIPELINE_FILE, RECIPE_FILE
from .remote_code import add_remote_code
from .writer import PathLike, staged_folder


def save_model_folder(target: PathLike, model, tokenizer, meta: dict, *, state_dict: Optional[dict] = None,
                      recipe_text: Optional[str] = None, metrics_file: Optional[Path] = None, remote_code: bool = True,
                      model_card: bool = True, repo_id: Optional[str] = None, overwrite: bool = False,
                      sources: Iterable[PathLike] = (), writer_id: Optional[str] = None) -> Path:
    """Write the folder :func:`~.read.read_model_folder` reads, atomically; returns its path.

    meta: the ``textdiff.json`` contents (:func:`~.pipeline.pipeline`); state_dict: the weights to save
    when they are not the model's own (gathered from shards, merged LoRA); recipe_text: the run's
    ``config.yaml``; metrics_file: its metrics.jsonl (for the model card); remote_code: also write the
    network's modeling files and ``auto_map`` (textdiff's own networks only); overwrite / sources /
    writer_id: see :func:`~.writer.staged_folder` (``sources``: folders the target may not touch)."""
    target = Path(target).expanduser()
    with staged_folder(target, "model", overwrite=overwrite, sources=sources, writer_id=writer_id) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, **({} if state_dict is None else {"state_dict": state_dict}))
        tokenizer.save_pretrained(tmp)
        (tmp / PIPELINE_FILE).write_text(json.dumps(meta, indent=2))
        if recipe_text is not None:
            (tmp / RECIPE_FILE).write_text(recipe_text)  # the recipe travels along
        if remote_code:
            add_remote_code(tmp)
        if model_card:
            (tmp / CARD_FILE).write_text(card.model_card(tmp, target.name, model, tokenizer, meta, repo_id=repo_id,
                                                         metrics_file=metrics_file), encoding="utf-8")
    return target
