"""``textdiff generate | score | convert`` on the DiffusionGemma fixture in its released layout, and the
converted folder (released layout + textdiff.json) giving the same scores and samples."""
import json

import pytest

pytest.importorskip("transformers.models.diffusion_gemma")

from published_llm_helpers import FIXTURES  # noqa: E402
from textdiff.cli import main  # noqa: E402

FOLDER = FIXTURES / "diffusion_gemma"
DECODE = ["--max-new-tokens", "8", "--block-size", "8", "--steps", "4", "--format", "jsonl", "--quiet"]


def lines(capsys):
    return [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]


@pytest.mark.slow
def test_generate_score_convert_on_the_fixture(tmp_path, capsys):
    main(["generate", "--model", str(FOLDER), "--prompt", "w1 w2 w3", "--seed", "3", *DECODE])
    sample = lines(capsys)
    assert len(sample) == 1 and sample[0]["text"].startswith("w1 w2 w3") and sample[0]["new_tokens"] >= 1
    main(["score", "--model", str(FOLDER), "--text", "w1 w2 w3", "--t-samples", "4", "--quiet"])
    score = lines(capsys)
    assert 0 < score[0]["nelbo"] < 100
    main(["convert", str(FOLDER), str(tmp_path / "dg")])
    capsys.readouterr()
    assert json.loads((tmp_path / "dg" / "config.json").read_text())["model_type"] == "diffusion_gemma"
    assert (tmp_path / "dg" / "textdiff.json").is_file()
    main(["score", "--model", str(tmp_path / "dg"), "--text", "w1 w2 w3", "--t-samples", "4", "--quiet"])
    assert lines(capsys) == score
    main(["generate", "--model", str(tmp_path / "dg"), "--prompt", "w1 w2 w3", "--seed", "3", *DECODE])
    assert lines(capsys) == sample
