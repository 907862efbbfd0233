"""The recipes shipped with the package (package data ``textdiff/recipes/``, the repository's
``recipes/`` folder): addressable by name from any folder, so a pip install needs no checkout.

    textdiff train quickstart                 # = recipes/quickstart.yaml
    textdiff recipes                          # list them, with their first comment line
    textdiff recipes show sft-llada-lora      # print one, to copy and edit
    accelerate launch --config_file "$(textdiff recipes path accelerate/ddp)" -m textdiff.cli train quickstart
"""
from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

#: package data (``textdiff/recipes``, a link to the repository's ``recipes/`` in a checkout)
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


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


def recipe_file(name) -> Path:
    """A recipe argument: an existing YAML file, else the shipped recipe of that name (``quickstart``,
    or ``recipes/quickstart.yaml`` from a folder without one); a one-line error otherwise."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = str(name).removeprefix("recipes/").removesuffix(".yaml")
    if stem and ".." not in Path(stem).parts and (RECIPES_DIR / f"{stem}.yaml").is_file():
        return RECIPES_DIR / f"{stem}.yaml"
    raise ConfigError(f"recipe {str(name)!r} is neither a YAML file nor a shipped recipe; `textdiff recipes` lists "
                      "the shipped ones, e.g. `textdiff train quickstart`")


def summary(path: Path) -> str:
    """The first comment line of a recipe file (what it is), without the ``#``."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and not line.startswith(("#!", "#SBATCH")):
            return line.lstrip("# ").strip()
    return ""
