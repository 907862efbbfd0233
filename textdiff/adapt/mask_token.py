"""The [MASK] row of an adapted causal LM: which row, and how it starts.

An AR model has no [MASK]. The literature takes one of these routes:

* **reuse a row the model already has.** DiffuGPT-small and DiffuLLaMA take an ordinary vocabulary
  token as [MASK] (GPT-2 id 10541, LLaMA-2 id 811), its trained row unchanged; Dream (``<|mask|>``
  151666), Fast-dLLM v2 (``|<MASK>|`` 151665, both Qwen2.5) and SDAR (``<|MASK|>`` 151669, Qwen3)
  name a new token whose id falls in the rows Qwen pads its embedding with (151,936 rows for ~151,6xx
  tokens), so nothing is resized and the row keeps whatever the AR training left there. Here:
  ``keep`` (or ``token:<id>`` naming that very row);
* **a new row at the mean** of the trained rows (Hewitt 2021, "Initializing new word embeddings
  for pretrained language models": a new row far from the others distorts every softmax it enters):
  ``mean``;
* **the mean plus small noise**, e⃗ = mean + N(0, 1/d) per coordinate (d the width), as the
  LLaMA-Factory forks of SDAR resize their embeddings; transformers' own ``resize_token_embeddings``
  draws from N(mean, covariance of the rows) instead: ``noisy_mean``;
* a copy of another token's row (DiffuGPT-style reuse without giving up that token): ``token:<x>``.

The output head gets the same rule on its rows (and bias). Under SUBS the [MASK] output logit is −∞
anyway, and at adaptation step 0 no input is masked, so none of these choices changes the AR model's
step-0 loss; they differ in how far the first masked inputs push the hidden states.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import torch
import torch.nn as nn

from ..errors import ConfigError
from .config import parse_mask_init


def mask_source_id(mask_init: str, vocab: Optional[Mapping[str, int]] = None) -> Optional[int]:
    """The row that ``token:<x>`` copies (an id, or a token string looked up in ``vocab``); None otherwise."""
    kind, arg = parse_mask_init(mask_init)
    if kind != "token":
        return None
    if isinstance(arg, int):
        return arg
    if vocab is None or arg not in vocab:
        raise ConfigError(f"adapt.mask_init=token:{arg} names no single token of the tokenizer; give a token id "
                          "(token:<id>) or a string from the tokenizer's vocabulary")
    return int(vocab[arg])


@torch.no_grad()
def init_mask_row(weight: torch.Tensor, mask_id: int, mask_init: str, source_rows: int, source_id: Optional[int] = None,
                  bias: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> None:
    """Set row ``mask_id`` of ``weight`` [V, d] (and of ``bias`` [V]) in place, by ``mask_init``.

    ``source_rows``: rows [0, source_rows) hold trained tokens (padding rows past it are not
    averaged); the mask row itself is never part of the mean. ``source_id``: the row ``token:``
    copies (:func:`mask_source_id`)."""
    kind, _ = parse_mask_init(mask_init)
    rows, width = weight.shape
    if not 0 <= mask_id < rows:
        raise ConfigError(f"mask token id {mask_id} is outside the {rows} embedding rows; resize the embedding first")
    if kind == "keep":
        return
    if kind == "token":
        if source_id is None or not 0 <= source_id < source_rows or source_id == mask_id:
            raise ConfigError(f"adapt.mask_init copies row {source_id}, which is not a trained row other than the "
                              f"mask ({mask_id}); name a token id below {source_rows}")
        weight[mask_id] = weight[source_id]
        if bias is not None:
            bias[mask_id] = bias[source_id]
        return
    keep = torch.ones(min(source_rows, rows), dtype=torch.bool, device=weight.device)
    if mask_id < keep.numel():
        keep[mask_id] = False
    if not bool(keep.any()):
        raise ConfigError(f"no trained rows to average (source_rows={source_rows}); use mask_init=token:<id> or keep")
    mean = weight[: keep.numel()][keep].double().mean(0)  # [d]
    if kind == "noisy_mean":
        noise = torch.randn(width, generator=generator, dtype=torch.float64, device=generator.device if generator else None)
        mean = mean + noise.to(mean.device) / math.sqrt(width)
    weight[mask_id] = mean.to(weight.dtype)
    if bias is not None:
        bias[mask_id] = bias[: keep.numel()][keep].double().mean().to(bias.dtype)


def init_mask_rows(embedding: nn.Embedding, head: Optional[nn.Linear], mask_id: int, mask_init: str, source_rows: int,
                   source_id: Optional[int] = None, generator: Optional[torch.Generator] = None) -> None:
    """The [MASK] row of the input embedding and, unless tied to it, of the output head.

    Both must already have the row (transformers: ``resize_token_embeddings(n, mean_resizing=False)``)."""
    init_mask_row(embedding.weight, mask_id, mask_init, source_rows, source_id, generator=generator)
    if head is not None and head.weight is not embedding.weight:
        init_mask_row(head.weight, mask_id, mask_init, source_rows, source_id, bias=head.bias, generator=generator)
