"""``textdiff convert --to published``: a folder converted from LLaDA 2.0 (block-causal; SGLang and
vLLM serve it) written back in the publisher's layout gives the published tensors bit for bit (names,
shapes, dtypes, bytes) and its config.json key for key; a folder that cannot be written back says why."""
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from textdiff.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "published" / "llada2"


def tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        if f.name == "expected.safetensors":  # the fixture's recorded outputs, not weights
            continue
        with safe_open(str(f), "pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys()})
    return out


def test_llada2_round_trip_published_textdiff_published_is_bit_for_bit(tmp_path, capsys):
    ours, back, again = tmp_path / "textdiff", tmp_path / "published", tmp_path / "again"
    assert main(["convert", str(FIXTURE), str(ours)]) == 0
    assert main(["convert", str(ours), str(back), "--to", "published"]) == 0
    original, written = tensors(FIXTURE), tensors(back)
    assert sorted(written) == sorted(original)
    for name, t in original.items():
        w = written[name]
        assert w.dtype == t.dtype and w.shape == t.shape and torch.equal(w, t), name
    assert json.loads((back / "config.json").read_text()) == json.loads((FIXTURE / "config.json").read_text())
    assert (back / "tokenizer.json").read_bytes() == (FIXTURE / "tokenizer.json").read_bytes()
    # the written folder is again the published layout: it converts to the same textdiff tensors
    assert main(["convert", str(back), str(again)]) == 0
    first, second = tensors(ours), tensors(again)
    assert sorted(first) == sorted(second) and all(torch.equal(first[k], second[k]) for k in first)
    capsys.readouterr()


def test_a_folder_without_a_published_record_is_refused(tiny_trained, tmp_path, capsys):
    assert main(["convert", str(tiny_trained.final), str(tmp_path / "out"), "--to", "published"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not converted from a published layout" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
