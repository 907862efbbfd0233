"""Nucleus (top-p) filtering without a sort: the cut from a histogram of the weights' bit patterns.

Nucleus filtering (Holtzman et al. 2020) keeps, in each row of weights w [n, V] (p = w / Z,
Z = Σ w), every token whose preceding ranked mass is below top_p. With S(v) = Σ_{w_j > v} w_j the
mass strictly above a value v, token i is kept iff

    S(w_i) < top_p · Z,

so the kept set is {w ≥ cut}, the cut being the smallest kept weight; tokens tied with it are kept
whole (no order among equal weights is assumed), and the largest weight is always kept.

A sort costs O(V log V) per row (≈ 4 ms at V = 50,257 on one CPU core, more than a forward of a small
model per masked row). Here the cut takes a fixed number of O(V) passes, in float64, with rows that
hold their maximum at exactly w = 1 (w = 2^d with d = (l − max l) / T · log2 e ≤ 0):

1. **bins by bit pattern.** For w ∈ [0, 1], the top bits of the IEEE-754 pattern of w (exponent and
   the first :data:`BIN_BITS` mantissa bits) are a monotone key: bins of relative width 2^-BIN_BITS,
   2^BIN_BITS per octave; one shift of the int64 view, no logarithm;
2. **bin masses**: one scatter-add of w over the keys, row by row in input order (each row's sums
   depend on that row alone: batch invariance), then A_j = the mass of the bins above bin j. Every
   token of a bin above the crossing bin j* (the lowest with A_j < top_p · Z) is kept, every token
   below it dropped. Only the E octaves below 1 with V · 2^-E ≤ (1 − top_p) / 2 are searched: a
   weight below 2^-E is always dropped (its S is at least Z − V · 2^-E ≥ top_p · Z, as Z ≥ 1);
3. **the crossing bin exactly**: its few tokens (those whose key is j*'s) are extracted, sorted, and
   kept while A_j* + (the mass of the bin's tokens above them) < top_p · Z.

The result is the sort's kept set (``tests/test_nucleus.py``: against a full sort, ties and flat rows
included) for the cost of a few elementwise passes over the row (shift, scatter-add, compare): 6–12x
faster than a sort at V = 50,257 (``benchmarks/nucleus.py``). On CPU the same steps run as compiled
loops over one row at a time (:mod:`.nucleus_jit`, numba: the row stays in cache; 1.2–1.5x faster
than the eager passes, which stay for GPUs, for installs without numba, an optional extra
(``pip install 'textdiff[fast]'``), and as the reference; the tokens drawn are the same either way).

Where only p̃(x) at one token per row matters, and only through a monotone decision (UDLM's posterior
step), :func:`p0_bounds` brackets it from one float32 pass, without the cut.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
from typing import NamedTuple

import torch

from ..categorical import Buffers

LOG2E = 1.0 / math.log(2.0)
#: mantissa bits per bin: 2^7 = 128 bins per octave (a weight ratio of 1.0054 within a bin; a flat row at
#: T = 1 has ~200 tokens in its crossing bin, fewer at lower temperatures)
BIN_BITS = 7
_ONE_KEY = 1023 << BIN_BITS  # the key of w = 1.0: biased exponent 1023, zero mantissa
#: run the cut through the compiled row loops of :mod:`.nucleus_jit` on CPU when numba is there (False:
#: the eager passes everywhere; the tests compare the two)
USE_JIT = True


@functools.cache
def _numba_ready() -> bool:
    """Whether numba is installed and its JIT not switched off (imported only when first needed)."""
    return importlib.util.find_spec("numba") is not None and os.environ.get("NUMBA_DISABLE_JIT", "0") in ("", "0")


def _jit(*tensors: torch.Tensor):
    """:mod:`.nucleus_jit` when its compiled loops take ``tensors`` (2-D, contiguous, CPU, float32 or
    float64, no autograd), else None."""
    if not (USE_JIT and all(t.device.type == "cpu" and t.dim() == 2 and t.is_contiguous() and not t.requires_grad
                            and t.dtype in (torch.float32, torch.float64) for t in tensors) and _numba_ready()):
        return None
    from . import nucleus_jit

    return nucleus_jit


def nucleus_cut(w: torch.Tensor, top_p: float, bufs: Buffers | None = None) -> torch.Tensor:
    """cut [n] float64: the smallest kept weight of each row of ``w`` [n, V] (float64, ≥ 0, each row's
    maximum exactly 1) under nucleus filtering at ``top_p`` < 1; keep ``w >= cut`` (module docstring).
    On CPU the compiled row loops of :mod:`.nucleus_jit` run it; elsewhere the eager passes below."""
    if not 0.0 < top_p < 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1) for a cut")
    bufs = bufs or Buffers()
    if (jit := _jit(w)) is not None:
        return jit.cut_and_keep(w, top_p, *_bins(w.shape[1], top_p), bufs, mode=0)[0].clone()
    return _cut_eager(w, top_p, bufs)


def keep_nucleus(w: torch.Tensor, top_p: float, bufs: Buffers, d: torch.Tensor | None = None, zero: bool = True):
    """(Σ w [n], Σ w d [n] or None): zero, in place, the weights of ``w`` [n, V] (as :func:`nucleus_cut`'s)
    outside the nucleus at ``top_p``, and sum the kept weights (and, given the log-weights ``d``
    [n, V], finite, the kept w d) row by row. Without ``zero`` only the sums are asked for (``w`` is
    then left as it is, or zeroed: do not read it)."""
    if top_p < 1.0 and (jit := _jit(w, *([] if d is None else [d]))) is not None:
        _, total, wd = jit.cut_and_keep(w, top_p, *_bins(w.shape[1], top_p), bufs, mode=1 if d is None else 2, d=d,
                                        zero=zero)
        return total.clone(), (None if wd is None else wd.clone())
    if top_p < 1.0:
        below = torch.nextafter(cut := _cut_eager(w, top_p, bufs), torch.zeros_like(cut)).tolist()
        for r, b in enumerate(below):  # w > below  <=>  w >= cut: one branch-free pass per row, in place
            torch.nn.functional.threshold(w[r], b, 0.0, inplace=True)
    return w.sum(-1), (None if d is None else row_dots(w, d))


def row_dots(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """[n] Σ_v w[i, v] d[i, v] of float64 rows [n, V], one dot per row (each row's sum its own)."""
    if not w.shape[0]:
        return w.new_zeros(0)
    return torch.stack([torch.dot(w[i], d[i]) for i in range(w.shape[0])])


#: relative slack of :func:`p0_bounds`: its weights 2^y, y = (l − m) log2 e / T, are float32 for float32
#: rows; (l − m), the product and exp2 each round once (relative 2^-24, 2^-24, 2^-23 with Sleef), so a
#: weight is within |y| ln 2 · 2^-23 + 2^-23 ≤ 1.3e-5 of its value for y ≥ −144 (weights above
#: e^-100), and the weights below (V e^-100 ≪ 1e-30 in all) cannot move Z ≥ 1; float64 sums add ~V 2^-53.
BOUND_SLACK = 1e-4


def p0_bounds(rows: torch.Tensor, x: torch.Tensor, temperature: float, top_p: float, bufs: Buffers):
    """(lo [n], hi [n]) with lo ≤ p̃(x) ≤ hi for p̃ = softmax(``rows`` / T) after top-p (``top_p`` < 1),
    at the tokens ``x`` [n] of the logit rows ``rows`` [n, V], with no cut and no float64 exponential.

    With Z = Σ w and S = Σ_{l_j > l_x} w_j (the mass of the larger logits: at least the mass strictly
    above w(x), as the weights are monotone in the logits), x is kept if S < top_p · Z (module
    docstring); the kept mass Z' lies in [top_p · Z, Z], so p̃(x) = w(x) / Z' lies in
    [w(x) / Z, w(x) / (top_p · Z)] for a kept x, and in [0, w(x) / (top_p · Z)] always. Z and S come
    from the rows' own dtype's exponentials summed in float64, within :data:`BOUND_SLACK` of their
    values: the bounds hold for the values that :func:`filtered_weights` then computes exactly."""
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()  # bf16 / fp16 logits: float32 weights (the slack assumes at least that)
    m = rows.amax(-1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = bufs.get("e_bounds", rows.shape, rows.dtype, rows.device).copy_(rows).sub_(m[:, None])
    e = e.mul_(LOG2E / temperature).exp2_()  # [n, V] weights 2^{(l − m) log2 e / T}, maximum 1
    lx = rows.gather(-1, x[:, None])  # [n, 1]
    wx = e.gather(-1, x[:, None])[:, 0].to(torch.float64)
    if (jit := _jit(e, rows)) is not None:
        z, above = jit.mass_above(e, rows, lx[:, 0], bufs)
    else:
        zero = torch.zeros((), dtype=e.dtype, device=e.device)
        z = e.sum(-1, dtype=torch.float64)
        above = torch.where(rows > lx, e, zero).sum(-1, dtype=torch.float64)
    goal = top_p * z
    kept = above < goal * (1 - BOUND_SLACK)  # surely kept (the float64 S, over fewer tokens if any, is smaller)
    lo = torch.where(kept, (wx - 1e-37).clamp_min(0) / (z * (1 + BOUND_SLACK)), torch.zeros_like(wx))
    return lo, ((wx + 1e-37) / (goal * (1 - BOUND_SLACK))).clamp_max(1.0)  # (± 1e-37: float32 subnormals)


def _bins(V: int, top_p: float) -> tuple[int, int, int]:
    """(low, nb, shift): the key of 2^-E (keys below it are all dropped), the bins per row (bin 0 holds
    every weight below 2^-E · (1 + 2^-BIN_BITS)) and the shift of the int64 view that gives a key."""
    octaves = math.ceil(math.log2(2.0 * V / (1.0 - top_p)))  # V · 2^-E ≤ (1 − top_p) / 2
    low = max(0, _ONE_KEY - (octaves << BIN_BITS))
    return low, _ONE_KEY - low + 1, 52 - BIN_BITS


def _cut_eager(w: torch.Tensor, top_p: float, bufs: Buffers) -> torch.Tensor:
    """:func:`nucleus_cut` in eager PyTorch passes (any device)."""
    n, V = w.shape
    low, nb, shift = _bins(V, top_p)
    # [n, V] keys (a width padded to whole 8-byte words, pads −1, for the word scan below)
    Vp = -(-V // 8) * 8
    keys = bufs.get("nucleus_keys", (n, Vp), torch.int64, w.device)
    if Vp > V:
        keys[:, V:] = -1
    # (the top bin also takes what no weight in [0, 1] has, a NaN's pattern: no index out of range)
    key = torch.bitwise_right_shift(w.view(torch.int64), shift, out=keys[:, :V]).sub_(low).clamp_(0, nb - 1)
    hist = bufs.get("nucleus_hist", (n, nb), torch.float64, w.device).zero_()  # small: stays in cache
    hist.scatter_add_(1, key, w)  # [n, nb] the mass of each bin, row by row in input order
    down = hist.flip(-1)  # [n, nb] bin masses, largest weights first
    above = down.cumsum(-1) - down  # [n, nb] A: the mass of the bins above each bin
    goal = top_p * down.sum(-1)  # [n] top_p · Z
    crossing = (above < goal[:, None]).sum(-1) - 1  # [n] j*, counted from the top (-1: a row of zeros)
    rows, cols = _find(keys, (nb - 1 - crossing)[:, None], bufs)  # the crossing bin's tokens, row-major
    counts = torch.bincount(rows, minlength=n)  # [n]
    slot = torch.arange(rows.numel(), device=w.device) - (counts.cumsum(0) - counts)[rows]
    vals = torch.full((n, max(1, int(counts.max()) if n else 1)), -1.0, dtype=torch.float64, device=w.device)
    vals.index_put_((rows, slot), w.view(-1).take(rows * V + cols))  # [n, k] padded with −1
    vals = vals.sort(-1, descending=True).values
    before = above.gather(1, crossing.clamp_min(0)[:, None]) + vals.cumsum(-1) - vals  # [n, k] S of each
    kept = (before < goal[:, None]).logical_and_(vals >= 0).sum(-1)  # [n] ≥ 1 in every row with mass
    return vals.gather(1, (kept - 1).clamp_min_(0)[:, None])[:, 0]  # a row of zeros: −1 or 0, keeps its zeros


def _find(keys: torch.Tensor, target: torch.Tensor, bufs: Buffers) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) where ``keys`` [n, Vp] (Vp a multiple of 8) equals ``target`` [n, 1], row-major:
    one comparison pass, then a scan of the matches packed 8 to a 64-bit word (an eighth of the
    entries), then the 8 bytes of each word that holds a match."""
    n, Vp = keys.shape
    hit = torch.eq(keys, target, out=bufs.get("nucleus_hit", (n, Vp), torch.bool, keys.device))
    r, word = hit.view(torch.int64).nonzero(as_tuple=True)  # [k] words with a match
    at = (r * Vp + word * 8)[:, None] + torch.arange(8, device=keys.device)  # [k, 8] their bytes
    sub = hit.view(-1)[at].nonzero(as_tuple=True)
    return r[sub[0]], at[sub] - r[sub[0]] * Vp


def log2_weights(rows: torch.Tensor, temperature: float, bufs: Buffers, m=None,
                 floor: float = float("-inf")) -> tuple[torch.Tensor, torch.Tensor]:
    """(d [c, V], m [c]): base-2 log-weights d = (l − m) / T · log2 e of logit rows ``rows`` [c, V] in
    a float64 buffer, m the row maximum (float64; given as ``m`` [c] when the caller has it). l − m
    is exact for float32 / bf16 logits; one rounding follows; d = 0 at the maximum, −∞ where l = −∞
    (w = 2^d = 0 there), or ``floor`` where d is below it. Float32 rows on CPU take one compiled loop
    (:mod:`.nucleus_jit`), others three in-place passes: the same operations, the same d."""
    m = rows.amax(-1) if m is None else m
    m64 = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).to(torch.float64)
    d = bufs.get("d", rows.shape, torch.float64, rows.device)
    if rows.dtype == torch.float32 and (jit := _jit(rows)) is not None:
        jit.log2_weights(rows, m64, LOG2E / temperature, floor, d)
        return d, m64
    d.copy_(rows).sub_(m64[:, None]).mul_(LOG2E / temperature)
    return (d if floor == float("-inf") else d.clamp_min_(floor)), m64


class Filtered(NamedTuple):
    """Dream's scoring distribution p̃ of :func:`filtered_weights` for rows [c, V]."""
    d: torch.Tensor  # [c, V] float64 base-2 log-weights (finite)
    w: torch.Tensor | None  # [c, V] float64 weights 2^d on the kept tokens, 0 elsewhere: p̃ = w / total
    total: torch.Tensor  # [c] Σ w
    wd: torch.Tensor | None  # [c] Σ w d (asked for with ``entropy``): Σ p̃ ln p̃ = ln 2 (wd / total − log2 total)


def filtered_weights(rows: torch.Tensor, temperature: float, top_p: float, bufs: Buffers, m=None,
                     entropy: bool = False, weights: bool = True) -> Filtered:
    """Dream's scoring distribution p̃ = softmax(l / T) after top-p of logit rows ``rows`` [c, V], as
    float64 weights w = 2^d on the kept tokens and 0 elsewhere, with d the base-2 log-weights (finite
    everywhere: −∞ logits are read as a far negative number, whose weight is still 0), Σ w and, with
    ``entropy``, Σ w d. Without ``weights`` only the sums are wanted: w is None (one pass fewer).

    One pass per elementwise step (buffers reused), the cut and sums by :func:`keep_nucleus` (no
    sort); ``m`` [c]: the rows' maxima, when the caller has them."""
    d, _ = log2_weights(rows, temperature, bufs, m, floor=-1e300)  # −∞ -> finite: 0 · d = 0 in Σ w d
    w = torch.exp2(d, out=bufs.get("w", rows.shape, torch.float64, rows.device))
    total, wd = keep_nucleus(w, top_p, bufs, d if entropy else None, zero=weights)
    return Filtered(d, w if weights else None, total, wd)


def nucleus(lg: torch.Tensor, top_p: float, inplace: bool = False) -> torch.Tensor:
    """Nucleus filtering of float64 logits ``lg`` [..., V]: tokens outside the nucleus (module
    docstring; ties at the cut kept whole) get −∞, written into ``lg`` itself with ``inplace``."""
    if top_p >= 1.0:
        return lg
    shape, V = lg.shape, lg.shape[-1]
    flat = lg.reshape(-1, V)  # [n, V]
    bufs = Buffers()
    d, _ = log2_weights(flat, 1.0, bufs)
    w = torch.exp2(d, out=d)  # [n, V] weights, the maximum exactly 1
    drop = w < nucleus_cut(w, top_p, bufs)[:, None]
    out = flat.masked_fill_(drop, float("-inf")) if inplace else flat.masked_fill(drop, float("-inf"))
    return out.reshape(shape)
