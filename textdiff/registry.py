"""One registry for every named part: strings become classes here and nowhere else.

A leaf: it imports nothing of textdiff but :mod:`textdiff.errors`. Classes register themselves with
``@register(kind, name)``; :data:`BUILTINS` names the module that registers each built-in name, and
:func:`lookup` imports that module the first time the name is asked for (as the Hugging Face Auto
classes map a model type to its module). So reading a recipe that names ``masked`` imports the masked
process alone, and listing names (:func:`available`) imports nothing.

Each registered class carries a ``config_class`` dataclass whose ``name`` field holds the registered
name. The builders live beside their base classes (``build_schedule`` in :mod:`textdiff.schedules`,
``build_process`` in :mod:`textdiff.processes.base`, ``build_sampler`` in :mod:`textdiff.samplers.base`).
The math never branches on these strings.
"""
from __future__ import annotations

import importlib
from typing import Callable

from .errors import ConfigError

#: what the registry holds (published checkpoint layouts have their own table: textdiff.models.published)
KINDS = ("schedule", "process", "sampler")

_SCHEDULES = "textdiff.schedules"
#: built-in name -> the module whose import registers it, per kind (imported on first lookup)
BUILTINS: dict[str, dict[str, str]] = {
    "schedule": {name: _SCHEDULES for name in ("loglinear", "linear", "cosine", "geometric", "polynomial", "clipped")},
    "process": {
        "masked": "textdiff.processes.masked",
        "block": "textdiff.processes.block",
        "uniform": "textdiff.processes.uniform",
        "sedd_absorb": "textdiff.processes.score_entropy",
        "sedd_uniform": "textdiff.processes.score_entropy",
        "ar": "textdiff.processes.autoregressive",
    },
    "sampler": {
        "ancestral": "textdiff.samplers.ancestral",
        "first_hitting": "textdiff.samplers.first_hitting",
        "euler": "textdiff.samplers.euler",
        "analytic": "textdiff.samplers.euler",
        "confidence": "textdiff.samplers.confidence",
        "threshold": "textdiff.samplers.threshold",
        "remdm": "textdiff.samplers.remdm",
        "entropy_bound": "textdiff.samplers.entropy_bound",
        "editing": "textdiff.samplers.editing",
        "multi_block": "textdiff.samplers.multi_block",
    },
}
_REGISTRY: dict[str, dict[str, type]] = {k: {} for k in KINDS}


def register(kind: str, name: str) -> Callable[[type], type]:
    """Class decorator: make ``cls`` buildable as ``name`` in registry ``kind``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; one of {KINDS}")

    def deco(cls: type) -> type:
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice")
        _REGISTRY[kind][name] = cls
        cls.registered_name = name
        return cls

    return deco


def available(kind: str) -> list[str]:
    """Every name of ``kind``: the built-in ones and those registered since (nothing is imported)."""
    return sorted(set(_REGISTRY[kind]) | set(BUILTINS[kind]))


def lookup(kind: str, name: str) -> type:
    """The class registered as ``name``; a built-in name's module is imported on first use."""
    if name not in _REGISTRY[kind] and name in BUILTINS[kind]:
        importlib.import_module(BUILTINS[kind][name])
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise ConfigError(f"unknown {kind} {name!r}; available: {', '.join(available(kind))}") from None


def config_class(kind: str, name: str) -> type:
    """The config dataclass of the class registered as ``name``."""
    return lookup(kind, name).config_class
