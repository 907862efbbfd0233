"""Optional packages (the extras of ``pyproject.toml``): a missing one skips what needs it with one
line naming the extra, or — where nothing is left to do without it — is a one-line error, never a
traceback.

=============  ===========================  ===========================================
extra          packages                     what needs them
=============  ===========================  ===========================================
``eval``       matplotlib                   plots of ``textdiff eval`` and training curves (skipped)
``mauve``      mauve-text                   the MAUVE metric of a suite (skipped)
``lmeval``     lm-eval                      ``textdiff lm-eval`` (error)
``lora``       peft                         a recipe's ``lora`` section (error)
``deepspeed``  deepspeed                    launches with recipes/accelerate/deepspeed_*.yaml (error)
``serve``      fastapi, uvicorn, prometheus ``textdiff serve`` (error)
=============  ===========================  ===========================================
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

from .errors import TextDiffError


class MissingExtraError(TextDiffError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (``sys.modules[module] = None`` counts as missing)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str, feature: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'textdiff[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{feature} needs the optional package {module!r}; install it with: pip install 'textdiff[{extra}]'"
        ) from None


def skip_note(feature: str, module: str, extra: str) -> str:
    """The one line printed when ``feature`` is skipped for want of ``module``."""
    return f"note: {feature} skipped ({module} is not installed): pip install 'textdiff[{extra}]'"
