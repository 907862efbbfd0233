"""What the loop does differently when accelerate shards the model (FSDP2) or the optimizer (DeepSpeed).

Checkpoints have one layout whatever the launch (see ``checkpoint.py``): full, unsharded weights in
``model.safetensors`` and the optimizer state keyed by parameter NAME (the "full state dict" layout
of ``torch.distributed.checkpoint``), so a checkpoint saved by one process resumes under DDP or FSDP
on any number of processes and back. Resuming works in two halves:

1. the weights go into the plain model BEFORE ``accelerate.prepare`` (every backend then shards or
   partitions them itself, so nothing here needs to know how FSDP lays out a parameter);
2. the optimizer state goes in AFTER, through ``set_optimizer_state_dict``, which shards it too.

DeepSpeed ZeRO-2 keeps Adam moments in flat per-rank partitions that have no per-parameter view we
can rely on; they are saved per rank (``optimizer-zero-rank{r}-of-{n}.pt``) and restored when the
number of processes is the same. Resuming on another number of processes keeps weights, EMA, data
order and lr schedule but restarts the Adam moments, and says so.

DeepSpeed ZeRO-3 also partitions the parameters: outside its forward / backward hooks a parameter
is an empty placeholder on every process. Weights are then gathered layer by layer onto the main
process for saving (:func:`full_model_state`, DeepSpeed's consolidated state dict); each process's
optimizer file holds its Adam moments AND its fp32 master partition, so a same-size resume is exact
even in bf16. EMA is refused under ZeRO-3 (the average would need every parameter gathered at
every step; use ZeRO-2 or FSDP for EMA runs).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ConfigError


def uses_deepspeed(acc) -> bool:
    return acc.state.deepspeed_plugin is not None


def zero_stage(acc) -> int:
    """The DeepSpeed ZeRO stage of this launch (0 when DeepSpeed is not used)."""
    if not uses_deepspeed(acc):
        return 0
    return int(acc.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def is_zero3(model: torch.nn.Module) -> bool:
    """True for a DeepSpeed engine whose parameters are partitioned (ZeRO-3)."""
    check = getattr(model, "zero_optimization_partition_weights", None)
    return bool(check()) if callable(check) else False


def accelerator_kwargs() -> list:
    """DeepSpeed on a machine without CUDA (tests, CPU clusters) needs the gloo backend named
    explicitly, or accelerate falls back to a single process."""
    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if deepspeed:
        from ..extras import require

        require("deepspeed", "deepspeed", "a DeepSpeed launch (recipes/accelerate/deepspeed_*.yaml)")
    if launched and deepspeed and not torch.cuda.is_available():
        from accelerate.utils import InitProcessGroupKwargs

        return [InitProcessGroupKwargs(backend="gloo")]
    return []


def check_launch(acc) -> None:
    """accelerate runs FSDP only on accelerators: launched on a CPU machine it would start N
    independent single-process runs writing to one folder. Refuse instead."""
    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wants_fsdp and acc.distributed_type.name != "FSDP":
        raise ConfigError("accelerate runs FSDP only on GPUs (it found none); on CPUs launch with "
                          "recipes/accelerate/ddp.yaml and ACCELERATE_USE_CPU=1")


def configure_deepspeed(acc, cfg) -> None:
    """Fill the DeepSpeed config from the recipe. The loop feeds rows itself (no DataLoader), so
    accelerate cannot infer the micro-batch; the recipe's batch, accumulation and clipping win."""
    if not uses_deepspeed(acc):
        return
    ds = acc.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds["train_batch_size"] = cfg.batch_size * cfg.grad_accum * acc.num_processes
    ds["gradient_clipping"] = cfg.grad_clip
    acc.gradient_accumulation_steps = cfg.grad_accum
    zero = ds.setdefault("zero_optimization", {})
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"DeepSpeed ZeRO stage {stage} does not exist; use 2 or 3 (recipes/accelerate/deepspeed_zero*.yaml)")
    if stage == 3:
        if cfg.ema > 0:
            raise ConfigError("train.ema is not supported under DeepSpeed ZeRO-3 (parameters are partitioned); "
                              "set train.ema=0 or launch with recipes/accelerate/deepspeed_zero2.yaml or fsdp.yaml")
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # full_model_state gathers through it


