"""Type and range checks of public API arguments: one-line :class:`~textdiff.errors.ConfigError`
naming the argument, raised before any work (``generate(None)``, ``max_new_tokens="8"``,
``seed="a"``, ``score([123])``, ``steps=0``)."""
from __future__ import annotations

import numbers
from typing import Any, Optional

from .errors import ConfigError


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(name: str, value: Any, minimum: Optional[int] = None, optional: bool = False) -> Optional[int]:
    """An int (numpy ints too; not bool, not float, not str) >= ``minimum``; None when optional."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {type(value).__name__} {_show(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return int(value)


def number(name: str, value: Any, lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
           optional: bool = False) -> Optional[float]:
    """A finite real number in [lo, hi] (``lo_open``: (lo, hi]); None when optional."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__} {_show(value)}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}={value} must be a finite number")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{name}={value:g} must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name}={value:g} must be <= {hi:g}")
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {type(value).__name__} {_show(value)}")
    return value


def choice(name: str, value: Any, options) -> Any:
    if value not in options:
        raise ConfigError(f"{name}={_show(value)} is not one of {list(options)}")
    return value


def texts(name: str, value: Any) -> list[str]:
    """A string or a non-empty list / tuple of strings -> a list of strings."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a string or a list of strings, got {type(value).__name__} {_show(value)}")
    if not value:
        raise ConfigError(f"{name} is empty; pass a list of strings (use [''] for an unconditional sample)")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise ConfigError(f"{name}[{i}] must be a string, got {type(v).__name__} {_show(v)}")
    return list(value)


#: what a chat prompt looks like, for the errors of prompts given in another shape
CHAT_SHAPE = ("a chat is a list of {'role': ..., 'content': ...} mappings only, e.g. "
              "generate([[{'role': 'user', 'content': 'hi'}]]); a prompt is a string, a chat or a list of token ids")


def prompts(name: str, value: Any) -> list:
    """A string, or a non-empty list whose items are strings or token-id lists (``DiffusionLM.generate``)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a string or a list of strings / token-id lists, got {type(value).__name__} {_show(value)}")
    if not value:
        raise ConfigError(f"{name} is empty; pass a list of strings (use [''] for an unconditional sample)")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
            ids = v.tolist() if hasattr(v, "tolist") else list(v)
            if any(isinstance(tok, dict) for tok in ids):  # a chat with something else in it, not token ids
                other = next(tok for tok in ids if not isinstance(tok, dict))
                raise ConfigError(f"{name}[{i}] looks like a chat but item {ids.index(other)} is a {type(other).__name__} "
                                  f"{_show(other)}; {CHAT_SHAPE}")
            for j, tok in enumerate(ids):
                if isinstance(tok, bool) or not isinstance(tok, numbers.Integral):
                    raise ConfigError(f"{name}[{i}][{j}] must be an integer token id, got {type(tok).__name__} {_show(tok)}")
            out.append([int(t) for t in ids])
        elif isinstance(v, dict):
            raise ConfigError(f"{name}[{i}] is a single message {_show(v)} among other prompts; {CHAT_SHAPE}")
        else:
            raise ConfigError(f"{name}[{i}] must be a string or a list of token ids, got {type(v).__name__} {_show(v)}")
    return out


def token_lists(name: str, value: Any) -> list[list[int]]:
    """A list of token-id lists (ints); a tensor row counts as a list."""
    if isinstance(value, str) or not hasattr(value, "__len__") or not hasattr(value, "__iter__"):
        raise ConfigError(f"{name} must be a list of token-id lists, e.g. [[5, 8, 13]], got {type(value).__name__} {_show(value)}")
    rows = []
    for i, row in enumerate(value):
        if isinstance(row, (str, bytes)) or isinstance(row, numbers.Number) or not hasattr(row, "__iter__"):
            raise ConfigError(f"{name}[{i}] must be a list of token ids, got {type(row).__name__} {_show(row)}; "
                              "tokenize strings first")
        ids = row.tolist() if hasattr(row, "tolist") else list(row)
        for j, tok in enumerate(ids):
            if isinstance(tok, bool) or not isinstance(tok, numbers.Integral):
                raise ConfigError(f"{name}[{i}][{j}] must be an integer token id, got {type(tok).__name__} {_show(tok)}")
        rows.append([int(t) for t in ids])
    return rows


