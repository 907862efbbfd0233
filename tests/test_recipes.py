"""Every recipe YAML loads and validates; the quickstart recipe trains a few steps on CPU."""
from pathlib import Path

import pytest
import yaml

from textdiff.config import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TRAINING = sorted(p for p in RECIPES.glob("*.yaml"))
LAUNCH = sorted((RECIPES / "accelerate").glob("*.yaml"))


def test_there_are_recipes():
    assert {"quickstart.yaml", "mdlm-owt-small.yaml"} <= {p.name for p in TRAINING}


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_recipe_loads_and_every_line_is_commented(path):
    recipe = load_recipe(path)
    assert recipe.name
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"{path.name}: uncommented line {line!r}"


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    cfg = yaml.safe_load(path.read_text())
    assert "distributed_type" in cfg


@pytest.mark.slow
def test_quickstart_recipe_trains_a_few_steps(tmp_path):
    from textdiff.training.loop import train

    recipe = load_recipe(RECIPES / "quickstart.yaml", [
        f"output_dir={tmp_path / 'qs'}", "train.max_steps=3", "train.eval_every=3", "train.eval_batches=1",
        "train.compile=false", "train.trackers=[]", "model.num_layers=1", "model.hidden_size=64",
    ])
    final = train(recipe)
    assert (final / "model.safetensors").is_file()
