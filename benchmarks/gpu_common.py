"""What the sections of ``benchmarks/gpu.py`` share: the run's settings, time budgets, side-by-side
timing (interleaved rounds, medians), peak memory, regional compilation and progress lines."""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

STARTED = time.perf_counter()


def log(message: str) -> None:
    """A progress line with the seconds since the script started (flushed: a killed run shows where it was)."""
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {message}", flush=True)


class SectionSkipped(Exception):
    """A section that cannot run here; the message is the one-line reason written in its place."""


class SectionFailed(Exception):
    """A section measured something and then found it wrong: its rows are kept beside the reason."""

    def __init__(self, reason: str, rows: list, notes: list):
        super().__init__(reason)
        self.rows, self.notes = rows, notes


class Budget:
    """Seconds a section may spend; loops ask ``affords(estimate)`` before starting more work."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.start = time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.used()

    def affords(self, estimate: float) -> bool:
        return estimate <= self.left()

    def share(self, parts: int) -> "Budget":
        """A sub-budget: an equal share of what is left among ``parts`` pieces of work still to do."""
        return Budget(max(0.0, self.left()) / max(1, parts))


@dataclass
class Settings:
    """What every section reads: the device, the dry-run switch, compile mode and the limits."""

    device: torch.device
    dry_run: bool
    compile: str  # "regional" | "whole" | "none"
    compile_backend: str  # "inductor" on GPU; "aot_eager" in the CPU dry run
    rounds: int  # most interleaved timing rounds per comparison
    matmul_tflops: float = 0.0  # measured bf16 matmul rate of this device (the MFU denominator)
    datasheet_tflops: Optional[float] = None  # the vendor's dense bf16 figure, when the device is known
    publisher_code: Optional[str] = None
    decode_layers: Optional[int] = None
    decode_std: Optional[float] = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """bf16 autocast (the recipes' ``mixed_precision: bf16``), on the CPU too in the dry run."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_gib(device: torch.device) -> Optional[float]:
    """Peak allocated GPU memory since the last reset, GiB (None on the CPU: not tracked there)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@dataclass
class Timing:
    seconds: list = field(default_factory=list)  # one per timed round
    peak_gib: Optional[float] = None  # peak memory over this variant's calls (CUDA only)
    result: object = None  # what the last call returned

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def interleaved(variants: dict, settings: Settings, budget: Budget, warm: Optional[dict] = None) -> dict:
    """Time ``variants`` (name -> zero-argument callable) side by side: one warm-up call each (``warm``
    may give a cheaper callable per name), then rounds in which every variant runs once, in turn, the
    order reversed every other round so that drift of the machine hits all alike. A round starts only
    while ``budget`` affords the last round's duration, up to ``settings.rounds`` (at least one).
    Returns name -> :class:`Timing` (take the median)."""
    device = settings.device
    out = {name: Timing() for name in variants}
    for name, fn in variants.items():
        reset_peak(device)
        (warm or {}).get(name, fn)()
        sync(device)
        out[name].peak_gib = peak_gib(device)
    names, last = list(variants), 0.0
    for r in range(settings.rounds):
        if r and not budget.affords(last):
            break
        round_start = time.perf_counter()
        for name in names if r % 2 == 0 else names[::-1]:
            reset_peak(device)
            sync(device)
            start = time.perf_counter()
            out[name].result = variants[name]()
            sync(device)
            out[name].seconds.append(time.perf_counter() - start)
            peak = peak_gib(device)
            out[name].peak_gib = max(out[name].peak_gib or 0.0, peak) if peak is not None else None
        last = time.perf_counter() - round_start
    return out


def compile_model(model: torch.nn.Module, settings: Settings):
    """The model as it will be called. "regional": ``torch.compile`` on every repeated block (the
    classes named in the model's ``_no_split_modules``), compiled once and reused by all layers, so
    compilation takes seconds, not minutes; "whole": the whole forward, as ``train.compile`` does;
    "none": eager. Static shapes (``dynamic=False``): each new shape compiles afresh."""
    if settings.compile == "none":
        return model
    if settings.compile == "whole":
        return torch.compile(model, backend=settings.compile_backend, dynamic=False)
    names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(model).__name__} names no repeated block in _no_split_modules; use --compile whole")
    for block in blocks:
        block.compile(backend=settings.compile_backend, dynamic=False)
    return model


def rounded(x, digits: int = 3):
    """Floats rounded for the table (None and non-floats as they are)."""
    return round(x, digits) if isinstance(x, float) else x
