"""Strict (de)serialisation of typed dataclasses: the machinery under :mod:`textdiff.config`.

``from_dict(cls, data)`` builds a dataclass from plain containers, rejecting unknown keys (the error
lists the valid ones) and wrong types (``1.5`` for an int, ``"fast"`` for a float); a field whose
metadata names a registry is polymorphic and its ``name`` key picks the concrete config class.
``to_dict`` goes back. Errors are one-line :class:`~textdiff.errors.ConfigError`.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Optional, Union

from .errors import ConfigError
from .registry import config_class

_FALSE, _TRUE = ("no", "off", "false"), ("yes", "on", "true")
_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` (recursively) and return it, converted if harmless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:  # try the next member of the union
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} does not fit {_type_name(tp)}")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads no/off/yes/on as booleans
            spelled = [a for a in args if isinstance(a, str) and a.lower() in (_FALSE if not value else _TRUE)]
            if spelled:
                return spelled[0]
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types.

    A field whose metadata names a registry (``field(metadata={"registry": "process"})``) is a
    polymorphic section: its ``name`` key selects the concrete config class.
    """
    where = where or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)} (check the spelling)"
        )
    kwargs = {}
    for name, value in data.items():
        f = known[name]
        sub = f"{where}.{name}" if where else name
        registry = f.metadata.get("registry")
        if registry is not None:
            kwargs[name] = resolve_section(registry, value, sub)
        else:
            kwargs[name] = _coerce(value, hints[name], sub)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where}: {e}") from None
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


DEFAULT_NAMES = {"process": "masked", "sampler": "ancestral", "schedule": "loglinear"}


def resolve_section(kind: str, value: Any, where: str) -> Any:
    """Turn a ``{name: ..., **fields}`` mapping into the config dataclass registered under ``name``."""
    if value is None:
        return None
    if dataclasses.is_dataclass(value):  # built in Python: checked as a mapping would be (types, ranges)
        return _checked_instance(kind, value, where)
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and "name" not in value and kind in DEFAULT_NAMES:
        value = {"name": DEFAULT_NAMES[kind], **value}
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {value!r}")
    cls = config_class(kind, value["name"])
    return from_dict(cls, value, where)


def _checked_instance(kind: str, value: Any, where: str) -> Any:
    """A config object given as it is (``MaskedConfig(...)`` in Python skips :func:`from_dict`): the
    same one-line errors for a wrong type or value; the object itself is returned unchanged."""
    if isinstance(value, type):
        raise ConfigError(f"{where}: got the class {value.__name__}; pass an instance, e.g. {value.__name__}()")
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
    from_dict(type(value), fields, where)
    return value


def make_config(kind: str, spec: Any) -> Any:
    """A config dataclass of registry ``kind`` from a name, a mapping with ``name``, or a config object."""
    return resolve_section(kind, spec, kind)


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) to plain Python containers, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ---- range checks used by the ``validate()`` methods of the config dataclasses -----------------


def at_least(section: str, obj, minimum, *names: str, optional: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if value < minimum:
            raise ConfigError(f"{section}.{name}={value} must be at least {minimum}")


def in_range(where: str, value: float, lo: float, hi: float, hi_open: bool = False, lo_open: bool = False) -> None:
    bad = (value <= lo if lo_open else value < lo) or (value >= hi if hi_open else value > hi)
    if bad or value != value:  # NaN fails too
        raise ConfigError(f"{where}={value} must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


def finite(where: str, value: float) -> None:
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}={value} must be a finite number")


def not_blank(where: str, value: Optional[str]) -> None:
    if value is not None and not value.strip():
        raise ConfigError(f"{where} is an empty string; give a value or leave the key out")
