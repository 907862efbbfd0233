"""Two "machines" on one host (issue 30, item 8): `accelerate launch` twice with the multi-machine
config (recipes/accelerate/multi_node.yaml), machine ranks 0 and 1 on 127.0.0.1, one CPU process each
(gloo), on streamed data dealt across them (document chunk c to process c mod 2). They stop at step 1,
resume across the machines, and train exactly like one process with their global batch.

Why one process can match: with ``layout: pad`` (a row per document), no shuffle window
(``shuffle_buffer: 1``) and a per-process batch of one chunk (:data:`textdiff.streaming.CHUNK`
documents), step s of the two machines reads chunks 2s and 2s + 1, exactly the rows of step s of one
process with twice the batch; the noise of a row depends only on its global index."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_distributed import free_port, losses

from textdiff.config import load_recipe
from textdiff.streaming import CHUNK
from textdiff.training.loop import train

ROOT = Path(__file__).resolve().parent.parent
DOCS = [f"document {i}: " + " ".join(f"w{(i * 7 + j) % 31}" for j in range(5 + i % 9)) for i in range(10 + 5 * CHUNK)]


def launch_two_machines(recipe_file: Path, *overrides: str) -> list[str]:
    """Machines 0 and 1 (one process each), both on 127.0.0.1; returns their stdout."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    port = str(free_port())
    machines = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "recipes/accelerate/multi_node.yaml"),
         "--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1",
         "--main_process_port", port, "--mixed_precision", "no", "-m", "textdiff.cli", "train", str(recipe_file), *overrides],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = [m.communicate(timeout=300) for m in machines]
    for m, (out, err) in zip(machines, outs):
        assert m.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


@pytest.mark.slow
def test_two_machines_train_like_one_process_on_streamed_data_and_resume(tiny, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    data = {"source": str(corpus), "max_documents": None, "streaming": True, "layout": "pad", "shuffle_buffer": 1,
            "val_documents": 10}
    steps = {"max_steps": 2, "eval_every": 100, "save_every": 1, "log_every": 1, "mixed_precision": "no", "lr": 1e-2}
    train(load_recipe(raw=tiny(output_dir=str(tmp_path / "one"), data=data, train={**steps, "batch_size": 2 * CHUNK})))
    recipe = tmp_path / "machines.yaml"
    recipe.write_text(yaml.safe_dump(tiny(output_dir=str(tmp_path / "machines"), data=data, train={**steps, "batch_size": CHUNK})))
    said = launch_two_machines(recipe, "train.max_steps=1")  # step 1 and checkpoint-1, then both stop
    assert sum(line.startswith("saved ") for out in said for line in out.splitlines()) == 1  # the main process speaks
    state = json.loads((tmp_path / "machines" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["streams"]["world"] == 2 and len(state["streams"]["positions"]) == 2  # each machine's place in its stream
    assert [p["doc"] for p in state["streams"]["positions"]] == [2 * CHUNK, 3 * CHUNK]  # next: chunks 2 and 3 (machine r reads r, r + 2, ...)
    launch_two_machines(recipe, "--resume")  # resumed across the machines: step 2
    one, got = losses(tmp_path / "one"), losses(tmp_path / "machines")
    assert sorted(got) == [1, 2] and got[1] != got[2]
    for step in (1, 2):
        assert got[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), step
    assert (tmp_path / "machines" / "final" / "model.safetensors").is_file()
