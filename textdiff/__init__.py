"""textdiff: discrete text diffusion language models.

Public API::

    from textdiff import DiffusionLM
    lm = DiffusionLM.from_pretrained("runs/quickstart/final")
    lm.generate(["The list"], max_new_tokens=64, steps=64, seed=0)
"""
from .errors import ConfigError, DataError, IncompatibleError, TextDiffError
from .models.auto import register_on_import
from .registry import available, register

register_on_import()  # the transformers Auto classes learn textdiff's networks when transformers loads them

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataError", "IncompatibleError", "TextDiffError",
    "available", "build_process", "build_sampler", "build_schedule", "register",
]


def __getattr__(name):  # heavy imports only when used
    if name == "build_schedule":
        from .schedules import build_schedule

        return build_schedule
    if name == "build_process":
        from .processes.base import build_process

        return build_process
    if name == "build_sampler":
        from .samplers.base import build_sampler

        return build_sampler
    if name == "DiffusionLM":
        from .lm import DiffusionLM

        return DiffusionLM
    if name in ("generate", "stream"):
        from . import generation

        return getattr(generation, name)
    raise AttributeError(name)
