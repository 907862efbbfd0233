"""The files of a textdiff model folder, and the one answer to "what kind of folder is this?".

A model folder that textdiff writes (``save_pretrained``, ``textdiff convert``, a run's ``final/``)::

    config.json + model.safetensors   the network, in the Hugging Face layout
    tokenizer files                   tokenizer.json, tokenizer_config.json, ...
    textdiff.json                     the pipeline: process, sampler, special token ids, context (pipeline.py)
    textdiff_denoiser.json            only for a Hugging Face network trained as a denoiser (models/external.py)
    config.yaml                       the recipe of the run it came from (when there was one)
    README.md, *.py + auto_map        the model card and the modeling code for plain transformers users
    .textdiff-folder.json             the marker: textdiff wrote this folder (writer.py)

A run's ``checkpoint-N/`` holds the network files without ``textdiff.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ...errors import ConfigError

PIPELINE_FILE = "textdiff.json"  # process + sampler configs saved beside every model
DENOISER_FILE = "textdiff_denoiser.json"  # an external Hugging Face network's wrapper settings
RECIPE_FILE = "config.yaml"
CARD_FILE = "README.md"

TEXTDIFF, EXTERNAL, PUBLISHED = "textdiff", "external", "published"
#: networks textdiff runs through transformers' own classes: a folder of theirs with textdiff.json is a
#: textdiff folder (a conversion or fine-tuning run), without it the publisher's layout
WRAPPED_MODEL_TYPES = ("diffusion_gemma",)


def model_type(folder) -> Optional[str]:
    """The ``model_type`` of a folder's config.json (None when there is none or it is unreadable)."""
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return None
    try:
        found = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    return found.get("model_type") if isinstance(found, dict) else None


def folder_kind(folder) -> str:
    """What ``folder`` holds, from its files (never its name); the one rule every loader uses:

    * ``"external"``: a Hugging Face network trained as a denoiser (``textdiff_denoiser.json``);
    * ``"textdiff"``: a textdiff model folder or checkpoint (``textdiff.json``, or a config.json whose
      model_type is one of textdiff's networks), its network checked to be one of textdiff's;
    * ``"published"``: anything else: a publisher's layout (:mod:`textdiff.models.published` names
      the family or says that none matches).
    """
    from .. import NATIVE_MODEL_TYPES

    folder = Path(folder)
    if (folder / DENOISER_FILE).is_file():
        return EXTERNAL
    network = model_type(folder)
    if network in NATIVE_MODEL_TYPES or (network in WRAPPED_MODEL_TYPES and (folder / PIPELINE_FILE).is_file()):
        return TEXTDIFF
    if not (folder / PIPELINE_FILE).is_file():
        return PUBLISHED
    if network is not None:  # textdiff.json beside another architecture's config.json
        raise ConfigError(
            f"model folder {str(folder)!r} holds a {network!r} model, not a textdiff denoiser; to use a Hugging Face "
            f"network, train with a 'denoiser: {{path: {folder}}}' recipe section (masked LMs, LLaDA-style or causal LMs)"
        )
    return TEXTDIFF
