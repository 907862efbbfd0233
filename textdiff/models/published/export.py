"""Writing a converted folder back in its publisher's layout (``textdiff convert SRC DST --to published``),
for the block-causal families that SGLang / vLLM serve, so one folder moves between those engines
and textdiff.

``textdiff convert`` of a family that declares :meth:`~.family.Family.write_back` records the
publisher's ``config.json`` (as read, every key) and the family name in ``textdiff.json``
(``"published"``); a re-save keeps it. Writing back inverts the family's rename table tensor by
tensor (renames undone, split projections concatenated again, stacked experts unstacked), so every
tensor has the publisher's name, shape, dtype and bytes; ``config.json`` is the recorded one; the
tokenizer files are copied. Weights go to one ``model.safetensors`` (the tensors, not the
publisher's sharding, are what engines read).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ...errors import ConfigError
from . import family as family_class

#: tokenizer files copied as they are
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt")


def write_published(src, dst, overwrite: bool = False) -> Path:
    """The textdiff folder ``src`` (converted from a published checkpoint) in its publisher's layout at ``dst``."""
    from safetensors.torch import save_file

    from ..format import read_pipeline, staged_folder
    from ..loading import iter_tensors

    src = Path(src)
    origin = read_pipeline(src).get("published")
    if not isinstance(origin, dict) or "family" not in origin or not isinstance(origin.get("config"), dict):
        raise ConfigError(f"{str(src)!r} was not converted from a published layout textdiff can write back "
                          "(no 'published' record in its textdiff.json); convert the publisher's folder first")
    fam = family_class(origin["family"])
    tensors = {}
    for name, tensor in iter_tensors(src):
        tensors[name] = tensor
    out = fam.write_back(tensors, origin["config"])
    with staged_folder(dst, "model", overwrite=overwrite, sources=[src], what="DST", flag="--overwrite") as tmp:
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(origin["config"], indent=2, sort_keys=True))
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
    return Path(dst)
