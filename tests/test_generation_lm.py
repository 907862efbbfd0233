"""DiffusionLM.generate and ``textdiff generate``: sampler choice, sampler options, guidance, cache mode."""
from __future__ import annotations

import json

import pytest
import torch

import textdiff
from textdiff.cli import main
from textdiff.errors import TextDiffError
from textdiff.lm import DiffusionLM
from textdiff.models.configuration_textdiff import TextDiffConfig
from textdiff.models.modeling_textdiff import TextDiffModel

ALPHABET = "abcdefgh "


class CharTokenizer:
    """One id per character of ALPHABET; pad / eos / mask are the three ids after it."""

    pad_token_id, eos_token_id, mask_token_id = len(ALPHABET), len(ALPHABET) + 1, len(ALPHABET) + 2
    vocab_size = len(ALPHABET) + 3

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ALPHABET.index(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(ALPHABET[i] for i in ids if i < len(ALPHABET))


def make_lm():
    tok = CharTokenizer()
    torch.manual_seed(0)
    model = TextDiffModel(TextDiffConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=1, num_heads=2,
                                         mlp_ratio=2.0, max_position_embeddings=32, initializer_range=0.5)).eval()
    process = textdiff.build_process("masked", vocab_size=tok.vocab_size, mask_id=tok.mask_token_id)
    return DiffusionLM(model, tok, process)


def test_generate_picks_samplers_and_their_options_by_name():
    lm = make_lm()
    texts, out = lm.generate(["abc", "h"], max_new_tokens=6, sampler="first_hitting", seed=0, return_output=True)
    assert texts[0].startswith("abc") and texts[1].startswith("h") and out.nfe == 6
    _, fast = lm.generate(["abc"], max_new_tokens=6, steps=6, sampler="threshold", sampler_options={"threshold": 0.0},
                          seed=0, return_output=True)
    assert fast.nfe == 1
    with pytest.raises(TextDiffError, match="unknown key"):
        lm.generate(["abc"], max_new_tokens=6, sampler="threshold", sampler_options={"treshold": 0.5})
    with pytest.raises(TextDiffError, match="unknown sampler"):
        lm.generate(["abc"], max_new_tokens=6, sampler="nope")


def test_generate_with_guidance():
    lm = make_lm()
    plain = lm.generate(["abc", "de"], max_new_tokens=6, steps=6, seed=1)
    assert lm.generate(["abc", "de"], max_new_tokens=6, steps=6, seed=1, guidance_weight=0.0) == plain
    _, out = lm.generate(["abc", "de"], max_new_tokens=6, steps=6, seed=1, guidance_weight=2.0, return_output=True)
    assert out.model_calls == 2 * out.nfe


def test_cli_generate_options_reach_the_sampler(monkeypatch, tmp_path, capsys):
    lm = make_lm()
    monkeypatch.setattr(DiffusionLM, "from_pretrained", classmethod(lambda cls, path, device=None, **loading: lm))
    prompts = tmp_path / "p.txt"
    prompts.write_text("abc\nh\n")
    out = tmp_path / "o.jsonl"
    argv = ["generate", "--model", "m", "--prompt-file", str(prompts), "--max-new-tokens", "6", "--steps", "6",
            "--sampler", "confidence", "--sampler-option", "ordering=margin", "--top-k", "3", "--guidance", "1.0",
            "--seed", "3", "--format", "jsonl", "--output", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["abc", "h"] and rows[0]["text"].startswith("abc")
    assert "network forwards" in capsys.readouterr().err
    assert main(argv) == 0 and [json.loads(x) for x in out.read_text().splitlines()] == rows  # seeded: repeatable
    assert main(["generate", "--model", "m", "--prompt", "abc", "--sampler-option", "oops"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["generate", "--model", "m", "--prompt", "abc", "--top-p", "1.5"]) == 2
    assert "top_p" in capsys.readouterr().err
