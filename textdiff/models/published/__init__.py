"""Published checkpoints (MDLM, BD3-LM, SEDD, DUO / UDLM, LLaDA, Dream) loaded natively.

A *family* is one publisher's on-disk layout. Each family is a small class registered with
``@register("family", name)`` that

* recognises its folders from the folder's own files (``config.json``'s ``model_type`` /
  ``architectures`` / keys), never from the folder's name (:meth:`Family.matches`);
* converts the publisher's weights into a textdiff denoiser (rename, reshape, split fused
  projections) and says which process, schedule, sampler, context length and tokenizer the
  model was trained with (:meth:`Family.load` -> :class:`Published`).

Families never import or run a file from the folder: they read JSON and tensors through
:mod:`textdiff.models.loading`. ``DiffusionLM.from_pretrained``, ``train.init_from`` and
``textdiff convert`` all come here for any folder that is not a textdiff folder.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ...errors import ConfigError
from ...registry import available, lookup, register  # noqa: F401  (register: for the family modules)
from ..loading import read_json


@dataclass
class Published:
    """A converted published checkpoint: everything ``DiffusionLM`` needs."""

    model: torch.nn.Module  # the textdiff denoiser call: model(input_ids [B, L], t, ...) -> logits [B, L, V]
    tokenizer: Any  # a transformers tokenizer with mask / eos / pad tokens set
    process: dict  # process config spec, e.g. {"name": "masked", "schedule": {"name": "loglinear"}}
    sampler: dict  # the default sampler spec, e.g. {"name": "ancestral"}
    seq_len: int  # the training context length
    family: str = ""
    notes: dict = field(default_factory=dict)  # what the family wants recorded (source, protocol)


@dataclass
class LoadOptions:
    """What the caller chose; nothing here can come from a file in the folder."""

    tokenizer: Any = None  # a tokenizer object or a path / hub id; default: the folder's or the family's
    dtype: Optional[torch.dtype] = None
    device: Optional[str] = None
    allow_pickle: bool = False
    revision: Optional[str] = None
    low_cpu_mem_usage: bool = True
    device_map: Any = None  # "auto" / "balanced" / "sequential" / "cpu" / {module: device} (models/dispatch.py)
    max_memory: Optional[dict] = None  # device -> size for the automatic device maps
    offload_folder: Any = None  # where device_map's "disk" part is written


class Family(abc.ABC):
    """One published layout. Subclasses set ``registered_name`` via ``@register("family", name)``."""

    registered_name: str = "?"
    #: the family's loader places every weight itself (``LoadOptions`` device, dtype and device_map,
    #: float32 rotary buffers kept as Hugging Face keeps them); families without it refuse a device_map
    supports_device_map: bool = False

    @classmethod
    @abc.abstractmethod
    def matches(cls, config: dict, folder: Path) -> bool:
        """True when ``config`` (the folder's config.json) is this family's."""

    @classmethod
    @abc.abstractmethod
    def load(cls, folder: Path, config: dict, options: LoadOptions) -> Published:
        """The converted model, tokenizer, process, sampler and context of ``folder``."""


def folder_config(folder: Path) -> dict:
    """The folder's config.json (a one-line error when there is none or it is damaged)."""
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        raise ConfigError(f"{str(folder)!r} has no config.json; is it a model folder?")
    return read_json(cfg)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt")


def read_tokenizer(folder: Path, options: LoadOptions, default: str, read=None, files=TOKENIZER_FILES):
    """The caller's tokenizer object as is; else the caller's folder / hub id, the model folder when it
    holds one of ``files``, or ``default`` (a hub id), read with ``read(where)`` (default: textdiff's
    ``load_tokenizer``)."""
    from ...tokenization import load_tokenizer
    from ..loading import resolve_model_path

    source = options.tokenizer
    if source is not None and not isinstance(source, (str, Path)):
        return source
    if source is None:
        own = any((Path(folder) / f).is_file() for f in files)
        source = folder if own else default
    try:
        where = resolve_model_path(source, what="tokenizer folder")
    except ConfigError as e:
        raise ConfigError(f"{e}; this checkpoint ships no tokenizer: pass tokenizer=<folder with the {default} "
                          f"tokenizer files> (CLI: --tokenizer)") from None
    return read(where) if read is not None else load_tokenizer(str(where))


def family_tokenizer(folder: Path, options: LoadOptions, default: str):
    """The tokenizer of a published model: the caller's (object, folder or hub id), else the folder's
    own files, else the family's ``default`` hub id (e.g. ``gpt2``; needs a network the first time).
    Leaves with mask / EOS / PAD tokens (GPT-2 gains [MASK] as id 50257, as the OWT models use)."""
    from ...tokenization import ensure_special_tokens

    tokenizer = read_tokenizer(folder, options, default)
    ensure_special_tokens(tokenizer)
    return tokenizer


def detect_family(folder: Path, config: Optional[dict] = None) -> Optional[type]:
    """The registered family whose layout ``folder`` has, or None."""
    config = folder_config(folder) if config is None else config
    hits = [lookup("family", name) for name in available("family") if lookup("family", name).matches(config, folder)]
    if len(hits) > 1:
        raise ConfigError(f"{str(folder)!r} matches several published layouts ({', '.join(h.registered_name for h in hits)}); "
                          "this is a bug in textdiff, please report it")
    return hits[0] if hits else None


def load_published(folder: Path, options: Optional[LoadOptions] = None) -> Published:
    """Convert the published checkpoint in ``folder``; a one-line error for an unknown layout."""
    options = options or LoadOptions()
    config = folder_config(folder)
    family = detect_family(folder, config)
    if family is None:
        kind = config.get("model_type") or (config.get("architectures") or [None])[0]
        what = f"holds a {kind!r} model, which is" if kind else "has a config.json that names no model_type, and is"
        raise ConfigError(
            f"{str(folder)!r} {what} neither a textdiff folder (no textdiff.json) nor a published layout textdiff "
            f"knows ({', '.join(available('family')) or 'none'}); for another Hugging Face network train with a "
            "'denoiser: {path: ...}' recipe section"
        )
    if options.device_map is not None and not family.supports_device_map:
        raise ConfigError(f"device_map is not supported for {family.registered_name} checkpoints (small models); "
                          "load with device=... instead")
    published = family.load(Path(folder), config, options)
    published.family = family.registered_name
    if not family.supports_device_map and (options.device is not None or options.dtype is not None):
        published.model.to(device=options.device, dtype=options.dtype)
    return published


def _load_families() -> None:
    """Import every family module of this package (each registers its classes on import)."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_load_families()
