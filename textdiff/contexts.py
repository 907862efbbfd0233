"""How the denoiser sees its context during generation: one strategy object per call of ``generate()``.

``generate()`` (in :mod:`textdiff.generation`) walks windows of new positions and asks its context for
the logits of the current window; when a window is final it calls ``commit``. Strategies:

* :class:`FullContext`: feed the whole row every call. Exact for every model.
* :class:`BlockCache`: an exact KV cache of everything before the window, for block-causal and causal
  models (BD3-LM, the AR baseline); each step feeds only the window.

``shift`` = 1 serves next-token (AR) models: the logits that predict position i come from position
i − 1, so the context feeds positions [lo − 1, hi − 1).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Optional

import torch

from .models.cache import KVCache


# ---------------------------------------------------------------------------------------------


class Context(ABC):
    """Strategy for the model call: given the full rows and a window, return the window's logits."""

    def __init__(self, denoise: Callable, valid: torch.Tensor, positions: torch.Tensor, shift: int = 0):
        self.denoise = denoise  # (input_ids, t, attention_mask, position_ids, cache, update_cache) -> logits
        self.valid = valid  # [B, T] False on left padding
        self.positions = positions  # [B, T] absolute positions
        self.shift = shift  # 1 for next-token models: logits for position i live at i - 1

    @abstractmethod
    def logits(self, x: torch.Tensor, lo: int, hi: int, t: torch.Tensor) -> torch.Tensor:
        """Logits [B, hi - lo, V] of the window [lo, hi) of rows ``x`` [B, T] at time ``t`` [B]."""

    def commit(self, x: torch.Tensor, lo: int, hi: int) -> None:
        """Called once the window [lo, hi) is final."""


class FullContext(Context):
    """Feed the whole row (prompt, committed blocks, window and any later masked positions).

    Exact for every model; costs a forward over the full length per step.
    """

    def logits(self, x, lo, hi, t):
        out = self.denoise(x, t, self.valid.long(), self.positions, None, False)  # [B, T, V]
        return out[:, lo - self.shift: hi - self.shift]


class BlockCache(Context):
    """Exact KV cache for block-causal (and causal) models.

    Everything before the window is clean and, under a block-causal mask, its keys and values do
    not depend on anything after it, so caching them changes no logit. Each step feeds only the
    window [B, L']; when the window is final its keys and values are appended (one extra call).
    """

    def __init__(self, denoise, valid, positions, cache: KVCache, max_cache: Optional[int] = None, shift: int = 0):
        super().__init__(denoise, valid, positions, shift)
        self.cache = cache
        self.filled = 0  # row coordinate up to which the cache holds keys
        self.max_cache = max_cache  # sliding window length (None: unbounded)

    def _fill(self, x, hi, t_clean):
        if hi > self.filled:
            sl = slice(self.filled, hi)
            self.denoise(x[:, sl], t_clean, self.valid[:, sl].long(), self.positions[:, sl], self.cache, True)
            self.filled = hi
            if self.max_cache is not None:
                self.cache.crop(self.max_cache)

    def logits(self, x, lo, hi, t):
        lo, hi = lo - self.shift, hi - self.shift
        self._fill(x, lo, torch.zeros_like(t))  # prompt prefill on first use
        return self.denoise(x[:, lo:hi], t, self.valid[:, lo:hi].long(), self.positions[:, lo:hi], self.cache, False)

    def commit(self, x, lo, hi):
        self._fill(x, hi - self.shift, torch.zeros(x.shape[0], device=x.device))


def make_context(model, process, denoise, valid, positions, block_size=None, cache="auto", max_context=None) -> Context:
    """Pick the context strategy for one ``generate()`` call.

    cache: "auto" (an exact cache when the model is block-causal or causal and decoding is
    block-wise, else none) or "none".
    """
    shift = getattr(process, "logits_shift", 0)  # 1 for next-token (AR) models
    structural = getattr(model.config, "attention", "bidirectional")
    if cache == "auto" and block_size is not None and structural in ("block_causal", "causal"):
        return BlockCache(denoise, valid, positions, KVCache.for_model(model), max_context, shift=shift)
    return FullContext(denoise, valid, positions, shift=shift)
