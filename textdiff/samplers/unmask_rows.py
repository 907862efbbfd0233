"""Row kernel of the confidence samplers: one candidate x̂0 and its exact float64 score per masked row.

For logit rows l [c, V] (the [MASK] and suppressed ids already at −∞) and the scoring distribution
p = softmax(l), with m = max l, base-2 log-weights d = (l − m) · log2 e (float64: l − m is exact for
float32 logits, one rounding follows), w = 2^d (exp2 is twice as fast as exp in float64 and as
accurate), Z = Σ w:

* ``confidence``: p(x̂0) = w(x̂0) / Z (at the argmax w = 2^0 = 1 exactly);
* ``margin``: p(top-1) − p(top-2) = (1 − w₂) / Z, w₂ the largest weight once the first maximum is
  removed (equal maxima give 0);
* ``entropy``: Σ_v p(v) ln p(v) = ln 2 · (Σ w d / Z − log2 Z) (entries with w = 0 contribute 0).

Each row is read a fixed number of times: one float32 pass of block maxima where the argmax is
needed (:func:`block_max` / :func:`first_argmax`), one float64 conversion into a reused buffer, done
in place (subtract, scale), one exp2 into a second reused buffer, one float64 sum, and for a draw the
two-level inverse CDF (:func:`~textdiff.categorical.inverse_cdf`); no slow indexed reduction or
running sum over V, no [B, L, V] tensor. Dream's scores from the filtered p̃ (``score_from =
"sampling"``) come from the same weights after the nucleus cut (:mod:`.nucleus`, no sort), through
:meth:`RowKernel.weighted`. Every value depends on its own row only (batch invariance).
"""
from __future__ import annotations

import math

import torch

from ..categorical import CDF_BLOCK, Buffers, inverse_cdf, shifted_weights
from .nucleus import log2_weights, row_dots

LN2 = math.log(2.0)


def block_max(rows: torch.Tensor) -> torch.Tensor:
    """[c, nb] maxima of the consecutive blocks of CDF_BLOCK entries of ``rows`` [c, V] (last one short)."""
    c, V = rows.shape
    nb = V // CDF_BLOCK
    heads = rows[:, : nb * CDF_BLOCK].view(c, nb, CDF_BLOCK).amax(-1)  # [c, nb] vectorised
    if nb * CDF_BLOCK < V:
        heads = torch.cat([heads, rows[:, nb * CDF_BLOCK:].amax(-1, keepdim=True)], 1)
    return heads


