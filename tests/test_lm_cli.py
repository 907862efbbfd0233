"""The user-facing surfaces: DiffusionLM (Python API) and the textdiff CLI."""
import json
import subprocess
import sys

import pytest

from textdiff.cli import main
from textdiff.config import load_recipe
from textdiff.errors import ConfigError
from textdiff.training.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import tiny_recipe

    tmp = tmp_path_factory.mktemp("lm")
    recipe = load_recipe(raw=tiny_recipe(tmp, train={"max_steps": 20, "eval_every": 20}))
    return train(recipe)


def test_generate_and_score_from_pretrained(trained, tmp_path):
    from textdiff import DiffusionLM

    lm = DiffusionLM.from_pretrained(trained)
    texts, out = lm.generate(["The list", "A"], max_new_tokens=12, steps=12, seed=0, return_output=True)
    assert len(texts) == 2 and texts[0].startswith("The list") and texts[1].startswith("A")
    assert 1 <= out.nfe <= 12
    again = lm.generate(["The list", "A"], max_new_tokens=12, steps=12, seed=0)
    assert again == texts  # the seed makes it repeatable
    nelbo = lm.score(["The list of things.", "Another sentence here."], t_samples=8)
    assert all(0 < v < 1e4 for v in nelbo)
    lm.save_pretrained(tmp_path / "copy")
    copy = DiffusionLM.from_pretrained(tmp_path / "copy")
    assert copy.score(["The list of things."], t_samples=8) == pytest.approx(nelbo[:1], rel=1e-5)
    assert copy.generate(["The list"], max_new_tokens=12, steps=12, seed=0)[0] == texts[0]


def test_missing_model_files_are_one_line_errors(tmp_path):
    from textdiff import DiffusionLM

    with pytest.raises(ConfigError, match="no such model folder"):
        DiffusionLM.from_pretrained(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="names no model_type, and is neither a textdiff folder"):
        DiffusionLM.from_pretrained(tmp_path / "half")
    (tmp_path / "half" / "config.json").write_text('{"model_type": "textdiff"}')
    with pytest.raises(ConfigError, match="missing textdiff.json"):
        DiffusionLM.from_pretrained(tmp_path / "half")


def test_too_long_prompt_is_refused(trained):
    from textdiff import DiffusionLM

    lm = DiffusionLM.from_pretrained(trained)
    with pytest.raises(ConfigError, match="exceeds the model's context"):
        lm.generate(["word " * 40], max_new_tokens=8)


def test_cli_generate_writes_jsonl(trained, tmp_path, capsys):
    out = tmp_path / "samples.jsonl"
    code = main(["generate", "--model", str(trained), "--prompt", "The list", "--num-samples", "2",
                 "--max-new-tokens", "8", "--steps", "8", "--format", "jsonl", "--output", str(out)])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["text"].startswith("The list") for r in rows)


def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ntrain: {max_stepz: 3}\n")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "max_stepz" in err and "\n" not in err
    assert main(["generate", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_help_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "textdiff.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: textdiff" in proc.stdout


@pytest.mark.parametrize("command", [["train"], ["generate"], ["score"], ["eval"], ["list"], ["convert"]])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0 and "usage: textdiff" in capsys.readouterr().out


@pytest.mark.slow
def test_ar_baseline_generates_through_the_same_api(tmp_path):
    from tests.conftest import tiny_recipe
    from textdiff import DiffusionLM

    recipe = load_recipe(raw=tiny_recipe(tmp_path, process={"name": "ar"}, train={"max_steps": 6, "eval_every": 6}))
    lm = DiffusionLM.from_pretrained(train(recipe))
    texts, out = lm.generate(["The list", "A"], max_new_tokens=10, seed=0, return_output=True)
    assert texts[0].startswith("The list") and texts[1].startswith("A")
    assert out.nfe == 10  # one network call per new token, with the exact KV cache
    assert lm.generate(["A"], max_new_tokens=10, seed=1) == texts[1:]  # row b of a batch uses seed + b


def test_a_block_model_scores_texts_of_any_length(tiny, tmp_path):
    """BD3-LM conditions on whole blocks: the last block is filled with scored EOS pads, so texts of
    every length get a finite bound, and pads add to it (−log p(text, pads) >= −log p(text))."""
    from textdiff import DiffusionLM

    raw = tiny(model={"attention": "block_causal", "block_size": 4}, process={"name": "block", "block_size": 4},
               train={"max_steps": 4, "eval_every": 4})
    lm = DiffusionLM.from_pretrained(train(load_recipe(raw=raw)))
    texts = ["a", "a b", "a b c", "The list of things.", "Another sentence here, longer."]
    lengths = {len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) % 4 for t in texts}
    assert len(lengths) >= 3  # several fill levels of the last block
    nelbo = lm.score(texts, t_samples=4)
    assert all(0 < v < 1e4 for v in nelbo)
    assert lm.score(texts, t_samples=4) == nelbo  # seeded


def test_version_flag(capsys):
    import textdiff

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"textdiff {textdiff.__version__}"


def test_jsonl_and_score_output_is_utf8_not_escaped(trained, tmp_path, capsys):
    prompt = "Grüße aus 東京"
    out = tmp_path / "s.jsonl"
    assert main(["generate", "--model", str(trained), "--prompt", prompt, "--max-new-tokens", "4", "--format", "jsonl",
                 "--output", str(out)]) == 0
    raw = out.read_text(encoding="utf-8")
    assert prompt in raw and "\\u" not in raw and json.loads(raw)["prompt"] == prompt
    assert main(["score", "--model", str(trained), "--text", prompt, "--t-samples", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert prompt in line and json.loads(line)["text"] == prompt


def test_progress_bars_on_a_terminal_only_and_quiet_flag(trained, capsys, monkeypatch):
    args = ["generate", "--model", str(trained), "--prompt", "The", "--max-new-tokens", "6", "--steps", "6"]
    assert main(args) == 0  # stderr is not a terminal under pytest: no bar
    err = capsys.readouterr().err
    assert "\r" not in err and "tokens/s]" in err  # the summary line still gives the speed
    monkeypatch.setenv("TEXTDIFF_PROGRESS_EVERY", "0")  # as in a log: plain lines (here one per step)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "generate: 6/6 step (100%)" in err and "tok/s" in err
    monkeypatch.delenv("TEXTDIFF_PROGRESS_EVERY")
    monkeypatch.setenv("TEXTDIFF_PROGRESS", "1")  # as on a terminal
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "generate" in err and "tok/s" in err and "6/6" in err
    assert main([*args, "--quiet"]) == 0
    assert "tok/s" not in capsys.readouterr().err
    assert main(["score", "--model", str(trained), "--text", "a b", "--text", "c d", "--t-samples", "2"]) == 0
    err = capsys.readouterr().err
    assert "score" in err and "2/2" in err and "tok/s" in err
