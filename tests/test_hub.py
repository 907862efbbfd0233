"""Saved folders for people without textdiff: a subprocess that cannot import textdiff loads the folder
with plain transformers (``trust_remote_code=True``) and gets the package model's logits; textdiff's
own loader never runs the folder's .py files; the model card carries recipe, metrics and usage."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from textdiff.lm import DiffusionLM
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff import build_process
from textdiff.tokenization import train_bpe, wrap_fast

CHILD = r'''
import importlib.abc, json, sys
class NoTextdiff(importlib.abc.MetaPathFinder):  # as if textdiff were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "textdiff" or name.startswith("textdiff."):
            raise ImportError("textdiff is blocked in this process")
sys.meta_path.insert(0, NoTextdiff())
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer
folders, ids_json, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(int(sys.argv[4]))  # the parent's: bit-identical sums need the same reduction order
ids = torch.tensor(json.loads(ids_json))
result = {}
for folder in folders:
    tok = AutoTokenizer.from_pretrained(folder)
    logits = {}
    for auto in (AutoModel, AutoModelForMaskedLM):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        t = torch.full((ids.shape[0],), 0.3) if getattr(model.config, "time_conditioning", False) else None
        with torch.no_grad():
            logits[auto.__name__] = model(ids, t=t).logits
    result[folder] = {"logits": logits, "mask_token_id": tok.mask_token_id, "module": type(model).__module__}
assert not any(m == "textdiff" or m.startswith("textdiff.") for m in sys.modules)
torch.save(result, out)
'''


def _lm(time_conditioning: bool, attention: str = "bidirectional", block_size=None, seed: int = 0) -> DiffusionLM:
    tok = wrap_fast(train_bpe(["the quick brown fox jumps over the lazy dog"] * 20, vocab_size=300))
    torch.manual_seed(seed)
    cfg = TextDiffConfig(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=32,
                         mask_token_id=tok.mask_token_id, time_conditioning=time_conditioning, cond_dim=16,
                         attention=attention, block_size=block_size)
    model = TextDiffModel(cfg).eval()
    with torch.no_grad():  # non-trivial adaLN weights (they start at zero)
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    process = build_process("masked", vocab_size=len(tok), mask_id=tok.mask_token_id)
    return DiffusionLM(model, tok, process, seq_len=32)


def _child(folders: list[Path], ids: torch.Tensor, tmp_path: Path) -> dict:
    out = tmp_path / "child.pt"
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ""}  # no checkout on the path; the import hook blocks the installed package too
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps([str(f) for f in folders]), json.dumps(ids.tolist()), str(out),
                          str(torch.get_num_threads())],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_plain_transformers_without_textdiff_gives_the_package_logits(tmp_path):
    """Two networks (bidirectional; time-conditioned block-causal), loaded in one child process."""
    lms = {tmp_path / "mdlm": _lm(False), tmp_path / "bd3": _lm(True, "block_causal", 4, seed=1)}
    for folder, lm in lms.items():
        lm.save_pretrained(folder)
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["auto_map"]["AutoModel"] == "modeling_textdiff.TextDiffModel"
    mask = next(iter(lms.values())).tokenizer.mask_token_id
    ids = torch.tensor([[1, 5, 7, mask, 9, 3, 2, 4], [4, mask, 8, 1, 2, 6, 5, 3]])
    got = _child(list(lms), ids, tmp_path)
    for folder, lm in lms.items():
        res = got[str(folder)]
        t = torch.full((2,), 0.3) if lm.model.config.time_conditioning else None
        with torch.no_grad():
            want = lm.model(ids, t=t).logits
        assert res["module"].startswith("transformers_modules") and res["mask_token_id"] == mask
        for logits in res["logits"].values():
            torch.testing.assert_close(logits, want, rtol=0, atol=0)  # the same code on the same weights


def test_textdiff_never_runs_the_folders_code_and_can_skip_it(tmp_path):
    lm = _lm(False)
    lm.save_pretrained(tmp_path / "m")
    for name in ("modeling_textdiff.py", "configuration_textdiff.py", "cache.py", "masks.py"):
        (tmp_path / "m" / name).write_text("raise RuntimeError('folder code executed')\n")
    again = DiffusionLM.from_pretrained(tmp_path / "m", device="cpu")  # would raise if the folder's code ran
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, lm.model(ids).logits)
    lm.save_pretrained(tmp_path / "plain", remote_code=False, model_card=False)
    assert "auto_map" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    assert not (tmp_path / "plain" / "modeling_textdiff.py").exists() and not (tmp_path / "plain" / "README.md").exists()


@pytest.mark.slow
def test_model_card_has_recipe_metrics_and_usage(tiny, tmp_path):
    from textdiff.config import load_recipe
    from textdiff.training.loop import train

    import yaml

    raw = tiny(train={"max_steps": 10, "eval_every": 5, "save_every": 10, "log_every": 5})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    final = train(load_recipe(path, []))
    lm = DiffusionLM.from_pretrained(final, device="cpu")
    lm.save_pretrained(tmp_path / "out", repo_id="me/tiny")
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    metrics = [json.loads(x) for x in (final.parent / "metrics.jsonl").read_text().splitlines()]
    last_val = [m for m in metrics if "val_nelbo" in m][-1]
    assert card.startswith("---\nlibrary_name: textdiff")
    assert "source `embedded`" in card and "max_steps: 10" in card  # data and recipe
    assert f"| val_nelbo | {last_val['val_nelbo']:,.4g} | {last_val['step']} |" in card  # metrics from metrics.jsonl
    assert 'DiffusionLM.from_pretrained("me/tiny")' in card and "trust_remote_code=True" in card
    assert (tmp_path / "out" / "config.yaml").is_file()  # the recipe travels with a re-save


FIXTURES = Path(__file__).parent / "fixtures" / "published"


@pytest.mark.slow
def test_converted_llada_and_dream_load_in_plain_transformers_with_identical_logits(tmp_path):
    """``textdiff convert`` output of LLaDA (textdiff_llama) and Dream (textdiff_qwen2, shifted
    logits) in a process without textdiff: the shipped modeling_bidirectional.py gives the
    package model's logits bit for bit, ragged padding aside (no mask: the denoiser call alone)."""
    lms = {tmp_path / name: DiffusionLM.from_pretrained(FIXTURES / name, device="cpu") for name in ("llada", "dream")}
    for folder, lm in lms.items():
        lm.save_pretrained(folder)
        cfg = json.loads((folder / "config.json").read_text())
        kind = cfg["model_type"]
        assert cfg["auto_map"]["AutoModel"] == {"textdiff_llama": "modeling_bidirectional.DiffusionLlamaModel",
                                                "textdiff_qwen2": "modeling_bidirectional.DiffusionQwen2Model"}[kind]
        assert "trust_remote_code=True" in (folder / "README.md").read_text(encoding="utf-8")
    ids = torch.tensor([[1, 5, 7, 30, 9, 3, 2, 4], [4, 11, 8, 1, 2, 6, 5, 3]])
    got = _child(list(lms), ids, tmp_path)
    for folder, lm in lms.items():
        res = got[str(folder)]
        with torch.no_grad():
            want = lm.model(ids).logits
        assert res["module"].startswith("transformers_modules") and res["mask_token_id"] == lm.tokenizer.mask_token_id
        for logits in res["logits"].values():
            torch.testing.assert_close(logits, want, rtol=0, atol=0)
    with torch.no_grad():  # Dream's shift is in the shipped code: row 1 is predicted from position 0's output
        dream = lms[tmp_path / "dream"].model
        h = dream(ids).hidden_states
        assert torch.equal(h[:, 1], h[:, 0])


