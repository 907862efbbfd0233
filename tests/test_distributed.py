"""Distributed training: `accelerate launch` with 2 CPU processes (gloo) trains exactly like one
process with the same global batch, and checkpoints move between 1 and 2 processes both ways.

DDP and FSDP2 run in CI (FSDP through tests/fsdp_on_cpu.py, since accelerate allows FSDP only on
GPUs while torch's FSDP2 runs on CPU with gloo), LoRA included; DeepSpeed ZeRO-2 and ZeRO-3 (LoRA, exact
same-size resume, gathered weights) run where deepspeed and a C++ compiler are installed."""
import json
import os
import shutil
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


BACKENDS = {  # accelerate config -> (extra environment, launch target)
    "ddp": ({"ACCELERATE_USE_CPU": "1"}, ["-m", "textdiff.cli"]),  # gloo
    "fsdp": ({}, [str(ROOT / "tests" / "fsdp_on_cpu.py")]),
    "deepspeed_zero2": ({"DS_ACCELERATOR": "cpu"}, ["-m", "textdiff.cli"]),  # gloo (textdiff asks for it without CUDA)
    "deepspeed_zero3": ({"DS_ACCELERATOR": "cpu"}, ["-m", "textdiff.cli"]),
}


def launch_two_processes(recipe_file: Path, *overrides: str, backend: str = "ddp") -> subprocess.CompletedProcess:
    """2 CPU processes through accelerate's torchrun launcher."""
    extra, target = BACKENDS[backend]
    env = {**os.environ, **extra, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    for attempt in range(2):  # a free port can be taken by another process before torchrun binds it: retry once
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / f"recipes/accelerate/{backend}.yaml"),
               "--num_processes", "2", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               *target, "train", str(recipe_file), *overrides]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode == 0 or "address already in use" not in done.stderr.lower():
            break
    assert done.returncode == 0, done.stderr[-3000:]
    return done


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
    done = launch_two_processes(recipe_file, "train.batch_size=4", "train.max_steps=4", "--resume")
    said = done.stdout.splitlines()
    assert sum(line.startswith("saved ") for line in said) == 1  # the main process speaks, once
    assert sum(line.startswith("tokenizer: ") for line in said) == 1
    # one process resumes the two-process checkpoint: steps 5-6
    train(load_recipe(raw=tiny(output_dir=str(tmp_path / "mixed"), train={**one, "max_steps": 6})), resume=True)

    ref, got = losses(tmp_path / "ref"), losses(tmp_path / "mixed")
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    state = json.loads((tmp_path / "mixed" / "checkpoint-4" / "trainer_state.json").read_text())
    # 8 rows per step at steps 3-4 with train.batch_size=4: the launch really ran two processes
    assert state["step"] == 4 and state["rows_seen"] == 32


def final_weights(run):
    from safetensors.torch import load_file

    return load_file(str(Path(run) / "final" / "model.safetensors"))


