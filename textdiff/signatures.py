"""Calls of the public API that do not fit its signature: an unknown keyword (``lm.generate(p, stepz=3)``),
a missing or one-too-many argument. Each is a one-line :class:`~textdiff.errors.ConfigError` that names
the function and lists the keywords it accepts, not Python's raw ``TypeError``.

    @checked
    def build_process(spec, vocab_size, mask_id=None): ...

    check_keywords("DiffusionLM.generate", extra_kwargs, accepted)   # for **kwargs passed further on

Only the binding is checked here (before any work); the values are :mod:`textdiff.arguments`'.
"""
from __future__ import annotations

import difflib
import functools
import inspect
from typing import Callable, Iterable

from .errors import ConfigError


def _accepted(sig: inspect.Signature) -> list[str]:
    return [p.name for p in sig.parameters.values()
            if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _hint(word: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keywords(where: str, kwargs: dict, accepted: Iterable[str]) -> None:
    """One-line error for the first keyword of ``kwargs`` not in ``accepted``."""
    accepted = list(accepted)
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(f"{where}() got an unknown keyword {key!r}{_hint(key, accepted)}; "
                              f"it accepts: {', '.join(accepted)}")


def checked(func: Callable) -> Callable:
    """Wrap a public function (or method) so that a call that does not bind to its signature is a
    one-line ConfigError listing the accepted keywords. Binding costs a few microseconds."""
    sig = inspect.signature(func)
    names = _accepted(sig)
    where = func.__qualname__

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            unknown = [k for k in kwargs if k not in sig.parameters]
            if unknown and not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
                check_keywords(where, {unknown[0]: None}, names)
            raise ConfigError(f"{where}(): {e}; it accepts: {', '.join(names)}") from None
        return func(*args, **kwargs)

    wrapper.__signature__ = sig
    return wrapper


def forwarded(outer: Callable, inner: Callable, exclude: Iterable[str] = ()) -> list[str]:
    """The keywords a function with ``**kwargs`` accepts: its own, then those of ``inner`` (the
    function the rest go to) that it does not set itself (``exclude``)."""
    own = _accepted(inspect.signature(outer))
    skip = set(own) | set(exclude)
    return own + [n for n in _accepted(inspect.signature(inner)) if n not in skip]


def checked_config(owner: type) -> None:
    """Wrap the ``__init__`` of the config dataclass ``owner`` declares (``config_class``) with
    :func:`checked`, once: ``MaskedConfig(antithetc=True)`` in Python is then the same one-line error
    as the misspelt key in a recipe. Called by the registered base classes' ``__init_subclass__``."""
    config = owner.__dict__.get("config_class")
    if isinstance(config, type) and "__init__" in config.__dict__ and not hasattr(config.__init__, "__wrapped__"):
        config.__init__ = checked(config.__init__)
