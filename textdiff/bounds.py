"""Requests whose cost is known before any work: checked against what the model and the machine
allow, with a one-line error instead of a process that allocates until it is killed.

* steps: a sampler step refines the positions still to decode; more than
  :data:`STEPS_PER_POSITION` steps per position to decode changes nothing measurable (the grid is
  already finer than any decision it makes) and only costs time. ``steps=10**12`` would also
  allocate its time grid (8 bytes a step) before the first step.
* memory: every step holds at least the network's logits of the window, ``rows × window ×
  vocabulary`` numbers of the network's dtype (a LOWER bound: activations, caches and the
  samplers' float64 chunks come on top). When even that exceeds the memory the device has free,
  the request cannot run.
"""
from __future__ import annotations

from typing import Optional

from .errors import ConfigError

#: the most steps per position to decode a request may ask for
STEPS_PER_POSITION = 1000
GIB = 1024 ** 3


def check_steps(steps: int, positions: int) -> None:
    """``steps`` against the ``positions`` to decode (one-line error past the bound)."""
    limit = STEPS_PER_POSITION * max(1, positions)
    if steps > limit:
        raise ConfigError(f"steps={steps:,} is more than {STEPS_PER_POSITION} per position to decode ({positions}), "
                          f"which changes nothing but the time taken; use steps <= {limit:,} (e.g. steps={positions})")


def check_memory(rows: int, window: int, vocab_size: int, device=None,
                 advice: str = "use fewer prompts or fewer new tokens per window (block_size)", item_bytes: int = 4) -> None:
    """``rows`` x ``window`` positions x ``vocab_size`` numbers of ``item_bytes`` each (the logits)
    against the memory free on ``device`` (no check when it cannot be read)."""
    need = rows * window * vocab_size * item_bytes
    free = free_memory(device)
    if free is None or need <= free:
        return
    raise ConfigError(f"{rows} row(s) x {window} positions x {vocab_size:,} tokens need at least {need / GIB:.1f} GiB "
                      f"at once, more than the {free / GIB:.1f} GiB free on {_name(device)}; {advice}")


def free_memory(device=None) -> Optional[int]:
    """Bytes free on ``device``: the GPU's (``torch.cuda.mem_get_info``) or the machine's available
    memory (``MemAvailable`` of /proc/meminfo); None when unknown (other systems, meta devices)."""
    import torch

    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception:  # noqa: BLE001  no driver / another process holds it: do not guess
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _name(device) -> str:
    return "this machine" if device is None or str(device).startswith("cpu") else str(device)


def logit_bytes(model) -> int:
    """Bytes per logit of ``model``: its parameters' element size (2 for bf16 / fp16), else 2."""
    try:
        return int(next(model.parameters()).element_size())
    except (AttributeError, StopIteration, TypeError):
        return 2