def backward_scale(acc, cfg) -> float:
    """DeepSpeed divides every micro-batch loss by its gradient_accumulation_steps; our loss is
    already normalised by the step's token count, so that division is undone."""
    return float(cfg.grad_accum) if uses_deepspeed(acc) else 1.0


def is_sharded(model: torch.nn.Module) -> bool:
    """True when parameters are DTensor shards (FSDP2): gathering them is a collective."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model: torch.nn.Module) -> dict | None:
    """The unsharded weights on the main process (None elsewhere); None when not sharded, where the
    main process saves straight from the model. Call on EVERY process.

    ``model`` is the prepared model: FSDP2 DTensors are gathered by ``torch.distributed.checkpoint``,
    a ZeRO-3 engine gathers one layer at a time onto the main process's CPU."""
    if is_zero3(model):
        return model._zero3_consolidated_16bit_state_dict()  # keys of the unwrapped module; None off rank 0
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


# what a ZeRO-3 optimizer file keeps of DeepSpeed's state dict: tensors only (weights_only loading)
_ZERO3_KEYS = ("optimizer_state_dict", "fp32_flat_groups", "partition_count")


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one


def optimizer_files(acc, optimizer, model) -> dict[str, dict]:
    """{file name: state} this process must write. Call on EVERY process (gathering is collective)."""
    if uses_deepspeed(acc):
        zero = _inner(optimizer)  # DeepSpeedZeroOptimizer; its .optimizer is the torch AdamW of the flat partitions
        name = f"optimizer-zero-rank{acc.process_index}-of-{acc.num_processes}.pt"
        if zero_stage(acc) == 3:  # stage 3 attaches its fp32 partitions to the torch optimizer only while stepping
            full = zero.state_dict()
            return {name: {k: full[k] for k in _ZERO3_KEYS}}
        return {name: zero.optimizer.state_dict()}
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, _inner(optimizer), options=_options(cpu_offload=True))
    return {"optimizer.pt": state} if acc.is_main_process else {}


def load_optimizer_state(acc, folder: Path, optimizer, model) -> None:
    """Restore the optimizer state of ``folder`` into the prepared (possibly sharded) optimizer."""
    if uses_deepspeed(acc):
        file = folder / f"optimizer-zero-rank{acc.process_index}-of-{acc.num_processes}.pt"
        if not file.is_file():
            acc.print(f"warning: {folder} has no DeepSpeed optimizer shards for {acc.num_processes} processes; "
                      "weights, EMA, data order and lr schedule resume, Adam moments restart")
            return
        state = torch.load(file, map_location="cpu", weights_only=True)
        zero = _inner(optimizer)
        if zero_stage(acc) == 3:
            if sorted(state) != sorted(_ZERO3_KEYS):
                raise ConfigError(f"{file} was not saved under ZeRO-3; resume with the launch config that wrote it")
            rest = {"loss_scaler": zero.loss_scaler, "dynamic_loss_scale": zero.dynamic_loss_scale, "overflow": zero.overflow}
            zero.load_state_dict([{**rest, **state}] * acc.num_processes)  # each process reads its own entry
            return
        zero.optimizer.load_state_dict(state)
        return
    file = folder / "optimizer.pt"
    if not file.is_file():
        acc.print(f"warning: {folder} has no optimizer.pt (a DeepSpeed checkpoint?); Adam moments restart")
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    state = torch.load(file, map_location="cpu", weights_only=True)
    set_optimizer_state_dict(model, _inner(optimizer), state, options=_options())
