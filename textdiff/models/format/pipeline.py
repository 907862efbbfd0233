"""``textdiff.json``: what turns a network into a diffusion LM (written beside every model folder).

    {"process": {...},  "sampler": {...},             the configs, as dicts (config.to_dict)
     "mask_token_id": 50257, "eos_token_id": 50256, "pad_token_id": 50256,
     "seq_len": 1024,                                 the training context
     "generation": {"block_size": 32},                (optional) generate()'s released defaults
     "stop_token_ids": [126348]}                      (optional) tokens that end an answer besides EOS
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ...errors import ConfigError
from .layout import PIPELINE_FILE


def pipeline(process_config, sampler_config, tokenizer, seq_len: Optional[int], generation: Optional[dict] = None,
             stop_token_ids: Optional[Sequence[int]] = None, published: Optional[dict] = None) -> dict:
    """The contents of ``textdiff.json`` for a model with these configs and tokenizer; ``published``:
    the publisher's family and config.json of a converted checkpoint that can be written back."""
    from ...dataclass_io import to_dict

    meta = {"process": to_dict(process_config), "sampler": to_dict(sampler_config),
            "mask_token_id": tokenizer.mask_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id, "seq_len": seq_len}
    if generation:
        meta["generation"] = dict(generation)
    if stop_token_ids:
        meta["stop_token_ids"] = [int(i) for i in stop_token_ids]
    if published:
        meta["published"] = published
    return meta


def check_pipeline(meta: dict, file: Path) -> dict:
    """``textdiff.json`` (already read as a JSON object) must name a process and a sane seq_len."""
    if not isinstance(meta.get("process"), (dict, str)):
        raise ConfigError(f"{file} has no 'process' section; is it a textdiff model folder?")
    seq_len = meta.get("seq_len")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise ConfigError(f"{file}: seq_len={seq_len!r} must be a positive integer")
    return meta


def read_pipeline(folder) -> dict:
    """The checked ``textdiff.json`` of ``folder`` (one-line errors for a missing or damaged file)."""
    from ..loading import read_json

    file = Path(folder) / PIPELINE_FILE
    return check_pipeline(read_json(file), file)


def saved_process(folder) -> Optional[dict]:
    """The process spec ``textdiff.json`` names (None when the folder has no textdiff.json)."""
    file = Path(folder) / PIPELINE_FILE
    if not file.is_file():
        return None
    try:
        from ..loading import read_json

        saved = read_json(file)["process"]
        saved["name"]
    except (ConfigError, KeyError, TypeError):
        raise ConfigError(f"{file} is damaged (not the JSON textdiff writes); re-save the model") from None
    return saved
