"""An autoregressive LM adapted to diffusion (issue 26): the denoiser that ``textdiff train`` with an
``adapt:`` section trains and saves, and ``DiffusionLM.from_pretrained`` reads back.

:class:`AdaptedLM` wraps the causal network unchanged (a transformers causal LM run through its own
class with a custom 4-D mask, or a textdiff AR model) and gives it the textdiff denoiser call
``(input_ids, t, attention_mask, position_ids, cache, update_cache) -> logits [B, L, V]``:

* **which keys a query sees** (:mod:`textdiff.adapt.attention`): the annealed mask at ``progress``
  p in [0, 1] (the training hook sets it from the step; p = 1 is the target: bidirectional for the
  masked target, block-causal for the block target). Two layouts reach it:
  - block diffusion's one-pass ``[x_t ; x0]`` (the block process's 4-D mask marks it: Q = 2L rows,
    positions 0..L-1 twice): the annealed rule on row indices, then the read-out of
    :func:`~textdiff.adapt.attention.read_logits` (a block's first token from the clean row before it);
  - a plain row (masked training and scoring, every generation call): the rule on absolute positions,
    with key padding and the cached keys;
* **the shift** (Dream): with ``shift`` the logits that predict position i come from position i − 1;
  position 0 keeps its own. Under a cache the row before the window is in the cache: the pass that
  commits a clean block keeps its last row's logits on the cache (``boundary``), and the next window's
  first token reads them, so cached decoding reads exactly the rows training read.

**KV cache.** The block target is block-causal: committed blocks never see later ones, so the cache
of :class:`~textdiff.contexts.BlockCache` is exact (``tests/test_adapt_train.py`` compares cached and
uncached decoding). :meth:`AdaptedLM.new_cache` gives an :class:`AdaptedCache`: for a transformers
network it holds the network's own ``DynamicCache`` (a denoising step that does not commit is cut
back off it); for a textdiff network, the network fills the :class:`~.cache.KVCache` itself. The
approximate prefix / dual caches of bidirectional models are refused (decode the masked target with
``use_cache='none'``).

**Saving.** The network's own folder (``config.json`` + safetensors: a transformers causal LM folder
stays loadable by ``AutoModelForCausalLM``) plus ``textdiff_denoiser.json`` with ``kind: adapted``,
the target, block size, shift and progress (:func:`load_adapted`).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ..adapt.attention import annealed_allowed, annealed_mask, read_logits
from ..errors import ConfigError, IncompatibleError
from .cache import KVCache, default_positions
from .format.layout import DENOISER_FILE
from .masks import is_flex_mask
from .modeling_textdiff import TextDiffOutput

_FAR = 1 << 40  # "sequence length" for the rule on absolute positions: pos mod _FAR is the position


class AdaptedConfig:
    """What textdiff reads from ``model.config``: attention kind, block size, context, vocabulary."""

    time_conditioning = False
    lookback = 0

    def __init__(self, hf_config, target: str, block_size: Optional[int], vocab_size: int, mask_token_id: int):
        self.hf = hf_config
        self.attention = "block_causal" if target == "block" else "bidirectional"
        self.block_size = block_size if target == "block" else None
        self.vocab_size = vocab_size
        self.mask_token_id = mask_token_id
        self.max_position_embeddings = getattr(hf_config, "max_position_embeddings", None)
        self.num_layers = getattr(hf_config, "num_hidden_layers", None) or getattr(hf_config, "num_layers", None)
        self.model_type = getattr(hf_config, "model_type", None)


class AdaptedCache(KVCache):
    """A KV cache of committed tokens for :class:`AdaptedLM`: positions / validity of the cached tokens,
    the network's own cache (a transformers ``DynamicCache``; None for a textdiff network, which fills
    this object itself) and ``boundary``: the logits of the last committed row [B, 1, V]."""

    def __init__(self, num_layers: int, network_cache=None):
        super().__init__(num_layers)
        self.network = network_cache
        self.boundary: Optional[torch.Tensor] = None

    def crop(self, keep_last: int) -> None:
        if self.network is not None and self.length > keep_last:
            raise IncompatibleError("an adapted transformers model's cache cannot slide; decode without max_context")
        super().crop(keep_last)

    def select_rows(self, index: torch.Tensor) -> "KVCache":
        raise IncompatibleError("an adapted model's cache cannot be split by rows; decode the rows together")


def _textdiff_network(network) -> bool:
    return getattr(network.config, "model_type", None) == "textdiff"


class AdaptedLM(nn.Module):
    """A causal network as the denoiser of the masked or block process (module docstring)."""

    def __init__(self, network: nn.Module, target: str, block_size: Optional[int], shift: bool, vocab_size: int,
                 mask_token_id: int, progress: float = 1.0, anneal_rule: str = "random", anneal_seed: int = 0):
        super().__init__()
        if target not in ("masked", "block"):
            raise ConfigError(f"adapt.target={target!r}; use masked or block")
        self.hf = network  # (the name ExternalDenoiser uses too: checkpoints and LoRA see the same keys)
        self.target, self.shift = target, bool(shift)
        self.progress, self.anneal_rule, self.anneal_seed, self.anneal_step = float(progress), anneal_rule, anneal_seed, 0
        self.textdiff_network = _textdiff_network(network)
        takes = inspect.signature(network.forward).parameters  # transformers >= 5.2x names it `cache`
        self._cache_kwarg = "cache" if "cache" in takes else "past_key_values"
        self.config = AdaptedConfig(network.config, target, block_size, vocab_size, mask_token_id)

    @property
    def block_size(self) -> Optional[int]:
        return self.config.block_size

    def set_block_size(self, block_size: int) -> None:
        """L' of the block target (a block-size schedule changes it between steps)."""
        self.config.block_size = int(block_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def new_cache(self) -> AdaptedCache:
        """An empty cache for one generation call (:meth:`KVCache.for_model` asks for it)."""
        if self.textdiff_network:
            return AdaptedCache(self.hf.config.num_layers)
        from transformers import DynamicCache

        return AdaptedCache(self.config.num_layers or 0, DynamicCache())

    # ---- the denoiser call ------------------------------------------------------------------------
    def forward(self, input_ids, t=None, attention_mask=None, position_ids=None, cache=None, update_cache=False,
                logits_to_keep=0, **kwargs):
        """input_ids [B, Q] -> TextDiffOutput(logits [B, L, V]); ``t`` is not used (no time input)."""
        if attention_mask is not None and (is_flex_mask(attention_mask) or attention_mask.dim() == 4):
            if self.target != "block" or cache is not None:
                raise IncompatibleError("a 4-D mask marks block diffusion's [x_t ; x0] training pass; "
                                        "this adapted model serves the masked target: set process.name=masked")
            logits = self._block_pass(input_ids)  # [B, L, V]
        else:
            logits = self._row_pass(input_ids, attention_mask, position_ids, cache, update_cache)
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits[:, logits_to_keep.to(logits.device)]
        elif logits_to_keep:
            logits = logits[:, -int(logits_to_keep):]
        return TextDiffOutput(logits=logits)

    def _block_pass(self, ids: torch.Tensor) -> torch.Tensor:
        """[x_t ; x0] [B, 2L] -> the logits [B, L, V] that predict x0 (row i predicts token i)."""
        B, Q = ids.shape
        L = Q // 2
        allowed = annealed_mask(self.progress, L, "block", self.block_size, rule=self.anneal_rule,
                                seed=self.anneal_seed, step=self.anneal_step, device=ids.device)  # [2L, 2L]
        pos = torch.arange(L, device=ids.device).repeat(2)[None].expand(B, Q)  # [B, 2L]
        raw = self._network(ids, allowed[None, None], pos, None, False)
        return read_logits(raw, L, "block", self.block_size, self.shift)

    def _allowed(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Bool [B, 1, Lq, Lk] on absolute positions: the annealed rule within the target's structure."""
        q, k = q_pos[:, None, :, None], k_pos[:, None, None, :]
        rule = annealed_allowed(q, k, self.progress, _FAR, "masked", rule=self.anneal_rule, seed=self.anneal_seed,
                                step=self.anneal_step)
        if self.target == "block":
            rule = rule & (torch.div(k, self.block_size, rounding_mode="floor") <= torch.div(q, self.block_size, rounding_mode="floor"))
        return rule

    def _row_pass(self, ids, valid, positions, cache, update):
        B, L = ids.shape
        if cache is not None and not isinstance(cache, AdaptedCache):
            raise IncompatibleError("an adapted model decodes with its own exact cache (block target) or none; "
                                    "use use_cache='auto' or 'none'")
        q_valid = torch.ones(B, L, dtype=torch.bool, device=ids.device) if valid is None else valid.bool()
        if positions is None:
            positions = default_positions(ids, q_valid.long(), cache)
        k_pos, k_valid = positions, q_valid
        if cache is not None and cache.length > 0:
            k_pos, k_valid = torch.cat([cache.positions, positions], 1), torch.cat([cache.valid, q_valid], 1)
        allowed = self._allowed(positions, k_pos) & k_valid[:, None, None, :]
        allowed = allowed | ~q_valid[:, None, :, None]  # padded queries look anywhere (their output is unread)
        raw = self._network(ids, allowed, positions, cache, update)
        if cache is not None and update and cache.network is not None:
            cache.append_positions(positions, q_valid)
        elif cache is not None and update:  # the textdiff network recorded them, all valid: restore the padding
            cache.valid[:, -L:] = q_valid
        if not self.shift:
            return raw
        first = cache.boundary if cache is not None and cache.boundary is not None else raw[:, :1]
        if cache is not None and update:
            cache.boundary = raw[:, -1:]
        return torch.cat([first, raw[:, :-1]], dim=1)  # row i predicts token i from position i - 1

    def _network(self, ids, allowed, positions, cache, update) -> torch.Tensor:
        """The causal network on ``ids`` [B, Q] with bool mask [B|1, 1, Q, K] -> logits [B, Q, V]."""
        if self.textdiff_network:
            out = self.hf(ids, attention_mask=allowed, position_ids=positions, cache=cache, update_cache=update)
            return out.logits[..., : self.config.vocab_size]
        dtype = next(self.hf.parameters()).dtype
        if not dtype.is_floating_point:
            dtype = torch.float32
        additive = torch.zeros(allowed.shape, dtype=dtype, device=ids.device).masked_fill(~allowed, torch.finfo(dtype).min)
        call = {"input_ids": ids, "attention_mask": additive, "position_ids": positions}
        past = None
        if cache is not None:
            past = cache.network.get_seq_length()
            call.update({self._cache_kwarg: cache.network, "use_cache": True})
        else:
            call["use_cache"] = False
        logits = self.hf(**call).logits  # [B, Q, V']
        if cache is not None and not update and cache.network.get_seq_length() > past:
            cache.network.crop(past - cache.network.get_seq_length())  # a denoising step leaves the cache as it was
        return logits[..., : self.config.vocab_size]

    # ---- saving and loading -----------------------------------------------------------------------
    def spec(self) -> dict:
        return {"kind": "adapted", "target": self.target, "block_size": self.block_size, "shift": self.shift,
                "progress": self.progress, "anneal_rule": self.anneal_rule, "anneal_seed": self.anneal_seed,
                "vocab_size": self.config.vocab_size, "mask_token_id": self.config.mask_token_id}

    def save_pretrained(self, path, safe_serialization: bool = True, state_dict=None, **kwargs) -> None:
        """The network's own folder plus ``textdiff_denoiser.json`` (:meth:`spec`)."""
        path = Path(path)
        if state_dict is not None:
            state_dict = {k[3:] if k.startswith("hf.") else k: v for k, v in state_dict.items()}
        self.hf.save_pretrained(path, safe_serialization=safe_serialization, state_dict=state_dict, **kwargs)
        (path / DENOISER_FILE).write_text(json.dumps(self.spec(), indent=2))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """The network's own key names (a saved folder) or the wrapper's (``hf.`` prefix)."""
        if state_dict and not any(k.startswith("hf.") for k in state_dict):
            state_dict = {f"hf.{k}": v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def resize_token_embeddings(self, n: int):
        self.hf.resize_token_embeddings(n)
        self.config.vocab_size = n


def adapted_spec(path) -> Optional[dict]:
    """The ``textdiff_denoiser.json`` of an adapted-model folder, or None when ``path`` holds another kind."""
    from .loading import read_json

    file = Path(path) / DENOISER_FILE
    if not file.is_file():
        return None
    saved = read_json(file)
    return saved if isinstance(saved, dict) and saved.get("kind") == "adapted" else None


def from_spec(network: nn.Module, saved: dict, path, vocab_size: Optional[int] = None) -> AdaptedLM:
    """Rebuild a saved :class:`AdaptedLM` around its loaded ``network`` from its ``saved`` spec."""
    try:
        target, block_size, shift = saved["target"], saved.get("block_size"), bool(saved["shift"])
        vocab, mask_id = int(saved["vocab_size"]), int(saved["mask_token_id"])
        progress = float(saved.get("progress", 1.0))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{str(Path(path) / DENOISER_FILE)!r} lacks target / shift / vocab_size / mask_token_id; "
                          "the file is damaged") from None
    model = AdaptedLM(network, target, block_size, shift, vocab, mask_id, progress,
                      saved.get("anneal_rule", "random"), int(saved.get("anneal_seed", 0)))
    if vocab_size is not None and vocab_size > vocab:
        model.resize_token_embeddings(vocab_size)
    return model
