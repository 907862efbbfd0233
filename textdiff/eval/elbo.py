"""Likelihood: the NELBO of a dataset and its perplexity bound, with a confidence interval.

Every number comes from :func:`textdiff.objective.estimate_nelbo`, the one likelihood estimator
(training validation and ``DiffusionLM.score`` use it too) over the loss code training optimises, so an
evaluation and a training log measure the same thing. Row r's NELBO_r (nats) is defined there
(times t drawn per row: ``stratified``, ``antithetic`` or ``iid``; batch size and order change no
number); over the dataset::

    NELBO   = Σ_r NELBO_r / Σ_r n_r                                      (nats per token, n_r counted tokens)
    PPL bound = exp(NELBO) ≥ exp(−log p(data) / tokens)

For an autoregressive process (``process.is_diffusion`` False) the loss is the exact next-token
NLL, t is ignored, K = 1 and the estimator is named ``exact``.

Intervals (both are reported, at ``ci_level``):

* ``mc_ci``: the Monte-Carlo error of the t / x_t draws with the dataset held fixed, by the CLT:
  Var(NELBO) ≈ Σ_r s_r² / K / (Σ_r n_r)², s_r² the sample variance of row r's K totals (treating
  stratified draws as independent, which overstates their variance: the interval is conservative).
  This is the interval that must contain −log p(data) / tokens for an exact denoiser.
* ``bootstrap_ci``: a percentile bootstrap over rows (paired totals and token counts) of the ratio
  estimator; it adds the sampling variation of the rows and is the interval to quote for a corpus.

Bits per character: total nats / ln 2 / characters, with characters counted by decoding the
counted tokens of each row (special tokens dropped) plus one character per EOS (the document
separator it stands for). Exact for character-level vocabularies.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..objective import T_SAMPLING, estimate_nelbo
from ..signatures import checked
from .common import bootstrap_ratio, safe_exp, z_value


@dataclass
class LikelihoodResult:
    estimator: str  # "nelbo" (an upper bound on −log p) or "exact" (AR models)
    layout: Optional[str]  # "wrap" or "pad" (how documents became rows)
    seq_len: int
    rows: int
    tokens: int
    t_samples: int
    t_sampling: str
    nelbo: float  # nats per counted token
    ppl_bound: float  # exp(nelbo) (the exact perplexity for AR models)
    ci_level: float
    mc_ci: list  # [lo, hi] nats per token: Monte-Carlo error, dataset fixed
    bootstrap_ci: list  # [lo, hi] nats per token: resampling rows
    ppl_ci: list  # exp(bootstrap_ci)
    bits_per_token: float
    chars: Optional[int] = None
    bits_per_char: Optional[float] = None
    seconds: float = 0.0
    row_nats: list = field(default_factory=list, repr=False)  # per-row NELBO (nats), for reports / tests
    row_tokens: list = field(default_factory=list, repr=False)

    def to_dict(self, per_row: bool = False) -> dict:
        d = asdict(self)
        if not per_row:
            d.pop("row_nats")
            d.pop("row_tokens")
        return d


def _rows_as_tensors(rows, loss_mask=None):
    """(input_ids [N, L], loss_mask [N, L] float or None) from a datasets.Dataset or tensors."""
    if isinstance(rows, torch.Tensor):
        ids = rows.long()
        mask = None if loss_mask is None else torch.as_tensor(loss_mask).float()
    else:
        if len(rows) == 0:
            raise DataError("the evaluation dataset has no rows; check the source, seq_len and max_rows")
        cols = rows.with_format("torch")[:]
        ids = cols["input_ids"].long()
        mask = cols["loss_mask"].float() if "loss_mask" in cols else None
    if ids.dim() != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise DataError(f"the evaluation dataset is empty (input_ids of shape {list(ids.shape)}); give at least one row")
    return ids, mask


@checked
@torch.no_grad()
def evaluate_likelihood(
    model,
    process,
    rows,
    *,
    loss_mask=None,
    batch_size: int = 16,
    t_samples: int = 8,
    t_sampling: Literal["stratified", "antithetic", "iid"] = "stratified",
    seed: int = 0,
    ci_level: float = 0.95,
    bootstrap: int = 1000,
    max_rows: Optional[int] = None,
    layout: Optional[str] = None,
    tokenizer=None,
    device=None,
    progress=None,
) -> LikelihoodResult:
    """NELBO (or exact NLL) per token of ``rows`` under ``model`` / ``process``.

    rows: a ``datasets.Dataset`` with ``input_ids`` (and ``loss_mask`` for the pad layout), as made by
    :func:`textdiff.data.tokenize_rows`, or a LongTensor [N, L] (with ``loss_mask`` [N, L]).
    tokenizer: when given, characters are counted for bits per character.
    progress: a :class:`textdiff.progress.Progress` advanced by the rows of each batch (tokens: rows × L × K).
    Row r's noise comes from generators seeded by (seed, r, k) only: batch size does not change a number.
    """
    if t_sampling not in T_SAMPLING:
        raise ConfigError(f"t_sampling={t_sampling!r}; use one of {', '.join(T_SAMPLING)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be at least 1")
    ids, mask = _rows_as_tensors(rows, loss_mask)
    if max_rows is not None:
        ids = ids[:max_rows]
        mask = None if mask is None else mask[:max_rows]
    exact = not process.is_diffusion
    K = 1 if exact else int(t_samples)
    if K < 1:
        raise ConfigError(f"t_samples={t_samples} must be at least 1")
    device = torch.device(device) if device is not None else _model_device(model)
    N, L = ids.shape
    started = time.perf_counter()
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    totals, counts, prior = np.zeros((N, K)), np.zeros(N), np.zeros(N)  # Σ_l loss of row r at its k-th time
    for start in range(0, N, batch_size):
        stop = min(start + batch_size, N)
        est = estimate_nelbo(model, process, ids[start:stop].to(device), seed=seed, t_samples=K, t_sampling=t_sampling,
                             rows=range(start, stop), loss_mask=None if mask is None else mask[start:stop].to(device),
                             rows_per_call=batch_size)
        totals[start:stop], counts[start:stop], prior[start:stop] = est.totals.numpy(), est.tokens.numpy(), est.prior.numpy()
        if progress is not None:
            progress.update(stop - start, tokens=(stop - start) * L * K)
    if was_training:
        model.train()

    tokens = float(counts.sum())
    if tokens == 0:
        raise DataError("no token of the evaluation dataset is counted (every loss_mask is 0); check the data")
    row_nats = totals.mean(1) + prior  # [N]
    nelbo = float(row_nats.sum() / tokens)
    row_var = totals.var(1, ddof=1) / K if K > 1 else np.zeros(N)
    se = math.sqrt(float(row_var.sum())) / tokens
    z = z_value(ci_level)
    boot = bootstrap_ratio(row_nats, counts, ci_level, bootstrap, seed)
    chars = count_chars(ids, mask, tokenizer) if tokenizer is not None else None
    total_bits = float(row_nats.sum()) / math.log(2)
    return LikelihoodResult(
        estimator="exact" if exact else "nelbo", layout=layout if layout is not None else ("pad" if mask is not None else "wrap"),
        seq_len=L, rows=N, tokens=int(tokens), t_samples=K, t_sampling="none" if exact else t_sampling,
        nelbo=nelbo, ppl_bound=safe_exp(nelbo), ci_level=ci_level, mc_ci=[nelbo - z * se, nelbo + z * se],
        bootstrap_ci=boot, ppl_ci=[safe_exp(boot[0]), safe_exp(boot[1])], bits_per_token=nelbo / math.log(2),
        chars=chars, bits_per_char=(total_bits / chars) if chars else None, seconds=time.perf_counter() - started,
        row_nats=row_nats.tolist(), row_tokens=counts.tolist(),
    )


def count_chars(ids: torch.Tensor, mask: Optional[torch.Tensor], tokenizer) -> int:
    """Characters of the counted tokens: decoded text (special tokens dropped) + one per EOS."""
    eos = getattr(tokenizer, "eos_token_id", None)
    total = 0
    for r in range(ids.shape[0]):
        row = ids[r] if mask is None else ids[r][mask[r] > 0]
        row = row.tolist()
        total += len(tokenizer.decode(row, skip_special_tokens=True))
        if eos is not None:
            total += sum(1 for i in row if i == eos)
    return total


def text_rows(texts, tokenizer, seq_len: int, layout: str = "wrap", max_rows: Optional[int] = None):
    """Documents (a list of strings) -> rows in a layout, with :func:`textdiff.data.tokenize_rows`
    (the same code as training): ``wrap`` joins documents with EOS and drops the last partial row;
    ``pad`` keeps one document per row, truncated to seq_len − 1 tokens + EOS."""
    import datasets

    from ..config import DataConfig
    from ..data import tokenize_rows

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DataError("the evaluation dataset is empty (no non-blank documents); check the source")
    if layout not in ("wrap", "pad"):
        raise ConfigError(f"layout={layout!r}; use 'wrap' or 'pad'")
    cfg = DataConfig(source="embedded", layout=layout, seq_len=seq_len)
    rows = tokenize_rows(datasets.Dataset.from_dict({"text": texts}), tokenizer, cfg)
    if max_rows is not None and len(rows) > max_rows:
        rows = rows.select(range(max_rows))
    return rows


def _model_device(model) -> torch.device:
    if getattr(model, "hf_device_map", None):  # spread with device_map: the embedding's execution device
        from ..models.dispatch import input_device

        return input_device(model)
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")
