"""Checkpoints written atomically, and resumed exactly.

A checkpoint folder ``checkpoint-<step>/`` holds::

    model.safetensors + config.json    the denoiser (save_pretrained)
    ema.safetensors                    the EMA weights (when enabled)
    optimizer.pt                       optimizer state keyed by parameter name, unsharded (any launch resumes it)
    optimizer-zero-rank*-of-*.pt       instead, under DeepSpeed: each process's ZeRO partition
    scheduler.pt                       lr schedule state (every .pt is loaded with weights_only=True)
    rng_state-<rank>.safetensors       each process's CPU (and CUDA) random state (dropout), restored on resume
    trainer_state.json                 step, rows consumed, elapsed time
    objective-<rank>.safetensors       (when the step's objective keeps state, e.g. RL's rollout buffer) per process
    integrity.json                     every other file's size and SHA-256, written LAST (integrity.py)

It is written to a temporary sibling folder (named with the run's id and the writer's pid + random
suffix) and renamed into place, so a run killed mid-save leaves the previous checkpoint intact and
never a half-written one; the leftovers are removed by the next run of the same folder that takes
its lock (``runfolder.py``, ``runlock.py``), and nothing else is. Sharded
training (FSDP2, DeepSpeed) is handled in ``distributed.py``; the layout is the same.

Resuming (:func:`select_checkpoint`) checks the newest checkpoint's integrity record and loads its
weights strictly (every tensor of the model present with its shape); a damaged one is skipped with
a warning for the previous one, and when none is intact the error names the first damaged file.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from ..models.format.writer import commit, temp_sibling
from ..models.format.writer import new_id as writer_tag  # noqa: F401  (this run's tag, for the loop)
from .distributed import full_model_state, load_optimizer_state, optimizer_files
from .integrity import CheckpointError, check_integrity, write_integrity
from .runfolder import run_scoped_id

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def save_checkpoint(acc, out_dir: Path, step: int, model, optimizer, scheduler, ema, state: dict, keep: int,
                    tag: str = "", objective_state: Optional[tuple[dict, dict]] = None) -> Path:
    """Write ``checkpoint-<step>``. Call on EVERY process: sharded weights, EMA and optimizer state
    are gathered collectively; the main process writes everything but per-rank DeepSpeed shards.
    ``tag``: this run's writer tag (the same on every process), naming the temporary folder.
    ``objective_state``: this process's (tensors, string metadata) of the step's objective, or None."""
    raw = acc.unwrap_model(model)
    weights = full_model_state(model)  # None unless sharded (then the main process saves from ``raw``)
    ema_state = ema.state_dict() if ema is not None else None
    optimizer_state = optimizer_files(acc, optimizer, model)
    final = out_dir / f"checkpoint-{step}"
    writer_id = run_scoped_id(out_dir, tag or "run")
    tmp = temp_sibling(final, writer_id)  # one name for all processes of this run
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    for name, value in optimizer_state.items():
        torch.save(value, tmp / name)
    save_file(_rng_state(), str(tmp / f"rng_state-{acc.process_index}.safetensors"))  # dropout noise resumes exactly
    if objective_state is not None:
        save_file(objective_state[0], str(tmp / f"objective-{acc.process_index}.safetensors"), metadata=objective_state[1])
    if acc.is_main_process:
        raw.save_pretrained(tmp, safe_serialization=True, **({} if weights is None else {"state_dict": weights}))
        if ema_state is not None:
            save_file(ema_state, str(tmp / "ema.safetensors"))
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    acc.wait_for_everyone()  # every shard is on disk before the folder becomes a checkpoint
    if acc.is_main_process:
        write_integrity(tmp)  # last: a folder with a record was complete
        commit(tmp, final, writer_id)
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
    """The newest committed checkpoint, unverified (see :func:`select_checkpoint`)."""
    ckpts = [p for p in list_checkpoints(out_dir) if (p / "trainer_state.json").is_file()]
    return ckpts[-1] if ckpts else None


def load_weights(path: Path, model) -> None:
    """Weights of checkpoint ``path`` into the PLAIN model, before accelerate wraps (and shards) it.

    Strict: every tensor of the model must be in the file with its shape (tied weights saved once
    count for all their names), and the file may hold no other; else :class:`CheckpointError`."""
    file = Path(path) / "model.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{file} is missing")
    try:
        state = load_file(str(file))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise CheckpointError(f"{file} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if hasattr(model, "load_adapter_checkpoint"):  # LoRA: merged base weights + the adapters beside them
        model.load_state_dict(state, strict=False)
        model.load_adapter_checkpoint(path)
        return
    expected = model.state_dict()
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape differs
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise CheckpointError(f"{file}: {detail[:200]}") from None
    loaded = set(expected) - set(result.missing_keys)
    ptr = {k: (v.data_ptr(), tuple(v.shape)) for k, v in expected.items()}
    loaded_ptrs = {ptr[k] for k in loaded}
    missing = [k for k in result.missing_keys if ptr[k] not in loaded_ptrs]  # a tied twin was loaded: fine
    if missing or result.unexpected_keys:
        what = f"lacks {len(missing)} tensor(s), e.g. {missing[0]!r}" if missing else \
            f"has tensor(s) the model does not, e.g. {result.unexpected_keys[0]!r}"
        raise CheckpointError(f"{file} {what}")


def verify_checkpoint(path: Path) -> dict:
    """Integrity record and trainer state of checkpoint ``path``; returns the trainer state."""
    check_integrity(path)
    file = Path(path) / "trainer_state.json"
    try:
        state = json.loads(file.read_text())
        int(state["step"]), int(state["rows_seen"]), float(state["elapsed"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{file} is missing or not a valid trainer state") from None
    return state


def select_checkpoint(out_dir: Path, model, say=print) -> Optional[Path]:
    """The newest intact checkpoint of ``out_dir``, its weights loaded into ``model``; older ones
    are tried in turn when the newest is damaged (with a warning). None when there is none at all."""
    found = list_checkpoints(out_dir)
    if not found:
        return None
    first_error = None
    for i, ckpt in enumerate(reversed(found)):
        try:
            verify_checkpoint(ckpt)
            load_weights(ckpt, model)
        except CheckpointError as e:
            first_error = first_error or str(e)
            older = found[-2 - i].name if i + 1 < len(found) else None
            say(f"warning: {ckpt.name} is damaged ({e}); " + (f"falling back to {older}" if older else "no older checkpoint"),
                file=sys.stderr)
            continue
        return ckpt
    raise CheckpointError(f"no intact checkpoint in {str(out_dir)!r} ({first_error}); "
                          "start a new run in another output_dir, or restore the folder from a backup")


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


def load_objective_state(path: Path, rank: int) -> Optional[tuple[dict, dict]]:
    """(tensors, metadata) the objective of process ``rank`` kept in checkpoint ``path``, or None."""
    file = Path(path) / f"objective-{rank}.safetensors"
    if not file.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
