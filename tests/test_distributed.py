"""Distributed training: `accelerate launch` with 2 CPU processes (gloo) trains exactly like one
process with the same global batch, and checkpoints move between 1 and 2 processes both ways."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from textdiff.config import load_recipe
from textdiff.training.loop import train

ROOT = Path(__file__).resolve().parent.parent


def losses(run):
    lines = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m["train_loss"] for m in lines if "train_loss" in m}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(recipe_file: Path, *overrides: str) -> None:
    """2 CPU processes through accelerate's torchrun launcher (ACCELERATE_USE_CPU=1 -> gloo)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    for attempt in range(2):  # a free port can be taken by another process before torchrun binds it: retry once
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "recipes/accelerate/ddp.yaml"),
               "--num_processes", "2", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               "-m", "textdiff.cli", "train", str(recipe_file), *overrides]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode == 0 or "address already in use" not in done.stderr.lower():
            break
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_and_checkpoints_cross_between_them(tiny, tmp_path):
    one = {"batch_size": 8, "max_steps": 6, "eval_every": 100, "save_every": 2, "log_every": 1, "mixed_precision": "no"}
    reference = load_recipe(raw=tiny(output_dir=str(tmp_path / "ref"), train=one))
    train(reference)  # one process, global batch 8, steps 1..6

    mixed = tiny(output_dir=str(tmp_path / "mixed"), train={**one, "max_steps": 2})
    train(load_recipe(raw=mixed))  # one process: steps 1-2 and checkpoint-2
    recipe_file = tmp_path / "mixed.yaml"
    recipe_file.write_text(yaml.safe_dump(mixed))
    # two processes of 4 rows (global batch 8) resume the one-process checkpoint: steps 3-4, checkpoint-4
    launch_two_processes(recipe_file, "train.batch_size=4", "train.max_steps=4", "--resume")
    # one process resumes the two-process checkpoint: steps 5-6
    train(load_recipe(raw=tiny(output_dir=str(tmp_path / "mixed"), train={**one, "max_steps": 6})), resume=True)

    ref, got = losses(tmp_path / "ref"), losses(tmp_path / "mixed")
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    state = json.loads((tmp_path / "mixed" / "checkpoint-4" / "trainer_state.json").read_text())
    # 8 rows per step at steps 3-4 with train.batch_size=4: the launch really ran two processes
    assert state["step"] == 4 and state["rows_seen"] == 32