@pytest.mark.slow
def test_fsdp2_matches_one_process_and_its_gathered_checkpoints_cross_both_ways(tiny, tmp_path):
    """FSDP2 shards parameters, optimizer state and EMA; checkpoints hold them gathered, so a
    one-process run resumes an FSDP checkpoint exactly (Adam moments included) and vice versa."""
    one = {"batch_size": 8, "max_steps": 6, "eval_every": 100, "save_every": 2, "log_every": 1,
           "mixed_precision": "no", "ema": 0.9}
    train(load_recipe(raw=tiny(output_dir=str(tmp_path / "ref"), train=one)))

    mixed = tiny(output_dir=str(tmp_path / "mixed"), train={**one, "max_steps": 2})
    train(load_recipe(raw=mixed))  # one process: steps 1-2
    recipe_file = tmp_path / "mixed.yaml"
    recipe_file.write_text(yaml.safe_dump(mixed))
    launch_two_processes(recipe_file, "train.batch_size=4", "train.max_steps=4", "--resume", backend="fsdp")  # 3-4
    train(load_recipe(raw=tiny(output_dir=str(tmp_path / "mixed"), train={**one, "max_steps": 6})), resume=True)  # 5-6

    ref, got = losses(tmp_path / "ref"), losses(tmp_path / "mixed")
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    ckpt = tmp_path / "mixed" / "checkpoint-4"
    assert json.loads((ckpt / "trainer_state.json").read_text())["rows_seen"] == 32  # 2 processes x 4 rows
    import torch
    from safetensors.torch import load_file

    state = torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]
    weights = load_file(str(ckpt / "model.safetensors"))
    for name, moments in state.items():  # gathered: every Adam moment has its parameter's full shape
        assert moments["exp_avg"].shape == weights[name].shape, name
    want, have = final_weights(tmp_path / "ref"), final_weights(tmp_path / "mixed")  # EMA weights
    assert want.keys() == have.keys()
    for name in want:
        torch.testing.assert_close(have[name], want[name], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_deepspeed_zero2_matches_one_process_and_resumes(tiny, tmp_path):
    pytest.importorskip("deepspeed")
    if shutil.which("c++") is None:  # DeepSpeed's CPU backend compiles its shared-memory op on first use
        pytest.skip("DeepSpeed on CPU needs a C++ compiler")
    one = {"batch_size": 8, "max_steps": 6, "eval_every": 100, "save_every": 2, "log_every": 1, "mixed_precision": "no"}
    train(load_recipe(raw=tiny(output_dir=str(tmp_path / "ref"), train=one)))

    raw = tiny(output_dir=str(tmp_path / "ds"), train=one)
    recipe_file = tmp_path / "ds.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    ds = ["train.batch_size=2", "train.grad_accum=2"]  # 2 processes x 2 micro-batches x 2 rows = 8 rows per step
    launch_two_processes(recipe_file, *ds, "train.max_steps=2", backend="deepspeed_zero2")
    launch_two_processes(recipe_file, *ds, "train.max_steps=4", "--resume", backend="deepspeed_zero2")
    assert sorted(p.name for p in (tmp_path / "ds" / "checkpoint-4").glob("optimizer-zero-*")) == [
        "optimizer-zero-rank0-of-2.pt", "optimizer-zero-rank1-of-2.pt"]
    # one process resumes the DeepSpeed checkpoint: weights are exact, ZeRO's Adam moments restart
    train(load_recipe(raw=tiny(output_dir=str(tmp_path / "ds"), train=one)), resume=True)

    ref, got = losses(tmp_path / "ref"), losses(tmp_path / "ds")
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 6):  # step 5's loss is computed from the weights of checkpoint-4
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    assert got[6] != pytest.approx(ref[6], rel=1e-7)  # fresh Adam moments change the step-5 update