def first_argmax(rows: torch.Tensor, heads: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[c] the FIRST index of the maximum ``m`` [c] in each row of ``rows`` [c, V], as ``argmax``
    (rows without NaN): the first block whose maximum ``heads`` [c, nb] is m, then that block alone."""
    c, V = rows.shape
    bw = CDF_BLOCK
    blk = (heads == m[:, None]).to(torch.uint8).argmax(-1)  # [c] the first block reaching m
    cols = blk[:, None] * bw + torch.arange(bw, device=rows.device)  # [c, bw]
    part = rows.gather(1, cols.clamp_max(V - 1)).masked_fill_(cols >= V, float("-inf"))
    return blk * bw + part.argmax(-1)


class RowKernel:
    """Candidates and scores for chunks of rows; keeps its float64 buffers for all chunks of a step."""

    def __init__(self, ordering: str, draw: str, filt=None, bufs: Buffers | None = None):
        self.ordering, self.draw, self.filt = ordering, draw, filt
        self.bufs = bufs if bufs is not None else Buffers()

    def __call__(self, rows: torch.Tensor, u: torch.Tensor):
        """(x̂0 [c], score [c] float64 or None for ``random``) for logit rows ``rows`` [c, V].

        ``draw`` (constructor): ``"argmax"`` (no noise), ``"plain"`` (x̂0 ~ p with the uniforms ``u``
        [c]), ``"filtered"`` (x̂0 ~ softmax(``filt``(rows)), temperature / top-k / top-p) or
        ``"none"`` (scores only, x̂0 = None). The score is that of p = softmax(rows) (module
        docstring); ``rows`` is not modified.
        """
        kind, draw = self.ordering, self.draw
        top = m = None
        if draw == "argmax" or kind == "margin":
            top, m = argmax_rows(rows)
        if kind == "random" and draw == "none":
            return None, None
        if kind == "random" and draw != "plain":
            return (top if draw == "argmax" else inverse_cdf(shifted_weights(self.filt(rows))[0], u)), None
        # [c, V] float64: d = (l − m) log2 e, exact l − m; for the entropy −∞ (w = 0) -> finite: w d = 0 there
        d, _ = log2_weights(rows, 1.0, self.bufs, m, floor=-1e300 if kind == "entropy" else float("-inf"))
        w = torch.exp2(d, out=self.bufs.get("w", rows.shape, torch.float64, rows.device))  # [c, V]
        return self.weighted(d, w, u, top, rows)

    def weighted(self, d: torch.Tensor, w: torch.Tensor, u: torch.Tensor, top=None, rows=None, total=None, wd=None):
        """(x̂0 [c], score [c]) from base-2 log-weights ``d`` [c, V] (finite where the entropy needs them)
        and weights ``w`` = 2^d [c, V] (float64, the maximum 1 at ``top`` [c], the first argmax; 0 on
        filtered-out tokens): the score of p = w / Σ w, and x̂0 drawn from it (``"plain"``), the argmax
        or, ``"filtered"``, from softmax(``filt``(``rows``)). ``total`` = Σ w and ``wd`` = Σ w d [c]
        when the caller has them (:func:`~.nucleus.filtered_weights`; then the entropy with no draw
        reads neither ``d`` nor ``w``, which may be None)."""
        kind, draw = self.ordering, self.draw
        total = w.sum(-1) if total is None else total  # [c] Z
        if draw in ("argmax", "none"):
            tok = top if draw == "argmax" else None
        elif draw == "plain":
            tok = inverse_cdf(w, u)
        else:
            tok = inverse_cdf(shifted_weights(self.filt(rows))[0], u)
        if kind == "confidence":  # (a "none" draw has no x̂0 to score: the caller draws for confidence)
            return tok, w.gather(-1, tok[:, None])[:, 0] / total
        if kind == "margin":
            top1 = w.gather(-1, top[:, None])[:, 0]  # 1, or 0 for an all −∞ row
            w.scatter_(-1, top[:, None], 0.0)
            return tok, (top1 - w.amax(-1)) / total
        if kind == "entropy":  # Σ p ln p = ln 2 · (Σ w d / Z − log2 Z)
            wd = row_dots(w, d) if wd is None else wd
            return tok, (wd / total - torch.log2(total)) * LN2
        return tok, None


def argmax_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first argmax [c], maximum [c]) of each row of ``rows`` [c, V] (block maxima for wide rows)."""
    if rows.shape[1] < 4 * CDF_BLOCK:
        return rows.argmax(-1), rows.amax(-1)
    heads = block_max(rows)
    m = heads.amax(-1)
    return first_argmax(rows, heads, m), m


# ---- greedy confidence: one float32 pass, float64 only where the ranking needs it ------------------

#: relative bound on the error of the float32 normaliser Z' below: the difference l − m rounded to
#: float32 moves exp(l − m) by at most |l − m| 2^-24 ≤ 104 · 2^-24 ≈ 6.2e-6 relative where it does not
#: underflow (e^-104 · V is far below one float64 ulp of Z ≥ 1), the float32 exponential is within a
#: few ulps (2^-23 each; Sleef's is within 1) and the sum runs in float64; 1e-5 covers this with room.
GREEDY_BOUND = 1e-5


def greedy_confidence_bounds(rows: torch.Tensor):
    """(x̂0 [c], lo [c], hi [c]) for float32 logit rows [c, V] at temperature 0: x̂0 the first argmax
    and lo ≤ p(x̂0) = 1 / Σ exp(l − m) ≤ hi (the exact float64 confidence), from Z' = Σ exp(l − m)
    with float32 exponentials summed in float64 (:data:`GREEDY_BOUND`). ``rows`` (the caller's own
    copy) is overwritten by the exponentials."""
    small = rows.shape[1] < 4 * CDF_BLOCK
    heads = None if small else block_max(rows)
    m = rows.amax(-1) if small else heads.amax(-1)
    tok = rows.argmax(-1) if small else first_argmax(rows, heads, m)
    z = rows.sub_(m[:, None]).exp_().sum(-1, dtype=torch.float64)  # [c] Z', in place: no temporaries
    return tok, (1.0 - GREEDY_BOUND) / z, (1.0 + GREEDY_BOUND) / z


class ExactScores:
    """Exact float64 scores on demand: ``fn(where [B, L] bool) -> [B, L]`` computed once per position."""

    def __init__(self, fn, like: torch.Tensor):
        self.fn = fn
        self.have = torch.zeros_like(like, dtype=torch.bool)
        self.score = torch.full_like(like, float("-inf"), dtype=torch.float64)

    def __call__(self, where: torch.Tensor) -> torch.Tensor:
        need = where & ~self.have
        if bool(need.any()):
            self.score = torch.where(need, self.fn(need), self.score)
            self.have |= need
        return torch.where(where, self.score, torch.full_like(self.score, float("-inf")))


def rank_commit(score: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: the ``k`` [B] highest-``score`` [B, L] positions among ``eligible`` [B, L].

    Ranked by the float64 scores as they are; only exactly equal scores tie, and ties go to the
    leftmost position (stable sort).
    """
    score = torch.where(eligible, score.double(), torch.full_like(score, float("-inf"), dtype=torch.float64))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices  # [B, L]
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return eligible & (ranks < k[:, None])


def rank_commit_bounded(lo, hi, eligible, k, exact) -> torch.Tensor:
    """:func:`rank_commit` of the exact scores s, knowing only lo ≤ s ≤ hi [B, L] and ``exact(where)``.

    With λ the k-th largest lo and μ the (k+1)-th largest hi of a row, a position with lo > μ is in
    the top k (at most k positions can reach above μ) and one with hi < λ is not (k positions are
    strictly above it); the others are ranked by their exact scores for the remaining places, so the
    result is exactly :func:`rank_commit` on the exact scores (same ties), with float64 only there.
    """
    B, L = lo.shape
    ninf = torch.full_like(lo, float("-inf"))
    slo = torch.where(eligible, lo, ninf).sort(1, descending=True).values  # [B, L]
    shi = torch.where(eligible, hi, ninf).sort(1, descending=True).values
    n = eligible.sum(1)
    kk = k.clamp(0, L)
    inf = torch.full_like(lo[:, 0], float("inf"))
    lam = torch.where(kk > 0, slo.gather(1, (kk - 1).clamp_min(0)[:, None])[:, 0], inf)
    mu = torch.where(kk < n, shi.gather(1, kk.clamp_max(L - 1)[:, None])[:, 0], -inf)
    surely_in = eligible & (lo > mu[:, None])
    unsure = eligible & ~surely_in & ~(hi < lam[:, None])
    if not bool(unsure.any()):
        return surely_in
    return surely_in | rank_commit(exact(unsure), unsure, kk - surely_in.sum(1))
