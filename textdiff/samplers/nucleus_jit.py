"""The nucleus cut and the kept-set sums as compiled loops over one row at a time (numba), on CPU.

:func:`~.nucleus.nucleus_cut` in eager PyTorch makes about seven passes over each [V] row (bin keys,
scatter-add, a compare, the extraction of the crossing bin, the threshold, the sums), each one a
kernel launch over memory. Here one row at a time stays in cache through three loops:

1. the bin masses: ``hist[key(w_j)] += w_j`` (the same bit-pattern keys as the eager code), each
   entry's bin kept as 2 bytes;
2. the crossing bin j* from the top (the deepest bin whose mass above, A_j, is below top_p · Z), and
   its tokens, found from those 2-byte bins, sorted and kept while A_j* + (the mass above them) <
   top_p · Z: this gives the cut, the smallest kept weight;
3. w ≥ cut decides, in branch-free (vectorised) loops, Σ w and Σ w d over the kept tokens, then
   zeroes the dropped weights in place when the caller reads them.

The loops run on the calling thread (``nogil``), one core: with one torch thread the cut and sums take
about half the eager passes' time per row; with many threads the eager passes are parallel, these not.

Two more loops serve :mod:`.nucleus`: the float64 log-weights of float32 rows in one loop
(:func:`log2_weights`), and the sums behind :func:`~.nucleus.p0_bounds` (:func:`mass_above`).

Same definition and same weights as the eager path, so the same kept set up to the rounding of the
float64 sums (which here run in another order); every value depends on its own row alone (the loops
do not depend on the row's place in the batch). ``tests/test_nucleus.py`` runs both paths against a
full sort. :mod:`.nucleus` imports this module on first use, when numba is installed and its JIT
is not switched off (``NUMBA_DISABLE_JIT``); otherwise its eager passes run.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

_jit = numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc"})


@_jit
def _rows(w, bits, d, top_p, low, nb, shift, mode, zero, cut, total, wd, hist, keys, idx):
    """For each row r of w [n, V] (bits: its int64 view; d: log-weights, read when mode == 2):
    cut[r]; with mode ≥ 1 also total[r] = Σ kept w; mode 2: wd[r] = Σ kept w d; with ``zero`` the
    dropped weights are set to 0 in place. Scratch: hist [nb + 7], keys [V] uint16, idx [V]."""
    n, V = w.shape
    for r in range(n):
        row, rbits = w[r], bits[r]
        for k in range(nb + 7):
            hist[k] = 0.0
        for j in range(V):  # 1. bin masses in hist[7 + bin]; bin 0 (most of a peaked row) spread
            # over slots 0..7 by j mod 8: no chain of dependent adds into one slot; the slot kept
            k = min(max((rbits[j] >> shift) - low, -(j & 7)), nb - 1) + 7
            hist[k] += row[j]
            keys[j] = k
        for k in range(7):
            hist[7] += hist[k]
        z = 0.0
        for k in range(7, nb + 7):
            z += hist[k]
        goal = top_p * z
        if not z > 0.0:  # a row of zeros keeps its zeros (NaN: garbage in, nothing out of range)
            cut[r] = 0.0
            if mode >= 1:
                total[r] = z
            if mode == 2:
                wd[r] = 0.0
            continue
        above, top = 0.0, nb - 1  # 2. the crossing bin: the deepest with A_j < top_p · Z
        while top > 0 and above + hist[7 + top] < goal:
            above += hist[7 + top]
            top -= 1
        m = 0  # the crossing bin's tokens, from the slots kept (2 bytes per entry; a branch rarely taken)
        for j in range(V):
            if keys[j] == top + 7:
                idx[m] = j
                m += 1
        vals = np.empty(m)
        for i in range(m):
            vals[i] = row[idx[i]]
        vals = np.sort(vals)  # ascending: walk it from the end
        c = vals[m - 1] if m else 0.0  # (m = 0 only for weights outside [0, 1]: then keep all)
        for i in range(m - 1, -1, -1):
            if above >= goal:
                break
            c = vals[i]
            above += c
        cut[r] = c
        if mode == 0:
            continue
        s, sd = 0.0, 0.0  # 3. the kept sums (read-only loops: vectorised, no branch), then the zeroing
        if mode == 2:
            drow = d[r]
            for j in range(V):
                s += row[j] if row[j] >= c else 0.0
                sd += row[j] * drow[j] if row[j] >= c else 0.0
            wd[r] = sd
        else:
            for j in range(V):
                s += row[j] if row[j] >= c else 0.0
        if zero:
            for j in range(V):
                row[j] = row[j] if row[j] >= c else 0.0
        total[r] = s


@_jit
def _log2(rows, m, scale, floor, d):
    """d[r, j] = max((rows[r, j] − m[r]) · scale, floor) in float64 (NaN stays NaN), one loop."""
    n, V = rows.shape
    for r in range(n):
        row, out, mr = rows[r], d[r], m[r]
        for j in range(V):
            x = (np.float64(row[j]) - mr) * scale
            out[j] = floor if x < floor else x


@_jit
def _above(e, rows, lx, out):
    """out[0, r] = Σ_j e[r, j], out[1, r] = Σ_{rows[r, j] > lx[r]} e[r, j], summed in float64."""
    n, V = e.shape
    for r in range(n):
        row, lrow, t = e[r], rows[r], lx[r]
        z, above = 0.0, 0.0
        for j in range(V):
            v = np.float64(row[j])
            z += v
            above += v if lrow[j] > t else 0.0
        out[0, r], out[1, r] = z, above


def mass_above(e, rows, lx, bufs):
    """(Σ e [n], Σ_{rows > lx} e [n]) in float64, for weights ``e`` and logits ``rows`` [n, V] (CPU,
    contiguous, one dtype) and the logits ``lx`` [n] to compare with: one loop per row."""
    out = bufs.get("nucleus_above", (2, e.shape[0]), torch.float64, e.device)
    _above(e.numpy(), rows.contiguous().numpy(), lx.contiguous().numpy(), out.numpy())
    return out[0].clone(), out[1].clone()


def log2_weights(rows, m64, scale: float, floor: float, d) -> None:
    """``d`` [c, V] float64 ← max((``rows`` − ``m64``[:, None]) · ``scale``, ``floor``): the float32 CPU
    rows of :func:`~.nucleus.log2_weights` in one loop (the same float64 operations, so the same d)."""
    _log2(rows.numpy(), m64.numpy(), float(scale), float(floor), d.numpy())


def cut_and_keep(w, top_p: float, low: int, nb: int, shift: int, bufs, mode: int, d=None, zero: bool = True):
    """(cut [n], total [n] or None, wd [n] or None) as float64 tensors; ``w`` [n, V] float64 CPU
    (mode 0: cut only, ``w`` untouched; 1: Σ kept w, and with ``zero`` the dropped weights zeroed in
    place; 2: also Σ kept w d, ``d`` [n, V] float64 as ``w``). ``bufs``: the caller's
    :class:`~textdiff.categorical.Buffers`."""
    n, V = w.shape  # (nb + 7 < 2^16 slots: nb < 75 · 128 for any V < 2^20 and top_p ≤ 1 − 2^-53)
    out = bufs.get("nucleus_out", (3, n), torch.float64, w.device)
    hist = bufs.get("nucleus_hist", (nb + 7,), torch.float64, w.device)
    keys = bufs.get("nucleus_slots", (V,), torch.uint16, w.device)
    idx = bufs.get("nucleus_idx", (V,), torch.int64, w.device)
    wn = w.numpy()
    dn = d.contiguous().numpy() if mode == 2 else wn
    _rows(wn, wn.view(np.int64), dn, float(top_p), int(low), int(nb), int(shift), int(mode), bool(zero and mode),
          out[0].numpy(), out[1].numpy(), out[2].numpy(), hist.numpy(), keys.numpy(), idx.numpy())
    return out[0], (out[1] if mode >= 1 else None), (out[2] if mode == 2 else None)
