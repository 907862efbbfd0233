"""textdiff: discrete text diffusion language models.

Public API::

    from textdiff import DiffusionLM
    lm = DiffusionLM.from_pretrained("runs/quickstart/final")
    lm.generate(["The list"], max_new_tokens=64, steps=64, seed=0)
"""
from . import models  # noqa: F401  (registers textdiff with the transformers Auto classes)
from .errors import ConfigError, DataError, IncompatibleError, TextDiffError
from .registry import available, build_process, build_sampler, build_schedule, register

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataError", "IncompatibleError", "TextDiffError",
    "available", "build_process", "build_sampler", "build_schedule", "register",
]


def __getattr__(name):  # heavy imports only when used
    if name == "DiffusionLM":
        from .lm import DiffusionLM

        return DiffusionLM
    if name in ("generate", "stream"):
        from . import generation

        return getattr(generation, name)
    raise AttributeError(name)
