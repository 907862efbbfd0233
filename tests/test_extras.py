"""Optional extras never end in a traceback (issue 30, item 3): a missing package skips what needs it
with one line naming the extra, or is a one-line error where nothing is left to do without it. Each
test hides the package with ``sys.modules[name] = None`` (then ``import name`` raises ImportError)."""
import sys

import pytest

from textdiff.cli import main as cli
from textdiff.extras import MissingExtraError, installed, require, skip_note


def test_a_hidden_module_counts_as_missing(monkeypatch):
    assert installed("json")
    monkeypatch.setitem(sys.modules, "json", None)
    assert not installed("json")
    assert not installed("no_such_module_textdiff")
    with pytest.raises(MissingExtraError, match=r"^X needs the optional package 'json'; install it with: pip install 'textdiff\[e\]'$"):
        require("json", "e", "X")
    assert skip_note("plots", "matplotlib", "eval") == "note: plots skipped (matplotlib is not installed): pip install 'textdiff[eval]'"


def test_lora_without_peft_is_one_line_before_anything_is_written(tiny, tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.setitem(sys.modules, "peft", None)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny(output_dir=str(tmp_path / "run"), lora={"r": 2, "target_modules": ["qkv"]})))
    assert cli(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err == "error: LoRA (the recipe's lora section) needs the optional package 'peft'; install it with: pip install 'textdiff[lora]'\n"
    assert not (tmp_path / "run").exists()


def test_a_deepspeed_launch_without_deepspeed_is_one_line(monkeypatch):
    from textdiff.training.distributed import accelerator_kwargs

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'textdiff\[deepspeed\]'"):
        accelerator_kwargs()


@pytest.mark.parametrize("argv, module, extra", [(["lm-eval", "--tasks", "x"], "lm_eval", "lmeval"),
                                                 (["serve", "some/model"], "fastapi", "serve")])
def test_cli_commands_without_their_extra_exit_2_with_one_line(argv, module, extra, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and f"pip install 'textdiff[{extra}]'" in err
