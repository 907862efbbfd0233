"""The package works outside its checkout (issue 30, item 4): the recipes are package data addressable
by name from any folder, `textdiff recipes` lists / shows them, the SFT accuracy evaluation is
`textdiff eval sft`. Run from a temporary working folder with only the package on the path."""
import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from textdiff.cli import main as cli
from textdiff.config import load_recipe
from textdiff.errors import ConfigError
from textdiff.shipped import RECIPES_DIR, recipe_file, shipped_recipes

ROOT = Path(__file__).resolve().parent.parent


def test_every_recipe_file_is_declared_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["textdiff"]
    files = [p.relative_to(ROOT) for p in (ROOT / "recipes").rglob("*") if p.is_file()]
    assert files and RECIPES_DIR.resolve() == (ROOT / "recipes").resolve()
    for f in files:
        assert any(fnmatch.fnmatch(str(f), p) for p in patterns), f"{f} would not be installed"


def test_recipes_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert recipe_file("quickstart") == RECIPES_DIR / "quickstart.yaml"
    assert recipe_file("recipes/quickstart.yaml") == RECIPES_DIR / "quickstart.yaml"  # the README's spelling
    assert load_recipe("quickstart").name == "quickstart"
    (tmp_path / "quickstart").write_text("name: mine\n")  # a file of that name wins
    assert load_recipe("quickstart").name == "mine"
    with pytest.raises(ConfigError, match="does not exist and is not a shipped recipe"):
        recipe_file("../etc/passwd")
    assert "quickstart" in shipped_recipes() and "accelerate/ddp" in shipped_recipes()
    assert cli(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert any(line.startswith("quickstart ") and "Quickstart" in line for line in listing.splitlines())
    assert cli(["recipes", "show", "sft-llada-lora"]) == 0
    assert capsys.readouterr().out == (RECIPES_DIR / "sft-llada-lora.yaml").read_text()
    assert cli(["recipes", "path", "accelerate/ddp"]) == 0
    assert Path(capsys.readouterr().out.strip()).read_text() == (ROOT / "recipes" / "accelerate" / "ddp.yaml").read_text()
    assert cli(["recipes", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope' is not a shipped recipe" in err


@pytest.mark.slow
def test_eval_sft_and_train_by_name_run_in_a_temp_folder(tiny_trained, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "textdiff.cli", "eval", "sft", str(tiny_trained.final), "--per-task", "2",
                          "--tasks", "copy", "reverse"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Loading weights" not in run.stderr  # the CLI silences transformers' bars here too
    result = json.loads(run.stdout)
    assert set(result) == {"copy", "reverse", "all"} and all(0.0 <= v <= 1.0 for v in result.values())
    bad = subprocess.run([sys.executable, "-m", "textdiff.cli", "eval", "sft", str(tiny_trained.final), "--per-task", "x"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: textdiff eval sft:") and bad.stderr.count("\n") == 1
    train = subprocess.run([sys.executable, "-m", "textdiff.cli", "train", "quickstart", "train.max_steps=1",
                            "data.max_documents=30", "model.num_layers=1", "train.eval_every=1", "train.eval_batches=1",
                            "train.batch_size=2", "train.trackers=[]", f"output_dir={tmp_path / 'run'}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
