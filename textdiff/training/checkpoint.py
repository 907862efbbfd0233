"""Checkpoints written atomically, and resumed exactly.

A checkpoint folder ``checkpoint-<step>/`` holds::

    model.safetensors + config.json    the denoiser (save_pretrained)
    ema.safetensors                    the EMA weights (when enabled)
    optimizer.pt                       optimizer state keyed by parameter name, unsharded (any launch resumes it)
    optimizer-zero-rank*-of-*.pt       instead, under DeepSpeed: each process's ZeRO partition
    scheduler.pt                       lr schedule state (every .pt is loaded with weights_only=True)
    rng_state-<rank>.safetensors       each process's CPU (and CUDA) random state (dropout), restored on resume
    trainer_state.json                 step, rows consumed, elapsed time

It is written to a temporary sibling folder and renamed into place, so a run killed mid-save leaves
the previous checkpoint intact and never a half-written one. Sharded training (FSDP2, DeepSpeed) is
handled in ``distributed.py``; the layout is the same.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from .distributed import full_model_state, load_optimizer_state, optimizer_files

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def atomic_dir(final: Path) -> Path:
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``, replacing an older ``final`` only after the new one is complete."""
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(acc, out_dir: Path, step: int, model, optimizer, scheduler, ema, state: dict, keep: int) -> Path:
    """Write ``checkpoint-<step>``. Call on EVERY process: sharded weights, EMA and optimizer state
    are gathered collectively; the main process writes everything but per-rank DeepSpeed shards."""
    raw = acc.unwrap_model(model)
    weights = full_model_state(model)  # None unless sharded (then the main process saves from ``raw``)
    ema_state = ema.state_dict() if ema is not None else None
    optimizer_state = optimizer_files(acc, optimizer, model)
    final = out_dir / f"checkpoint-{step}"
    tmp = out_dir / f".tmp-{final.name}"  # one name for all processes
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    for name, value in optimizer_state.items():
        torch.save(value, tmp / name)
    save_file(_rng_state(), str(tmp / f"rng_state-{acc.process_index}.safetensors"))  # dropout noise resumes exactly
    if acc.is_main_process:
        raw.save_pretrained(tmp, safe_serialization=True, **({} if weights is None else {"state_dict": weights}))
        if ema_state is not None:
            save_file(ema_state, str(tmp / "ema.safetensors"))
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    acc.wait_for_everyone()  # every shard is on disk before the folder becomes a checkpoint
    if acc.is_main_process:
        commit_dir(tmp, final)
        for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return state


def list_checkpoints(out_dir: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in Path(out_dir).glob("checkpoint-*") if (m := _CKPT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    ckpts = [p for p in list_checkpoints(out_dir) if (p / "trainer_state.json").is_file()]
    return ckpts[-1] if ckpts else None


def load_weights(path: Path, model) -> None:
    """Weights of checkpoint ``path`` into the PLAIN model, before accelerate wraps (and shards) it."""
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"), strict=False)
    if hasattr(model, "load_adapter_checkpoint"):  # LoRA: adapters live beside the merged weights
        model.load_adapter_checkpoint(path)


def load_checkpoint(acc, path: Path, model, optimizer, scheduler, ema) -> dict:
    """Restore optimizer, schedule, EMA and RNG state after ``accelerate.prepare`` (call on every
    process); returns the trainer state. The weights came earlier, through :func:`load_weights`."""
    load_optimizer_state(acc, path, optimizer, model)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    if ema is not None and (path / "ema.safetensors").is_file():
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    rng = path / f"rng_state-{acc.process_index}.safetensors"
    if rng.is_file():  # a process that did not exist when saving keeps its fresh state
        state = load_file(str(rng))
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
    return json.loads((path / "trainer_state.json").read_text())