@pytest.mark.slow
def test_converted_llada_moe_and_llada2_load_in_plain_transformers_with_identical_logits(tmp_path):
    """The MoE denoisers (Qwen3-MoE with a shared expert; GLM-4-MoE, block-causal) ship modeling_moe.py
    next to modeling_bidirectional.py; without textdiff they give the package model's logits bit for bit."""
    lms = {tmp_path / name: DiffusionLM.from_pretrained(FIXTURES / name, device="cpu") for name in ("llada_moe", "llada2")}
    for folder, lm in lms.items():
        lm.save_pretrained(folder)
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["auto_map"]["AutoModel"].startswith("modeling_moe.") and (folder / "modeling_moe.py").is_file()
    ids = torch.tensor([[1, 5, 7, 30, 9, 3, 2, 4], [4, 11, 8, 1, 2, 6, 5, 3]])
    got = _child(list(lms), ids, tmp_path)
    for folder, lm in lms.items():
        with torch.no_grad():
            want = lm.model(ids).logits
        for logits in got[str(folder)]["logits"].values():
            torch.testing.assert_close(logits, want, rtol=0, atol=0)


def test_textdiff_never_runs_a_converted_folders_code(tmp_path):
    lm = DiffusionLM.from_pretrained(FIXTURES / "dream", device="cpu")
    lm.save_pretrained(tmp_path / "m")
    shipped = sorted(p.name for p in (tmp_path / "m").glob("*.py"))
    assert shipped == ["cache.py", "configuration_textdiff.py", "masks.py", "modeling_bidirectional.py", "modeling_textdiff.py"]
    for name in shipped:
        (tmp_path / "m" / name).write_text("raise RuntimeError('folder code executed')\n")
    ids = torch.tensor([[1, 5, 7, 9]])
    for kwargs in ({"device": "cpu"}, {"device_map": "cpu"}):  # transformers' Auto classes, and textdiff's own reader
        again = DiffusionLM.from_pretrained(tmp_path / "m", **kwargs)
        assert type(again.model).__module__ == "textdiff.models.modeling_bidirectional"
        with torch.no_grad():
            assert torch.equal(again.model(ids).logits, lm.model(ids).logits)
