"""Checkpoints written atomically, and resumed exactly.

A checkpoint folder ``checkpoint-<step>/`` holds::

    model.safetensors + config.json    the denoiser (save_pretrained)
    ema.safetensors                    the EMA weights (when enabled)
    optimizer.pt / scheduler.pt        optimizer and schedule state (loaded with weights_only=True)
    rng_state.safetensors              the CPU random state (dropout), restored on resume
    trainer_state.json                 step, rows consumed, elapsed time

It is written to a temporary sibling folder and renamed into place, so a run killed mid-save leaves
the previous checkpoint intact and never a half-written one.
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


def save_checkpoint(out_dir: Path, step: int, model, optimizer, scheduler, ema, state: dict, keep: int) -> Path:
    final = out_dir / f"checkpoint-{step}"
    tmp = atomic_dir(final)
    model.save_pretrained(tmp, safe_serialization=True)
    if ema is not None:
        save_file(ema.state_dict(), str(tmp / "ema.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng_state.safetensors"))  # dropout noise resumes exactly
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    commit_dir(tmp, final)
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in Path(out_dir).glob("checkpoint-*") if (m := _CKPT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    ckpts = [p for p in list_checkpoints(out_dir) if (p / "trainer_state.json").is_file()]
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: Path, model, optimizer, scheduler, ema) -> dict:
    """Restore weights and optimizer state in place; returns the trainer state."""
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"), strict=False)
    if ema is not None and (path / "ema.safetensors").is_file():
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    if (path / "rng_state.safetensors").is_file():
        torch.set_rng_state(load_file(str(path / "rng_state.safetensors"))["cpu"])
    return json.loads((path / "trainer_state.json").read_text())
