"""How the denoiser sees its context during generation: one strategy object per call of ``generate()``.

``generate()`` (in :mod:`textdiff.generation`) walks windows of new positions and asks its context for
the logits of the current window; when a window is final it calls ``commit``. Strategies
(``cache=`` mode of :func:`make_context`):

* ``"none"`` :class:`FullContext`: feed the whole row every call. Exact for every model.
* ``"exact"`` :class:`BlockCache`: a KV cache of everything before the window, for block-causal and
  causal models (BD3-LM, the AR baseline). EXACT: under a block-causal mask the keys and values of
  committed blocks do not depend on anything after them, so every logit equals the uncached one.
  ``max_context`` slides the cached window (generation beyond the training context).
* ``"prefix"`` :class:`PrefixCache` and ``"dual"`` :class:`DualCache`: APPROXIMATE caches for
  bidirectional (full-sequence masked, LLaDA-style) models decoded semi-autoregressively (Fast-dLLM,
  Wu et al. 2025). In a bidirectional model the keys of the prefix depend on the tokens after it,
  which change while the block is decoded; these caches reuse stale keys, so their logits differ
  from the uncached ones (measured in ``benchmarks/block_decoding.py``).
* ``"auto"``: ``"exact"`` when the model is block-causal / causal and decoding is block-wise (and
  the blocks are whole model blocks), else ``"none"``. Never an approximate cache.

Output layer: every call asks the denoiser only for the rows it returns, with ``logits_to_keep``
(Hugging Face's convention: ``0`` = all positions, an int k = the last k positions, a 1-D long
tensor = those positions of the fed sequence), so the output layer ([d, V], most of a forward at
real vocabularies) runs on the window, not on the context. A denoise callable that does not take
``logits_to_keep`` gets the full call and its output is cut afterwards (:func:`call_keeping`).

Rows read: ``logits(..., rows=)`` [B, hi − lo] marks the window positions whose logits the sampler
reads (the noise positions, for a process whose clean positions carry over); only the positions
marked in some row of the batch go through the output layer; the other rows of the returned
[B, hi − lo, V] hold zeros or logits of an earlier step (finite, never read: the output lives in
one buffer per context, so a step writes only its rows). Every step still costs one forward of the trunk.

``shift`` = 1 serves next-token (AR) models: the logits that predict position i come from position
i − 1, so the context feeds positions [lo − 1, hi − 1).

``lookback`` (the model config's, e.g. 1 for Dream, whose denoiser reads position i's logits from
its output at i − 1 and returns them aligned): the approximate caches feed a window together with
the ``lookback`` tokens before it (recomputed, not cached), so the window's first logits are the
model's own, not a stale copy. ``generate(lookback=0)`` keeps those tokens in the stale cache instead
(Fast-dLLM's Dream block decoding, which then fixes the window's first token at the refresh step).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Optional

import torch

from .errors import ConfigError, IncompatibleError
from .models.cache import KVCache

CACHE_MODES = ("auto", "none", "exact", "prefix", "dual")


def keep_spec(lo: int, hi: int, fed: int, cols: Optional[torch.Tensor] = None):
    """``logits_to_keep`` for rows [lo, hi) of a call fed ``fed`` positions: 0 (all), an int k (the
    last k) or a 1-D tensor of positions (HF semantics). ``cols`` [n]: only the window offsets
    ``lo + cols`` (a 1-D tensor)."""
    if cols is not None:
        return lo + cols
    if lo == 0 and hi == fed:
        return 0
    if hi == fed:
        return hi - lo
    return torch.arange(lo, hi)


def apply_keep(logits: torch.Tensor, keep) -> torch.Tensor:
    """Cut full logits [B, L, V] as ``logits_to_keep`` says (for denoisers that compute every row)."""
    if isinstance(keep, torch.Tensor):
        return logits[:, keep.to(logits.device)]
    return logits if not keep else logits[:, -int(keep):]


def takes_logits_to_keep(fn) -> bool:
    """Whether a callable (or a module's forward) names a ``logits_to_keep`` parameter."""
    import inspect

    target = getattr(fn, "forward", fn)
    try:
        return "logits_to_keep" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def call_keeping(fn, args, keep, accepts: Optional[bool] = None, inputs: Optional[dict] = None):
    """``fn(*args, **inputs)`` returning only the rows ``keep`` selects: passed on as ``logits_to_keep``
    when ``fn`` takes it, else the full output is cut; an output that still has every row is cut too.
    ``inputs``: extra keyword inputs of the denoiser (a sampler's :meth:`denoiser_inputs`)."""
    fed = args[0].shape[1]
    inputs = inputs or {}
    if keep is None or (isinstance(keep, int) and keep == 0):
        return fn(*args, **inputs)
    accepts = takes_logits_to_keep(fn) if accepts is None else accepts
    out = fn(*args, logits_to_keep=keep, **inputs) if accepts else fn(*args, **inputs)
    wanted = int(keep.numel()) if isinstance(keep, torch.Tensor) else int(keep)
    if out.shape[1] == fed and wanted != fed:
        out = apply_keep(out, keep)
    return out


def read_columns(rows: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Window offsets [n] read in some row of ``rows`` [B, W] (bool); None when all (or none) are."""
    if rows is None:
        return None
    cols = rows.any(0).nonzero()[:, 0]  # [n]
    return None if cols.numel() in (0, rows.shape[1]) else cols


class Context(ABC):
    """Strategy for the model call: given the full rows and a window, return the window's logits."""

    #: False for approximate caches (their logits differ from the uncached model's)
    exact: bool = True

    def __init__(self, denoise: Callable, valid: torch.Tensor, positions: torch.Tensor, shift: int = 0):
        self.denoise = denoise  # (input_ids, t, attention_mask, position_ids, cache, update_cache) -> logits
        self.valid = valid  # [B, T] False on left padding
        self.positions = positions  # [B, T] absolute positions
        self.shift = shift  # 1 for next-token models: logits for position i live at i - 1
        self._accepts = takes_logits_to_keep(denoise)  # looked up once, not every step (inspect is slow)
        #: extra keyword inputs of the next sampling call (the loop sets the sampler's ``denoiser_inputs()``)
        self.inputs: dict = {}

    def _place(self, part: torch.Tensor, cols: Optional[torch.Tensor], width: int) -> torch.Tensor:
        """Logits [B, n, V] of the window offsets ``cols`` written into this context's buffer
        [B, width, V] (zeros when made; its other rows are not read, module docstring)."""
        if cols is None:
            return part
        shape = (part.shape[0], width, part.shape[2])
        buf = getattr(self, "_buffer", None)
        if buf is None or buf.shape != shape or buf.dtype != part.dtype or buf.device != part.device:
            buf = self._buffer = part.new_zeros(shape)
        buf[:, cols] = part
        return buf

    def _call(self, args, keep):
        """The denoiser on ``args`` (input_ids first) cut to the rows ``keep`` selects."""
        return call_keeping(self.denoise, args, keep, self._accepts, self.inputs if not args[5] else None)

    @abstractmethod
    def logits(self, x: torch.Tensor, lo: int, hi: int, t: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [B, hi - lo, V] of the window [lo, hi) of rows ``x`` [B, T] at time ``t`` [B];
        with ``rows`` [B, hi - lo] (bool) only the marked positions are computed (module docstring)."""

    def commit(self, x: torch.Tensor, lo: int, hi: int) -> None:
        """Called once the window [lo, hi) is final."""


class FullContext(Context):
    """Feed the whole row (prompt, committed blocks, window and any later masked positions).

    Exact for every model; costs a forward over the full length per step. ``upto_window``: feed only
    [0, hi) (recompute the whole prefix, skip the later positions), exact when nothing after the
    window is visible to it (causal models, block-causal ones decoded in whole blocks).
    ``clean_time``: give the committed tokens before the window t = 0 (block-causal models, trained
    with a clean x0 half at t = 0), so a time-conditioned block model sees what :class:`BlockCache` gives it.
    """

    def __init__(self, denoise, valid, positions, shift: int = 0, clean_time: bool = False, upto_window: bool = False):
        super().__init__(denoise, valid, positions, shift)
        self.clean_time = clean_time
        self.upto_window = upto_window

    def logits(self, x, lo, hi, t, rows=None):
        cols = read_columns(rows)
        lo, hi = lo - self.shift, hi - self.shift
        end = hi if self.upto_window else x.shape[1]
        if self.clean_time:
            t = t[:, None].expand(x.shape[0], end).clone()  # [B, end]
            t[:, :lo] = 0.0
        args = (x[:, :end], t, self.valid[:, :end].long(), self.positions[:, :end], None, False)
        return self._place(self._call(args, keep_spec(lo, hi, end, cols)), cols, hi - lo)  # [B, hi - lo, V]


class BlockCache(Context):
    """Exact KV cache for block-causal (and causal) models.

    Everything before the window is clean and, under a block-causal mask, its keys and values do
    not depend on anything after it, so caching them changes no logit. Each step feeds only the
    window [B, L']; once the window is final its keys and values are appended (one extra forward
    over the clean block, at t = 0, done lazily when the next window starts). ``max_cache`` keeps
    only the newest cached tokens (a sliding window: exact for a model that sees only that window).
    """

    def __init__(self, denoise, valid, positions, cache: KVCache, max_cache: Optional[int] = None, shift: int = 0,
                 lookback: int = 0):
        super().__init__(denoise, valid, positions, shift)
        self.cache = cache
        self.filled = 0  # row coordinate up to which the cache holds keys
        self.max_cache = max_cache  # sliding window length (None: unbounded)
        #: tokens before the window fed with it (not cached yet): a block-causal denoiser with shifted
        #: logits (Fast-dLLM v2) reads the window's first logits from the output of the token before it
        self.lookback = int(lookback)

    def _feed(self, x, lo, hi, t, update: bool, keep=0):
        """Run rows [lo, hi) against the cache; with ``update`` append their keys (and slide)."""
        sl = slice(lo, hi)
        out = self._call((x[:, sl], t, self.valid[:, sl].long(), self.positions[:, sl], self.cache, update), keep)
        if update:
            self.filled = hi
            if self.max_cache is not None:
                self.cache.crop(self.max_cache)
        return out

    def logits(self, x, lo, hi, t, rows=None):
        final = hi - self.shift <= lo  # everything before the window is final: so is every fed token
        lo, hi = lo - self.shift, hi - self.shift
        start = max(lo - self.lookback, 0)  # the first fed row: the window, or the token(s) before it
        if start > self.filled:  # prompt prefill, or the blocks committed since the last call, at t = 0
            self._feed(x, self.filled, lo, torch.zeros_like(t), True, keep=1)  # only keys are wanted
            if lo > start:  # whole blocks were cached (exact); the lookback tokens are fed again with the window
                self.cache.drop_last(lo - start)
                self.filled = start
        if final:  # next-token model with one-token windows: cache the fed token in the same call
            return self._feed(x, lo, hi, torch.zeros_like(t), True)
        cols = read_columns(rows)
        keep = keep_spec(lo - start, hi - start, hi - start, cols)
        return self._place(self._feed(x, start, hi, t, False, keep=keep), cols, hi - lo)

    def commit(self, x, lo, hi):
        """Nothing yet: the committed block's keys are computed at t = 0 when the next window asks
        (``logits``), so the last block of a generation costs no extra forward."""


def keep_tokens(cache: KVCache, index: torch.Tensor) -> KVCache:
    """A new cache with the cached tokens ``index`` [n] (row coordinates of the cache) of ``cache``."""
    out = KVCache(len(cache.keys))
    out.keys = [None if k is None else k[:, :, index] for k in cache.keys]
    out.values = [None if v is None else v[:, :, index] for v in cache.values]
    out.positions = cache.positions[:, index]
    out.valid = cache.valid[:, index]
    return out


class _RefreshedCache(Context):
    """Shared logic of the approximate caches: the first call of every window runs the full row
    (its logits are exact) and keeps the keys/values of the positions ``kept(lo, hi, T)``; later
    calls of the same window feed only [lo, ``fed_end(lo, hi, T)``) and attend to the kept (stale) keys."""

    exact = False

    def __init__(self, denoise, valid, positions, num_layers: int, lookback: int = 0):
        super().__init__(denoise, valid, positions, 0)
        self.num_layers = num_layers
        self.lookback = lookback  # tokens before the window fed with it (model config ``lookback``)
        self.window = None  # the window the cache was refreshed for
        self.cache: Optional[KVCache] = None

    @abstractmethod
    def kept(self, lo, hi, T) -> torch.Tensor:
        """Row coordinates [n] of the tokens whose keys/values are kept at a refresh."""

    @abstractmethod
    def fed_end(self, lo, hi, T) -> int:
        """Non-refresh calls feed [lo, fed_end)."""

    def logits(self, x, lo, hi, t, rows=None):
        T = x.shape[1]
        cols = read_columns(rows)
        if self.window != (lo, hi):  # refresh: one exact forward over the whole row
            full = KVCache(self.num_layers)
            out = self._call((x, t, self.valid.long(), self.positions, full, True), keep_spec(lo, hi, T, cols))
            back = min(self.lookback, lo)
            self.cache = keep_tokens(full, self.kept(lo - back, hi, T).to(x.device))
            self.window = (lo, hi)
            return self._place(out, cols, hi - lo)  # [B, hi - lo, V]
        back = min(self.lookback, lo)
        end = self.fed_end(lo, hi, T)
        sl = slice(lo - back, end)
        args = (x[:, sl], t, self.valid[:, sl].long(), self.positions[:, sl], self.cache, False)
        return self._place(self._call(args, keep_spec(back, back + hi - lo, end - lo + back, cols)), cols, hi - lo)

    def commit(self, x, lo, hi):
        self.window, self.cache = None, None  # the next window refreshes


class PrefixCache(_RefreshedCache):
    """APPROXIMATE prefix cache for bidirectional models (Fast-dLLM's prefix KV cache).

    At the first step of each block the whole row is run and the keys/values of the prefix
    (positions before the block) are kept; the other steps of the block feed the block and the
    masked suffix [lo, T) and attend to the kept prefix. The prefix keys were computed with the
    block and suffix as they were at the block's first step, so later steps are approximate.
    """

    def kept(self, lo, hi, T):
        return torch.arange(0, lo)

    def fed_end(self, lo, hi, T):
        return T


class DualCache(_RefreshedCache):
    """APPROXIMATE dual cache for bidirectional models (Fast-dLLM's DualCache).

    Like :class:`PrefixCache` but also keeps the keys/values of the masked suffix [hi, T), so the
    other steps of a block feed only the block [lo, hi). Both prefix and suffix keys are stale.
    """

    def kept(self, lo, hi, T):
        return torch.cat([torch.arange(0, lo), torch.arange(hi, T)])

    def fed_end(self, lo, hi, T):
        return hi


def make_context(model, process, denoise, valid, positions, block_size=None, cache="auto", max_context=None,
                 lookback=None) -> Context:
    """Pick the context strategy for one ``generate()`` call (see the module docstring for modes).

    cache: one of ``CACHE_MODES`` (``True`` / ``False`` mean ``"auto"`` / ``"none"``).
    max_context: slide an exact cache to at most this many tokens (needs ``"exact"`` or ``"auto"``
    resolving to it); window + cache must fit in the model's ``max_position_embeddings``.
    lookback: tokens before the window the approximate caches feed again (None: ``config.lookback``).
    """
    cache = {True: "auto", False: "none", None: "auto"}.get(cache, cache)
    if cache not in CACHE_MODES:
        raise ConfigError(f"cache={cache!r}; use one of {', '.join(CACHE_MODES)}")
    config = model.config
    shift = process.logits_shift  # 1 for next-token (AR) models
    structural = getattr(config, "attention", "bidirectional")
    causal = structural in ("block_causal", "causal")
    limit = getattr(config, "max_position_embeddings", None)
    if block_size is not None and limit is not None and block_size > limit:
        raise ConfigError(f"block_size={block_size} is larger than the model's context ({limit} positions); use a smaller block_size")
    # an exact cache needs windows made of whole model blocks (a part-block would be cached too early)
    model_block = getattr(config, "block_size", None) if structural == "block_causal" else 1
    whole = block_size is not None and block_size % (model_block or 1) == 0

    if cache == "exact":
        if not causal:
            raise IncompatibleError(
                f"cache='exact' needs a block-causal or causal model, this one is {structural} (its keys depend on later "
                "tokens): use cache='prefix' or 'dual' (approximate) or 'none'")
        if not whole:
            raise ConfigError(f"cache='exact' needs block_size set to a multiple of the model's block size {model_block}, got {block_size}")
    if cache in ("prefix", "dual"):
        if causal:
            raise IncompatibleError(f"cache={cache!r} is an approximation for bidirectional models; this model is {structural}: use cache='exact'")
        if block_size is None:
            raise ConfigError(f"cache={cache!r} needs block-wise (semi-autoregressive) decoding: pass block_size")
        if shift:
            raise IncompatibleError(f"cache={cache!r} serves diffusion models, not next-token processes")
    if lookback is not None and cache not in ("prefix", "dual"):
        raise ConfigError(f"lookback={lookback} sets what the approximate caches feed again; it needs use_cache='prefix' or 'dual', got {cache!r}")
    use_exact = cache == "exact" or (cache == "auto" and causal and whole)
    if max_context is not None:
        if not use_exact:
            raise ConfigError("max_context slides an exact KV cache: it needs a block-causal / causal model, block_size and cache='exact' or 'auto'")
        if block_size > max_context:
            raise ConfigError(f"block_size={block_size} is larger than max_context={max_context}; use a smaller block_size")
        if limit is not None and max_context + block_size > limit:
            raise ConfigError(f"max_context={max_context} + block_size={block_size} exceeds the model's context ({limit}); lower max_context")
    if use_exact:
        return BlockCache(denoise, valid, positions, KVCache.for_model(model), max_context, shift=shift,
                          lookback=int(getattr(config, "logits_shift", 0) or 0))
    if lookback is None:
        lookback = int(getattr(config, "lookback", 0) or 0)
    if cache == "prefix":
        return PrefixCache(denoise, valid, positions, config.num_layers, lookback)
    if cache == "dual":
        return DualCache(denoise, valid, positions, config.num_layers, lookback)
    return FullContext(denoise, valid, positions, shift=shift, clean_time=structural == "block_causal",
                       upto_window=causal and whole)
