"""The adapter between ``textdiff serve`` and the decoding loop: the ONE module of ``serve/`` that
touches generation internals (the ``denoise=`` hook of :func:`textdiff.generation.generate`, its
model-call wrapper and ``logits_to_keep`` rules). Everything else in ``serve/`` goes through
:meth:`textdiff.lm.DiffusionLM.generate`.

Continuous batching without a second decoding loop: every running row is decoded by its own
``lm.generate`` call (batch of one: its own sampler, windows, caches, per-row generator), whose
model call is a :class:`Parked` hook. The hook does not call the network; it parks the call
``(ids [B_i, T_i], t, attention_mask, position_ids, cache, update_cache, logits_to_keep)`` and waits.
The engine collects the parked calls of all running rows at a step boundary and runs them as
:meth:`ModelCalls.run` says:

* calls WITHOUT a cache (``FullContext``: full-attention models, and block-causal models decoded
  without a cache) are stacked into one forward: rows left-padded to the widest (attention mask 0,
  position 0, t 0 on padding), each keeping its own positions and times; the output layer runs on
  the union of the positions the rows keep, and each row gets back exactly its own positions;
* calls WITH a KV cache (``BlockCache`` / prefix / dual caches: each row holds its own cache of its
  own length) run one by one, in the same step (the math does not allow one call without a paged
  cache).

Rows never see each other: attention is masked per row and every draw comes from the row's own
generator, so a row's tokens are the tokens it gets alone (batch invariance; the merged forward
differs from a row's own forward only by padding, which the mask removes).
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

import torch

from ..contexts import call_keeping
from ..generation_io import _model_call


class Stopped(Exception):
    """Raised in a row's decoding when nobody waits for it any more (cancelled, shutdown deadline)."""


class Call:
    """One parked model call: the arguments of the ``denoise`` hook and, once run, its logits."""

    __slots__ = ("args", "keep", "logits", "error", "ready", "shared")

    def __init__(self, args: tuple, keep):
        self.args, self.keep = args, keep  # (ids, t, attention_mask, position_ids, cache, update_cache)
        self.logits: Optional[torch.Tensor] = None
        self.error: Optional[BaseException] = None
        self.ready = threading.Event()
        self.shared = 1  # rows of the forward this call ran in

    @property
    def mergeable(self) -> bool:
        return self.args[4] is None and not self.args[5]

    def answer(self, logits=None, error=None) -> None:
        self.logits, self.error = logits, error
        self.ready.set()


class Parked:
    """The ``denoise`` hook of one row's ``generate``: park the call with ``park(call)`` (the engine
    learns of it) and wait for the engine to run it."""

    def __init__(self, park: Callable[[Call], None]):
        self.park = park
        self.shared: list[int] = []  # rows of each forward its calls ran in

    def __call__(self, ids, t, attention_mask, position_ids, cache, update_cache, logits_to_keep=0):
        call = Call((ids, t, attention_mask, position_ids, cache, update_cache), logits_to_keep)
        self.park(call)
        call.ready.wait()
        if call.error is not None:
            raise call.error
        self.shared.append(call.shared)
        return call.logits


def kept_positions(keep, width: int) -> torch.Tensor:
    """``logits_to_keep`` (0: all, int k: the last k, 1-D tensor: those) as positions [k] of a call
    fed ``width`` positions."""
    if isinstance(keep, torch.Tensor):
        return keep.to("cpu", torch.long).reshape(-1)
    if not keep:
        return torch.arange(width)
    return torch.arange(width - int(keep), width)


class ModelCalls:
    """Runs the parked calls of one engine step (module docstring).

    ``exact_width`` (``textdiff serve --exact-batching``): bit-for-bit batch invariance. A row's
    logits depend on how wide its forward is (the attention kernels reduce over the padded key
    axis; the output layer over the rows kept), not on how many rows share it; so every mergeable
    call is left-padded to its own width rounded up to a multiple of ``exact_width``, calls merge
    only with calls of the same rounded width, and every position's logits are computed (then cut).
    A row then gets the same bits in any batch as alone, at the price of the padding and the full
    output layer. ``None``: pad to the widest call of the step (equal to float32 rounding)."""

    def __init__(self, lm, exact_width: Optional[int] = None):
        self.denoise = _model_call(lm.model, lm.process)
        self.pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        self.exact_width = exact_width
        self.forwards = 0  # network forwards run

    def width(self, c: Call) -> int:
        """The width ``c`` is fed at: its own, or rounded up to ``exact_width``."""
        T = c.args[0].shape[1]
        return T if self.exact_width is None else -(-T // self.exact_width) * self.exact_width

    @torch.no_grad()
    def run(self, calls: list[Call]) -> None:
        """Answer every call (logits or an error); one forward for the mergeable ones of equal time rank."""
        groups: dict = {}
        for c in calls:
            if c.mergeable:
                key = ("merged", c.args[1].dim(), None if self.exact_width is None else self.width(c))
            else:
                key = ("alone", id(c))
            groups.setdefault(key, []).append(c)
        for group in groups.values():
            try:
                self._merged(group) if len(group) > 1 or self._pads(group[0]) else self._alone(group[0])
            except Exception as e:  # noqa: BLE001  one bad row must not fail the others: run them alone
                for c in group:
                    if len(group) == 1:
                        c.answer(error=e)
                        continue
                    try:
                        self._merged([c]) if self._pads(c) else self._alone(c)
                    except Exception as err:  # noqa: BLE001
                        c.answer(error=err)

    def _pads(self, c: Call) -> bool:
        return c.mergeable and self.exact_width is not None

    def _alone(self, c: Call) -> None:
        self.forwards += 1
        c.answer(call_keeping(self.denoise, c.args, c.keep))

    def _merged(self, group: list[Call]) -> None:
        """Stack the calls into one left-padded forward and hand each its own logits rows."""
        sizes = [c.args[0].shape[0] for c in group]
        B, T = sum(sizes), max(self.width(c) for c in group)
        first = group[0].args
        device, tdim = first[0].device, first[1].dim()
        ids = torch.full((B, T), self.pad_id, dtype=first[0].dtype, device=device)  # [B, T]
        mask = torch.zeros((B, T), dtype=first[2].dtype, device=device)  # [B, T] 0 on padding
        pos = torch.zeros((B, T), dtype=first[3].dtype, device=device)  # [B, T]
        t = torch.zeros((B,) if tdim == 1 else (B, T), dtype=first[1].dtype, device=device)  # [B] or [B, T]
        keeps, at = [], 0
        for c, n in zip(group, sizes):
            c_ids, c_t, c_mask, c_pos = c.args[:4]
            off = T - c_ids.shape[1]  # left padding of these rows
            ids[at: at + n, off:], mask[at: at + n, off:], pos[at: at + n, off:] = c_ids, c_mask, c_pos
            if tdim == 1:
                t[at: at + n] = c_t
            else:
                t[at: at + n, off:] = c_t
            keeps.append(kept_positions(c.keep, c_ids.shape[1]) + off)
            at += n
        union = torch.unique(torch.cat(keeps))  # [k] sorted positions some row keeps
        keep = 0 if union.numel() == T or self.exact_width is not None else union
        self.forwards += 1
        logits = call_keeping(self.denoise, (ids, t, mask, pos, None, False), keep)  # [B, k, V]
        at = 0
        for c, n, mine in zip(group, sizes, keeps):
            cols = (mine if isinstance(keep, int) else torch.searchsorted(union, mine)).to(logits.device)  # [k_c] its positions
            c.shared = B
            c.answer(logits[at: at + n, cols])
            at += n