@pytest.mark.slow
def test_deepspeed_zero3_lora_matches_one_process_resumes_exactly_and_saves_gathered_weights(tiny, tmp_path):
    """ZeRO-3 partitions the parameters themselves: the checkpoints still hold full (gathered) merged
    weights and adapters, and a same-size resume restores Adam moments and fp32 master partitions."""
    pytest.importorskip("deepspeed")
    pytest.importorskip("peft")
    if shutil.which("c++") is None:
        pytest.skip("DeepSpeed on CPU needs a C++ compiler")
    import torch
    from safetensors.torch import load_file

    lora = {"r": 4, "alpha": 8, "target_modules": ["qkv", "proj"], "modules_to_save": ["lm_head"]}
    one = {"batch_size": 8, "max_steps": 4, "eval_every": 2, "save_every": 2, "log_every": 1, "mixed_precision": "no",
           "lr": 1e-2}
    train(load_recipe(raw=tiny(output_dir=str(tmp_path / "ref"), train=one, lora=lora)))

    raw = tiny(output_dir=str(tmp_path / "z3"), train=one, lora=lora)
    recipe_file = tmp_path / "z3.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    ds = ["train.batch_size=2", "train.grad_accum=2"]  # 2 processes x 2 micro-batches x 2 rows = 8 rows per step
    launch_two_processes(recipe_file, *ds, "train.max_steps=2", backend="deepspeed_zero3")
    launch_two_processes(recipe_file, *ds, "train.max_steps=4", "--resume", backend="deepspeed_zero3")

    ref, got = losses(tmp_path / "ref"), losses(tmp_path / "z3")
    assert sorted(got) == [1, 2, 3, 4]
    for step in range(1, 5):  # steps 3-4 need the restored Adam moments of both partitions
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    assert sorted(p.name for p in (tmp_path / "z3" / "checkpoint-2").glob("optimizer-zero-*")) == [
        "optimizer-zero-rank0-of-2.pt", "optimizer-zero-rank1-of-2.pt"]
    want, have = final_weights(tmp_path / "ref"), final_weights(tmp_path / "z3")  # merged W + BA, full shapes
    assert want.keys() == have.keys() and not any("lora" in k for k in have)
    for name in want:
        torch.testing.assert_close(have[name], want[name], rtol=1e-4, atol=1e-6)
    a_ref = load_file(str(tmp_path / "ref" / "final" / "adapter" / "adapter_model.safetensors"))
    a_z3 = load_file(str(tmp_path / "z3" / "final" / "adapter" / "adapter_model.safetensors"))
    assert a_ref.keys() == a_z3.keys() and any("lora_B" in k for k in a_z3)
    for name in a_ref:
        assert a_z3[name].shape == a_ref[name].shape and a_z3[name].numel() > 0, name
        torch.testing.assert_close(a_z3[name], a_ref[name], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_fsdp2_lora_matches_one_process_and_saves_merged_gathered_weights(tiny, tmp_path):
    """LoRA under FSDP2: frozen and trainable parameters share the sharded blocks; the final folder
    holds the merged weights and the adapters gathered from the shards, equal to one process's."""
    pytest.importorskip("peft")
    import torch
    from safetensors.torch import load_file

    lora = {"r": 4, "alpha": 8, "target_modules": ["qkv", "proj"]}
    one = {"batch_size": 8, "max_steps": 3, "eval_every": 3, "save_every": 3, "log_every": 1, "mixed_precision": "no",
           "lr": 1e-2}
    train(load_recipe(raw=tiny(output_dir=str(tmp_path / "ref"), train=one, lora=lora)))
    raw = tiny(output_dir=str(tmp_path / "fsdp"), train=one, lora=lora)
    recipe_file = tmp_path / "fsdp.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    launch_two_processes(recipe_file, "train.batch_size=4", backend="fsdp")

    ref, got = losses(tmp_path / "ref"), losses(tmp_path / "fsdp")
    assert sorted(got) == [1, 2, 3]
    for step in range(1, 4):
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    want, have = final_weights(tmp_path / "ref"), final_weights(tmp_path / "fsdp")
    assert want.keys() == have.keys() and not any("lora" in k for k in have)
    for name in want:
        torch.testing.assert_close(have[name], want[name], rtol=1e-4, atol=1e-6)
    a_ref = load_file(str(tmp_path / "ref" / "final" / "adapter" / "adapter_model.safetensors"))
    a_fsdp = load_file(str(tmp_path / "fsdp" / "final" / "adapter" / "adapter_model.safetensors"))
    assert a_ref.keys() == a_fsdp.keys() and a_ref
    for name in a_ref:
        torch.testing.assert_close(a_fsdp[name], a_ref[name], rtol=1e-4, atol=1e-6)


def test_zero3_settings_come_from_the_recipe_and_ema_is_refused_in_one_line():
    """configure_deepspeed: the recipe's batch / accumulation / clipping win, ZeRO-3 gathers 16-bit
    weights for saving, EMA (which would need every parameter gathered each step) is refused."""
    from types import SimpleNamespace

    from textdiff.config import TrainConfig
    from textdiff.errors import ConfigError
    from textdiff.training.distributed import configure_deepspeed

    def acc(stage):
        plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": stage}})
        return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=2, gradient_accumulation_steps=1)

    a = acc(3)
    configure_deepspeed(a, TrainConfig(batch_size=4, grad_accum=3, grad_clip=0.5))
    ds = a.state.deepspeed_plugin.deepspeed_config
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (4, 3, 24)
    assert ds["gradient_clipping"] == 0.5 and ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    with pytest.raises(ConfigError, match="train.ema is not supported under DeepSpeed ZeRO-3") as e:
        configure_deepspeed(acc(3), TrainConfig(ema=0.99))
    assert "\n" not in str(e.value)
    configure_deepspeed(acc(2), TrainConfig(ema=0.99))  # ZeRO-2 keeps EMA
    with pytest.raises(ConfigError, match="stage 4 does not exist"):
        configure_deepspeed(acc(4), TrainConfig())
