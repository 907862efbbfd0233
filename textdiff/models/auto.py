"""textdiff's networks in the transformers Auto classes, registered when transformers loads them.

``AutoModel.from_pretrained(folder)`` of a textdiff folder works without ``trust_remote_code`` once
textdiff's classes are registered with ``AutoConfig`` / ``AutoModel`` / ``AutoModelForMaskedLM``
(transformers has no hook through which an installed package registers a ``model_type`` by itself).
Registering needs the network classes, i.e. transformers' modeling code, which ``import textdiff``
must not pay for. So ``import textdiff`` calls :func:`register_on_import`: if the Auto classes are
already imported, the classes are registered at once; otherwise an import hook registers them right
after transformers imports ``transformers.models.auto.modeling_auto`` (``from transformers import
AutoModel``), before the caller can use them.

Two tiers: textdiff's own network (``TextDiffConfig`` / ``TextDiffModel``) and transformers' decoders run
bidirectionally (``textdiff_llama``, ``textdiff_qwen2``, the MoE ones: transformers' Llama / Qwen2 /
MoE modeling). A tier whose modules are half-imported at that moment (transformers' Llama modeling
imports the Auto classes midway through its own import) is left out rather than imported twice;
textdiff's loaders call :func:`register_auto_classes` themselves, and so may a caller.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: the module whose import means "transformers' Auto model classes exist now"
TRIGGER = "transformers.models.auto.modeling_auto"
#: the modules each tier imports (a tier is registered only when none of them is half-imported)
TIERS = {
    "textdiff": ("transformers.configuration_utils", "transformers.modeling_utils",
                 "textdiff.models.configuration_textdiff", "textdiff.models.modeling_textdiff"),
    "native": ("transformers.modeling_layers", "transformers.models.llama.modeling_llama",
               "transformers.models.qwen2.modeling_qwen2", "transformers.models.qwen3_moe.modeling_qwen3_moe",
               "transformers.models.glm4_moe.modeling_glm4_moe", "textdiff.models.modeling_bidirectional",
               "textdiff.models.modeling_moe"),
}
_done: set[str] = set()


def _half_imported(names) -> bool:
    """Whether one of the modules ``names`` is being imported right now (in sys.modules, unfinished)."""
    for name in names:
        spec = getattr(sys.modules.get(name), "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False):
            return True
    return False


def register_auto_classes(tiers=("textdiff", "native")) -> None:
    """Register textdiff's config and model classes with AutoConfig, AutoModel and
    AutoModelForMaskedLM (idempotent); a tier whose modules are half-imported is skipped."""
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    for tier in tiers:
        if tier in _done or _half_imported(TIERS[tier]):
            continue
        if tier == "textdiff":
            from .configuration_textdiff import TextDiffConfig
            from .modeling_textdiff import TextDiffModel

            pairs = [(TextDiffConfig, TextDiffModel)]
        else:
            from .modeling_bidirectional import NATIVE_CLASSES
            from .modeling_moe import MOE_CLASSES

            pairs = [*NATIVE_CLASSES.values(), *MOE_CLASSES.values()]
        for config_class, model_class in pairs:
            AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
            AutoModel.register(config_class, model_class, exist_ok=True)
            # the denoiser predicts a token at every position from a partly masked input: a masked LM
            AutoModelForMaskedLM.register(config_class, model_class, exist_ok=True)
        _done.add(tier)


class _RegisterAfter(importlib.abc.Loader):
    """The trigger module's own loader, then :func:`register_auto_classes`."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        register_auto_classes()

    def __getattr__(self, name):  # get_source, get_filename, ...: the wrapped loader's
        return getattr(self.loader, name)


class _Hook(importlib.abc.MetaPathFinder):
    """Finds :data:`TRIGGER` once, through the other finders, and wraps its loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TRIGGER:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfter(spec.loader)
        return spec


def register_on_import() -> None:
    """Register now if transformers' Auto classes are loaded, else when they are (see the module docstring)."""
    if TRIGGER in sys.modules:
        register_auto_classes()
    elif not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())
