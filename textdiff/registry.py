"""One registry for every named part: strings become classes here and nowhere else.

Classes register themselves with ``@register(kind, name)``; each carries a ``config_class``
dataclass whose ``name`` field holds the registered name. ``build_*`` turn a config (or a name, or a
mapping) into an object. The math never branches on these strings.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .errors import ConfigError

KINDS = ("schedule", "process", "sampler")  # published checkpoint layouts have their own table (models/published)
_REGISTRY: dict[str, dict[str, type]] = {k: {} for k in KINDS}
_LOADED = False


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


def _load_builtins() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import processes, samplers, schedules  # noqa: F401  (imports register the classes)


def available(kind: str) -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY[kind])


def lookup(kind: str, name: str) -> type:
    _load_builtins()
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise ConfigError(f"unknown {kind} {name!r}; available: {', '.join(available(kind))}") from None


def config_class(kind: str, name: str) -> type:
    return lookup(kind, name).config_class


def make_config(kind: str, spec: Any) -> Any:
    """A config dataclass from a name, a mapping with ``name``, or a config object."""
    from .config import resolve_section

    if dataclasses.is_dataclass(spec):
        return spec
    return resolve_section(kind, spec, kind)


def build_schedule(spec: Any):
    cfg = make_config("schedule", spec)
    return lookup("schedule", cfg.name)(cfg)


def build_process(spec: Any, vocab_size: int, mask_id: int | None = None):
    """``spec``: a process config, name or mapping; ``mask_id`` is required by absorbing processes."""
    cfg = make_config("process", spec)
    return lookup("process", cfg.name)(cfg, vocab_size=vocab_size, mask_id=mask_id)


def check_pair(process_spec: Any, sampler_spec: Any) -> None:
    """Raise :class:`~textdiff.errors.IncompatibleError` unless the sampler can serve the process,
    from their configs alone (before any model or data exists; the same rule as building them)."""
    from .errors import IncompatibleError

    process_cfg, sampler_cfg = make_config("process", process_spec), make_config("sampler", sampler_spec)
    process_cls, sampler_cls = lookup("process", process_cfg.name), lookup("sampler", sampler_cfg.name)
    names = {c.registered_name for c in process_cls.__mro__ if "registered_name" in vars(c)}
    compatible = getattr(sampler_cls, "compatible", ())
    if compatible and not names & set(compatible):
        raise IncompatibleError(f"sampler {sampler_cfg.name!r} cannot serve process {process_cfg.name!r}; "
                                f"it works with: {', '.join(compatible)} (set sampler.name to one made for it)")


def default_sampler(process_spec: Any) -> str:
    """The sampler a recipe gets when it names none: ``ancestral`` when it serves the process, else
    the first registered sampler that does (SEDD: ``analytic``)."""
    from .errors import IncompatibleError

    for name in ["ancestral"] + available("sampler"):
        try:
            check_pair(process_spec, name)
            return name
        except IncompatibleError:
            continue
    return "ancestral"  # none fits: check_pair's error comes at validation


def build_sampler(spec: Any, process):
    """A sampler bound to ``process``; raises if the pair cannot work together."""
    cfg = make_config("sampler", spec)
    return lookup("sampler", cfg.name)(cfg, process)
