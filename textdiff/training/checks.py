"""Checks of a recipe against the files it names, run before a training run writes anything.

The recipe's own fields and cross-section rules are validated when it is loaded (``config.py``);
what needs a file on disk is checked here: a fine-tuning start (``train.init_from``) must have been
trained with a process the recipe's process can continue.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import Recipe
from ..errors import ConfigError, IncompatibleError
from ..registry import lookup

PIPELINE_FILE = "textdiff.json"


def check_init_from(recipe: Recipe) -> None:
    """``train.init_from``'s saved process must be the recipe's, or one of its family (a block
    diffusion model fine-tuned from a masked one and back), with the same time conditioning."""
    source = recipe.train.init_from
    if source is None:
        return
    folder = Path(source).expanduser()
    if not folder.exists():
        if str(source).startswith((".", "/", "~")):
            raise ConfigError(f"train.init_from={source!r}: no such folder; point it at a run's final/ folder")
        return  # maybe a hub name: model loading says
    if not folder.is_dir():
        raise ConfigError(f"train.init_from={source!r} is a file; point it at a run's final/ folder")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"train.init_from={source!r} is not a saved model folder (no config.json); "
                          "point it at a run's final/ folder")
    from ..models.external import check_textdiff_folder

    check_textdiff_folder(folder)  # a folder of another architecture: its own one-line error
    meta_file = folder / PIPELINE_FILE
    if not meta_file.is_file():
        return  # a Hugging Face folder without textdiff metadata: checked when it is loaded
    try:
        meta = json.loads(meta_file.read_text())
        saved = meta["process"]
        saved_name = saved["name"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{meta_file} is damaged (not the JSON textdiff writes); re-save the model") from None
    mine = recipe.process
    try:
        saved_cls, my_cls = lookup("process", saved_name), lookup("process", mine.name)
    except ConfigError:
        raise ConfigError(f"{meta_file} names an unknown process {saved_name!r}; was it saved by a newer textdiff?") from None
    if not (issubclass(my_cls, saved_cls) or issubclass(saved_cls, my_cls)):
        raise IncompatibleError(
            f"train.init_from={source!r} was trained with process {saved_name!r}, which process {mine.name!r} cannot "
            f"continue; set process.name={saved_name} or start from a {mine.name!r} model"
        )
    saved_t = bool(saved.get("time_conditioning", False))
    if saved_t != bool(getattr(mine, "time_conditioning", False)):
        raise IncompatibleError(
            f"train.init_from={source!r} was trained with process.time_conditioning={str(saved_t).lower()}; "
            f"set process.time_conditioning={str(saved_t).lower()} to fine-tune it"
        )