def seeds(name: str, value: Any, count: Optional[int] = None) -> Any:
    """None, an int, or one int per row."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        out = [integer(f"{name}[{i}]", v) for i, v in enumerate(value)]
        if count is not None and len(out) != count:
            raise ConfigError(f"got {len(out)} seeds for {count} prompts; give one per prompt or a single int")
        return out
    return integer(name, value)


def device(value: Any) -> Optional[str]:
    """None or a torch device string that exists on this machine."""
    import torch

    if value is None:
        return None
    if not isinstance(value, (str, torch.device)):
        raise ConfigError(f"device must be a string like 'cpu' or 'cuda:0', got {type(value).__name__} {_show(value)}")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={_show(value)} is not a device; use 'cpu', 'cuda', 'cuda:0' or 'mps'") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device={_show(value)} is not available on this machine (CUDA devices: "
                          f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}); use 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={_show(value)} is not available on this machine; use 'cpu'")
    return str(dev)


def generation(*, max_new_tokens, steps, block_size, max_context, pad_token_id, eos_token_id, infill_id, stop_at_eos,
               use_cache, denoise, lookback=None) -> None:
    """The scalar arguments of :func:`textdiff.generation.generate` (``max_new_tokens=None``: from a template)."""
    integer("max_new_tokens", max_new_tokens, minimum=1, optional=True)
    integer("steps", steps, minimum=1)
    integer("block_size", block_size, minimum=1, optional=True)
    integer("max_context", max_context, minimum=1, optional=True)
    integer("lookback", lookback, minimum=0, optional=True)
    integer("pad_token_id", pad_token_id, minimum=0)
    integer("eos_token_id", eos_token_id, minimum=0, optional=True)
    integer("infill_id", infill_id, minimum=0, optional=True)
    flag("stop_at_eos", stop_at_eos)
    if not isinstance(use_cache, (bool, str)):
        raise ConfigError(f"use_cache must be True/False or a cache mode name, got {type(use_cache).__name__} {_show(use_cache)}")
    if denoise is not None and not callable(denoise):
        raise ConfigError(f"denoise must be callable, got {type(denoise).__name__}")


def path(name: str, value: Any, what: str = "a folder path"):
    """A filesystem path (or hub id): a non-blank str or os.PathLike (not a number, None or bytes)."""
    import os

    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ConfigError(f"{name} must be {what} (a string or Path), got {type(value).__name__} {_show(value)}")
    return value


def optional_flag(name: str, value: Any) -> Optional[bool]:
    """None or True/False (``progress=None``: decide from the terminal)."""
    return None if value is None else flag(name, value)


def optional_text(name: str, value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string or None, got {type(value).__name__} {_show(value)}")
    return value


def tokenizer_spec(name: str, value: Any) -> Any:
    """None, a tokenizer's folder / hub id, or a tokenizer object (it encodes and maps tokens to ids)."""
    import os

    if value is None or isinstance(value, (str, os.PathLike)) or (callable(value) and hasattr(value, "convert_tokens_to_ids")):
        return value
    raise ConfigError(f"{name} must be a tokenizer, its folder or its hub id, got {type(value).__name__} {_show(value)}")


def loading(name_or_path, tokenizer, revision, trust_remote_code, allow_pickle) -> None:
    """The types of ``DiffusionLM.from_pretrained``'s arguments (values are checked where used)."""
    path("name_or_path", name_or_path, "a model folder or hub id")
    tokenizer_spec("tokenizer", tokenizer)
    optional_text("revision", revision)
    flag("trust_remote_code", trust_remote_code)
    flag("allow_pickle", allow_pickle)
