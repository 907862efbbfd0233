"""Denoiser networks: the textdiff transformer and transformers' decoders run as denoisers.

Importing this package imports no network code (nor transformers): the names below load on first use,
and the transformers Auto classes learn textdiff's networks when transformers imports them
(:mod:`textdiff.models.auto`).
"""
from __future__ import annotations

#: config.json model_types that textdiff loads natively from a folder with textdiff.json: its own
#: network and transformers' decoders run bidirectionally (modeling_bidirectional / modeling_moe;
#: tests/test_model.py checks this list against their classes)
NATIVE_MODEL_TYPES = ("textdiff", "textdiff_llama", "textdiff_qwen2", "textdiff_qwen3", "textdiff_qwen3_moe", "textdiff_glm4_moe")

_LAZY = {"KVCache": "cache", "TextDiffConfig": "configuration_textdiff", "TextDiffModel": "modeling_textdiff",
         "TextDiffOutput": "modeling_textdiff", "register_auto_classes": "auto"}

__all__ = ["NATIVE_MODEL_TYPES", *_LAZY]


def __getattr__(name):  # the network modules load when a name is first used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
