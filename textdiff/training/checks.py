"""Checks of a recipe against the files it names, run before a training run writes anything.

The recipe's own fields and cross-section rules are validated when it is loaded (``config.py``);
what needs a file on disk is checked here: a fine-tuning start (``train.init_from``) must have been
trained with a process the recipe's process can continue.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Recipe
from ..errors import ConfigError, IncompatibleError
from ..dataclass_io import make_config
from ..registry import lookup


def check_init_from(recipe: Recipe) -> None:
    """``train.init_from``'s saved process must be the recipe's, or one of its family (a block
    diffusion model fine-tuned from a masked one and back), with the same time conditioning."""
    source = recipe.train.init_from
    if source is None:
        return
    from ..models.format import PIPELINE_FILE, PUBLISHED, folder_kind, saved_process
    from ..models.loading import looks_local, resolve_model_path

    folder = Path(source).expanduser()
    if not folder.is_dir():
        if folder.exists() or looks_local(str(source)):
            resolve_model_path(source, what="train.init_from folder")  # "no such folder" / "is a file"
        return  # a hub id: resolved when the run loads it
    if folder_kind(folder) == PUBLISHED or recipe.adapt is not None:  # (adapt: an AR model, checked when loaded)
        return  # a published checkpoint: its family names the process, checked when the run loads it
    saved = saved_process(folder)
    if saved is not None:  # (a checkpoint-N folder has none)
        check_continues(saved, recipe, where=folder / PIPELINE_FILE)


def check_continues(saved: dict, recipe: Recipe, where="train.init_from") -> None:
    """The process spec ``saved`` (of the model in ``train.init_from``) against the recipe's."""
    source = recipe.train.init_from
    saved_name = saved["name"] if isinstance(saved, dict) else str(saved)
    mine = recipe.process
    try:
        saved_cls, my_cls = lookup("process", saved_name), lookup("process", mine.name)
    except ConfigError:
        raise ConfigError(f"{where} names an unknown process {saved_name!r}; was it saved by a newer textdiff?") from None
    if not (issubclass(my_cls, saved_cls) or issubclass(saved_cls, my_cls)):
        raise IncompatibleError(
            f"train.init_from={source!r} was trained with process {saved_name!r}, which process {mine.name!r} cannot "
            f"continue; set process.name={saved_name} or start from a {mine.name!r} model"
        )
    saved_t = bool(getattr(make_config("process", saved), "time_conditioning", False))  # with its defaults
    if saved_t != bool(getattr(mine, "time_conditioning", False)):
        raise IncompatibleError(
            f"train.init_from={source!r} was trained with process.time_conditioning={str(saved_t).lower()}; "
            f"set process.time_conditioning={str(saved_t).lower()} to fine-tune it"
        )
