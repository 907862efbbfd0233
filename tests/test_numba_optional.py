"""numba is an optional extra (``textdiff[fast]``): with it the top-p cut runs as compiled row loops, without
it as eager PyTorch passes, and every top-p sampler draws the same tokens either way.

Both runs are child processes running the same generations: one as installed (compiled loops), one in
which ``import numba`` fails (``sys.modules["numba"] = None``: as if the extra were not installed)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys
if sys.argv[1] == "without":
    sys.modules["numba"] = None  # import numba fails: the core install
import torch
torch.set_num_threads(1)
import textdiff
from textdiff.generation import generate
from textdiff.models.configuration_textdiff import TextDiffConfig
from textdiff.models.modeling_textdiff import TextDiffModel
from textdiff.samplers import nucleus

V, MASK = 600, 599  # wide enough that the nucleus cut has a crossing bin to resolve
KNOBS = [{"temperature": 0.8, "top_p": 0.9}, {"temperature": 1.0, "top_p": 0.6}]
SAMPLERS = {  # every sampler, and the confidence variants whose scores come from the filtered p~
    "ancestral": {}, "first_hitting": {}, "euler": {}, "analytic": {}, "remdm": {}, "threshold": {},
    "confidence": {}, "confidence/sampling": {"score_from": "sampling"},
    "confidence/entropy": {"score_from": "sampling", "ordering": "entropy"},
    "confidence/margin": {"score_from": "sampling", "ordering": "margin"},
}
out = {"jit": nucleus._numba_ready(), "tokens": {}}
for pname in ("masked", "uniform", "sedd_absorb", "sedd_uniform"):
    process = textdiff.build_process(pname, vocab_size=V, mask_id=MASK)
    torch.manual_seed(0)
    model = TextDiffModel(TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2,
                                         max_position_embeddings=32, initializer_range=0.5)).eval()
    for key, extra in SAMPLERS.items():
        name = key.split("/")[0]
        if not textdiff.registry.lookup("sampler", name).serves(process):
            continue
        for i, knobs in enumerate(KNOBS):
            sampler = textdiff.build_sampler({"name": name, **knobs, **extra}, process)
            res = generate(model, process, sampler, [[1, 2], [3], []], max_new_tokens=10, steps=10, seed=5)
            out["tokens"][f"{pname}/{key}/{i}"] = res.sequences.tolist()
json.dump(out, open(sys.argv[2], "w"))
'''


def _run(mode: str, tmp_path: Path) -> dict:
    path = tmp_path / f"{mode}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("NUMBA_DISABLE_JIT", None)
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(path.read_text())


@pytest.mark.slow
def test_top_p_samplers_draw_the_same_tokens_with_and_without_numba(tmp_path):
    eager = _run("without", tmp_path)
    assert not eager["jit"]  # the core install: the eager passes
    assert len(eager["tokens"]) >= 20  # every top-p sampler x process pair, two settings each
    if importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed: only the eager path ran")
    compiled = _run("with", tmp_path)
    assert compiled["jit"]  # the compiled row loops
    assert set(compiled["tokens"]) == set(eager["tokens"])
    differ = [k for k in compiled["tokens"] if compiled["tokens"][k] != eager["tokens"][k]]
    assert not differ, f"tokens differ with and without numba: {differ}"
