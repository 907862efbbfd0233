"""Exponential moving average of the weights, kept in float32; swapped in for evaluation and saving.

Under FSDP2 a parameter is a DTensor shard: the average is kept for the local shard only, and
``state_dict`` / ``load_state_dict`` convert to and from full tensors (collectives: call them on
every process).
"""
from __future__ import annotations

import contextlib

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if isinstance(p, DTensor) else p


def _reshard(model: torch.nn.Module) -> None:
    """FSDP2 can leave parameters gathered after a forward without backward (evaluation); the
    average is kept per shard, so put the shards back in place first."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        self.shadow = {k: _local(p).detach().float().clone() for k, p in params.items()}
        self._layout = {k: p for k, p in params.items() if isinstance(p, DTensor)}  # mesh / placements of shards

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """shadow <- d * shadow + (1 - d) * param, with d warmed up as min(decay, (1 + n) / (10 + n))."""
        d = min(self.decay, (1 + step) / (10 + step))  # called after backward, which leaves FSDP2 shards in place
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(_local(p).detach().float(), 1 - d)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """Temporarily load the EMA weights into ``model``."""
        backup = {}
        if self._layout:
            _reshard(model)
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k in self.shadow:
                    backup[k] = _local(p).detach().clone()
                    _local(p).copy_(self.shadow[k].to(p.dtype))
        try:
            yield model
        finally:
            if self._layout:
                _reshard(model)
            with torch.no_grad():
                for k, p in model.named_parameters():
                    if k in backup:
                        _local(p).copy_(backup[k])

    def state_dict(self) -> dict:
        """Full (unsharded) float32 tensors."""
        out = {}
        for k, v in self.shadow.items():
            if k in self._layout:
                p = self._layout[k]
                v = DTensor.from_local(v, p.device_mesh, p.placements, shape=p.shape, stride=p.stride()).full_tensor()
            out[k] = v.detach().cpu().contiguous()
        return out

    def load_state_dict(self, state: dict) -> None:
        for k in self.shadow:
            value = state[k]
            if k in self._layout:
                p = self._layout[k]
                value = distribute_tensor(value.to(p.device), p.device_mesh, p.placements, src_data_rank=None).to_local()
            self.shadow[k].copy_(value)
