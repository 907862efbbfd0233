"""An explicit key/value cache object, passed into and out of the denoiser.

Nothing is stored on the modules: a cache belongs to one generation call, takes its device and
dtype from the model that fills it, and can be cropped or copied. Layout per layer: keys and values
``[B, H, T, Dh]`` (after rotary), and the absolute positions of the cached tokens ``[B, T]`` plus a
validity mask ``[B, T]`` (False for left padding), so attention masks can be rebuilt exactly.
"""
from __future__ import annotations

from typing import Optional

import torch


class KVCache:
    """Committed keys and values of every layer.

    The denoiser reads the cache in every forward; it appends the current tokens' keys and values
    only when called with ``update_cache=True`` (a block is committed once it is clean).
    """

    def __init__(self, num_layers: int):
        self.keys: list[Optional[torch.Tensor]] = [None] * num_layers
        self.values: list[Optional[torch.Tensor]] = [None] * num_layers
        self.positions: Optional[torch.Tensor] = None  # [B, T] long
        self.valid: Optional[torch.Tensor] = None  # [B, T] bool

    @classmethod
    def for_model(cls, model) -> "KVCache":
        """An empty cache for ``model``; a model that keeps another kind (an adapted causal LM) makes its own."""
        make = getattr(model, "new_cache", None)
        if make is not None:
            return make()
        return cls(model.config.num_layers)

    @property
    def length(self) -> int:
        return 0 if self.positions is None else self.positions.shape[1]

    def layer(self, i: int):
        return self.keys[i], self.values[i]

    def append_layer(self, i: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append this layer's new keys/values [B, H, L, Dh]."""
        self.keys[i] = k if self.keys[i] is None else torch.cat([self.keys[i], k], dim=2)
        self.values[i] = v if self.values[i] is None else torch.cat([self.values[i], v], dim=2)

    def append_positions(self, positions: torch.Tensor, valid: torch.Tensor) -> None:
        """Record the positions [B, L] and validity [B, L] of tokens just appended."""
        self.positions = positions if self.positions is None else torch.cat([self.positions, positions], 1)
        self.valid = valid if self.valid is None else torch.cat([self.valid, valid], 1)

    def crop(self, keep_last: int) -> None:
        """Keep only the newest ``keep_last`` cached tokens (sliding window beyond the context)."""
        if self.length <= keep_last:
            return
        for i in range(len(self.keys)):
            if self.keys[i] is not None:
                self.keys[i] = self.keys[i][:, :, -keep_last:]
                self.values[i] = self.values[i][:, :, -keep_last:]
        self.positions = self.positions[:, -keep_last:]
        self.valid = self.valid[:, -keep_last:]

    def drop_last(self, count: int) -> None:
        """Forget the newest ``count`` cached tokens (they are fed again with the next window)."""
        if count <= 0:
            return
        for i in range(len(self.keys)):
            if self.keys[i] is not None:
                self.keys[i] = self.keys[i][:, :, :-count]
                self.values[i] = self.values[i][:, :, :-count]
        self.positions = self.positions[:, :-count]
        self.valid = self.valid[:, :-count]

    def select_rows(self, index: torch.Tensor) -> "KVCache":
        """A new cache holding rows ``index`` of this one."""
        out = KVCache(len(self.keys))
        out.keys = [None if k is None else k[index] for k in self.keys]
        out.values = [None if v is None else v[index] for v in self.values]
        out.positions = None if self.positions is None else self.positions[index]
        out.valid = None if self.valid is None else self.valid[index]
        return out


def default_positions(input_ids, attention_mask, cache: Optional[KVCache]) -> torch.Tensor:
    """[B, L] absolute positions: left padding skipped, offset past a cache's last valid position."""
    B, L = input_ids.shape
    if attention_mask is not None and attention_mask.dim() == 2:
        pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    else:
        pos = torch.arange(L, device=input_ids.device).expand(B, L)
    if cache is not None and cache.length > 0:
        last = torch.where(cache.valid, cache.positions, torch.full_like(cache.positions, -1)).amax(-1)
        pos = pos + (last + 1)[:, None]
    return pos
