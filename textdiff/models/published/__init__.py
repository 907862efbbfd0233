"""Published checkpoints (MDLM, BD3-LM, SEDD, DUO / UDLM, LLaDA, Dream, LLaDA-MoE, LLaDA 2.0) loaded natively; DiffusionGemma through
transformers' own classes.

A *family* is one publisher's on-disk layout: a small class (:class:`~.family.Family`, which says
how to add one) that recognises its folders from config.json's own fields, declares the rename
table of its tensors and the process, sampler, context and tokenizer it was released with. The
families have their own table here, apart from the registry of processes and samplers: ``FAMILIES``
maps each name to its class, imported only when a folder has to be identified (so importing this
package imports no modeling code). Families are independent of each other: helpers two of them share
live in ``dit.py``, ``decoder.py`` and ``moe.py``.

Families never import or run a file from the folder: they read JSON and tensors through
:mod:`textdiff.models.loading` and :mod:`textdiff.models.weights`. ``DiffusionLM.from_pretrained``,
``train.init_from`` and ``textdiff convert`` all come here for a folder that is not a textdiff
folder (:func:`textdiff.models.format.folder_kind`).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from ...errors import ConfigError
from ..format.layout import PIPELINE_FILE
from ..loading import read_json
from .family import Family, LoadOptions, Published

#: family name -> "module.Class" in this package
FAMILIES = {
    "mdlm": "mdlm.MDLM",
    "bd3lm": "bd3lm.BD3LM",
    "sedd": "sedd.SEDD",
    "duo": "duo.DUO",
    "udlm": "duo.UDLM",
    "llada": "llada.LLaDA",
    "dream": "dream.Dream",
    "llada_moe": "llada_moe.LLaDAMoE",
    "llada2": "llada2.LLaDA2",
    "diffusion_gemma": "diffusion_gemma.DiffusionGemma",
    "llada21": "llada21.LLaDA21",
    "sdar": "sdar.SDAR",
    "fast_dllm_v2": "fast_dllm_v2.FastDLLMv2",
}

#: layouts recognised only to say why they cannot load: (pattern on model_type / architectures, reason)
REFUSED = (
    (r"llada[-_.]?2[-_.]?2", "LLaDA 2.2's modeling and decoding code (Levenshtein editing: keep / substitute / delete / "
                             "insert) is not public, so textdiff cannot convert it or prove parity; no textdiff version loads it yet"),
)

__all__ = ["FAMILIES", "Family", "LoadOptions", "Published", "available", "detect_family", "family", "load_published"]


def available() -> list[str]:
    """The names of the published families."""
    return sorted(FAMILIES)


def family(name: str) -> type:
    """The family class called ``name`` (its module imported on first use)."""
    try:
        module, cls = FAMILIES[name].rsplit(".", 1)
    except KeyError:
        raise ConfigError(f"unknown published family {name!r}; known: {', '.join(available())}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def folder_config(folder: Path) -> dict:
    """The folder's config.json (a one-line error when there is none or it is damaged)."""
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        raise ConfigError(f"{str(folder)!r} has no config.json; is it a model folder?")
    return read_json(cfg)


def detect_family(folder: Path, config: Optional[dict] = None) -> Optional[type]:
    """The family whose layout ``folder`` has, or None."""
    config = folder_config(folder) if config is None else config
    hits = [family(name) for name in available() if family(name).matches(config)]
    if len(hits) > 1:
        raise ConfigError(f"{str(folder)!r} matches several published layouts ({', '.join(h.name for h in hits)}); "
                          "this is a bug in textdiff, please report it")
    return hits[0] if hits else None


def refuse_unpublished(folder: Path, config: dict) -> None:
    """A one-line error for a layout in :data:`REFUSED` (known, but its code is not public)."""
    import re

    names = [str(config.get("model_type") or "")] + [str(a) for a in config.get("architectures") or []]
    for pattern, reason in REFUSED:
        if any(re.search(pattern, n, re.IGNORECASE) for n in names):
            raise ConfigError(f"{str(folder)!r} holds a {names[0] or names[-1]!r} model: {reason}")


def load_published(folder: Path, options: Optional[LoadOptions] = None) -> Published:
    """Convert the published checkpoint in ``folder``; a one-line error for an unknown layout."""
    options = options or LoadOptions()
    config = folder_config(folder)
    refuse_unpublished(folder, config)
    found = detect_family(folder, config)
    if found is None:
        kind = config.get("model_type") or (config.get("architectures") or [None])[0]
        what = f"holds a {kind!r} model, which is" if kind else "has a config.json that names no model_type, and is"
        raise ConfigError(
            f"{str(folder)!r} {what} neither a textdiff folder (no {PIPELINE_FILE}) nor a published layout textdiff "
            f"knows ({', '.join(available())}); for another Hugging Face network train with a "
            "'denoiser: {path: ...}' recipe section"
        )
    if options.device_map is not None and not found.supports_device_map:
        raise ConfigError(f"device_map is not supported for {found.name} checkpoints (small models); "
                          "load with device=... instead")
    published = found.load(Path(folder), config, options)
    if not found.supports_device_map and (options.device is not None or options.dtype is not None):
        published.model.to(device=options.device, dtype=options.dtype)
    return published
