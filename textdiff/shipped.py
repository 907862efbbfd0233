"""The recipes shipped with the package (package data ``textdiff/recipes/``, the repository's
``recipes/`` folder): addressable by name from any folder, so a pip install needs no checkout.

    textdiff train quickstart                 # = recipes/quickstart.yaml
    textdiff recipes                          # list them, with their first comment line
    textdiff recipes show sft-llada-lora      # print one, to copy and edit
    accelerate launch --config_file "$(textdiff recipes path accelerate/ddp)" -m textdiff.cli train quickstart
"""
from __future__ import annotations

from pathlib import Path

from .config import RECIPES_DIR, recipe_file  # noqa: F401  (the lookup a recipe argument goes through)
from .errors import ConfigError


def shipped_recipes() -> list[str]:
    """Names of the shipped recipes, then the accelerate launch configs as ``accelerate/NAME`` (and the
    SLURM script ``accelerate/slurm.sh``)."""
    return (sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
            + sorted(f"accelerate/{p.stem}" for p in (RECIPES_DIR / "accelerate").glob("*.yaml"))
            + sorted(f"accelerate/{p.name}" for p in (RECIPES_DIR / "accelerate").glob("*.sh")))


def shipped_recipe(name: str) -> Path:
    """The file of the shipped recipe ``name`` (``quickstart``, ``recipes/quickstart.yaml``,
    ``accelerate/ddp``); a one-line error listing them otherwise."""
    stem = str(name).removeprefix("recipes/").removesuffix(".yaml")
    for path in (RECIPES_DIR / f"{stem}.yaml", RECIPES_DIR / stem):  # a YAML recipe, or a file such as accelerate/slurm.sh
        if stem and ".." not in Path(stem).parts and path.is_file():
            return path
    raise ConfigError(f"{name!r} is not a shipped recipe; `textdiff recipes` lists them: {', '.join(shipped_recipes())}")


def summary(path: Path) -> str:
    """The first comment line of a recipe file (what it is), without the ``#``."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and not line.startswith(("#!", "#SBATCH")):
            return line.lstrip("# ").strip()
    return ""
