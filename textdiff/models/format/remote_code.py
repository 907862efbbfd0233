"""What a saved folder carries for people without textdiff: the network's modeling code behind
``auto_map``.

:func:`add_remote_code` copies the package's own network files, unchanged, into the folder
(``configuration_textdiff.py``, ``modeling_textdiff.py`` and the two modules it imports relatively,
``cache.py`` and ``masks.py``: none imports textdiff, so they are the same code the package runs) and
adds ``auto_map`` to ``config.json``, so that, without textdiff installed::

    from transformers import AutoModel
    model = AutoModel.from_pretrained("owner/name", trust_remote_code=True)   # the denoiser, [B, L, V] logits

textdiff itself never runs those files: :func:`textdiff.models.format.read.read_network` builds the
network from the installed package's classes (registered with the Auto classes, which transformers
prefers to a folder's ``auto_map`` when ``trust_remote_code`` is not set), and nothing in a folder
can switch ``trust_remote_code`` on: only the caller can. Plain ``AutoModel.from_pretrained(folder)``
*without* ``trust_remote_code`` works only after ``import textdiff`` (transformers has no hook
through which an installed package registers a ``model_type`` by itself).

LLaDA and Dream converted to ``textdiff_llama`` / ``textdiff_qwen2`` folders get the same:
``modeling_bidirectional.py`` (transformers' Llama / Qwen2 decoders run bidirectionally, Dream's
logits shift) with the files it imports relatively (``cache.py``, and ``modeling_textdiff.py`` for
the output class, with its own two imports), again the package's own files unchanged, importing
only torch and transformers; ``auto_map`` names the config and model classes in that file.

A Hugging Face network trained as a denoiser (:mod:`textdiff.models.external`) loads with its own
transformers class already and gets none.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

MODELS_DIR = Path(__file__).resolve().parents[1]  # textdiff/models/
REMOTE_CODE_FILES = ("configuration_textdiff.py", "modeling_textdiff.py", "cache.py", "masks.py")
AUTO_MAP = {
    "AutoConfig": "configuration_textdiff.TextDiffConfig",
    "AutoModel": "modeling_textdiff.TextDiffModel",
    "AutoModelForMaskedLM": "modeling_textdiff.TextDiffModel",
}


#: the HF-module denoisers: model_type -> (module file, config class, model class). LLaDA / Dream live in
#: models/modeling_bidirectional.py; LLaDA-MoE / LLaDA 2.0 in models/modeling_moe.py, which imports it.
BIDIRECTIONAL_CLASSES = {"textdiff_llama": ("modeling_bidirectional", "DiffusionLlamaConfig", "DiffusionLlamaModel"),
                         "textdiff_qwen2": ("modeling_bidirectional", "DiffusionQwen2Config", "DiffusionQwen2Model"),
                         "textdiff_qwen3": ("modeling_bidirectional", "DiffusionQwen3Config", "DiffusionQwen3Model"),
                         "textdiff_qwen3_moe": ("modeling_moe", "DiffusionQwen3MoeConfig", "DiffusionQwen3MoeModel"),
                         "textdiff_glm4_moe": ("modeling_moe", "DiffusionGlm4MoeConfig", "DiffusionGlm4MoeModel")}
BIDIRECTIONAL_FILES = ("modeling_bidirectional.py", *REMOTE_CODE_FILES)


def remote_code_for(model_type) -> Optional[tuple[tuple[str, ...], dict]]:
    """(source files, auto_map) of a model_type that ships its modeling code, else None."""
    if model_type == "textdiff":
        return REMOTE_CODE_FILES, dict(AUTO_MAP)
    if model_type in BIDIRECTIONAL_CLASSES:
        module, config_class, model_class = BIDIRECTIONAL_CLASSES[model_type]
        files = BIDIRECTIONAL_FILES if module == "modeling_bidirectional" else (f"{module}.py", *BIDIRECTIONAL_FILES)
        model = f"{module}.{model_class}"
        return files, {"AutoConfig": f"{module}.{config_class}", "AutoModel": model, "AutoModelForMaskedLM": model}
    return None


def add_remote_code(folder) -> list[str]:
    """Copy the network's source files into ``folder`` and add ``auto_map`` to its config.json;
    returns the files written. A folder of another model_type (an external network) is left alone."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    code = remote_code_for(cfg.get("model_type"))
    if code is None:
        return []
    files, auto_map = code
    for name in files:
        (folder / name).write_text((MODELS_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    cfg["auto_map"] = auto_map
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return list(files)
