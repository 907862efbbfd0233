"""Row-wise draws shared by the samplers: cost proportional to the rows that are read.

They work on ROWS of the logits (one row = one position's V logits), in float64 chunks of
:data:`~textdiff.categorical.CHUNK_ENTRIES` entries, with one float64 uniform per row and draw
(inverse CDF, :func:`~textdiff.categorical.sample_rows`); absorbing processes first decide, without the
network, which positions leave [MASK], and only those rows are read. Every sampler draws its step's
uniforms as one :func:`step_uniforms` call, so each row's noise comes from its own generator whatever
the other rows do (batch invariance). The kernels of particular one-step laws live beside these:
:mod:`.unmask_rows` (confidence orderings), :mod:`.uniform_rows` (uniform graphs), :mod:`.nucleus` (top-p).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..categorical import Generator, gather_rows, inverse_cdf, row_chunks, sample_rows, uniform
from .filters import LogitFilter


def step_uniforms(x_t: torch.Tensor, k: int, generator: Generator = None) -> torch.Tensor:
    """[B, L, k] float64 U(0, 1): the step's noise, k values per position, row b from generator b."""
    return uniform((x_t.shape[0], x_t.shape[1], k), generator, x_t.device)


def draw_rows(rows: torch.Tensor, u: torch.Tensor, filt: LogitFilter) -> torch.Tensor:
    """Tokens [n] from the filtered softmax of clean-token logits ``rows`` [n, V], one uniform ``u``
    [n] each (float64 inverse CDF). Temperature 0 is the argmax: no noise is used."""
    if rows.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=rows.device)
    if filt.config.temperature == 0:
        return rows.argmax(-1)
    return sample_rows(rows, u, filt if filt.active else None)


def draw_clean_at(process, logits: torch.Tensor, where: torch.Tensor, u: torch.Tensor,
                  filt: LogitFilter) -> torch.Tensor:
    """Tokens [n] at the noisy positions ``where`` [B, L] (bool), from p̃_θ(x0 | x_t) read through the
    process (only those rows of ``logits`` [B, L, V] are touched); ``u`` [B, L]."""
    bi, li = where.nonzero(as_tuple=True)
    out = torch.empty(bi.shape[0], dtype=torch.long, device=logits.device)
    for sl in row_chunks(bi.shape[0], logits.shape[-1]):
        rows = process.x0_logits_rows(gather_rows(logits, bi[sl], li[sl]), fresh=True)  # [c, V]
        out[sl] = draw_rows(rows, u[bi[sl], li[sl]], filt)
    return out


def draw_transition(probs_fn, logits, x_t, t, s, u, filt: Optional[LogitFilter] = None) -> torch.Tensor:
    """x_s [B, L] drawn at EVERY position from a process's one-step transition, row by row.

    ``probs_fn(logits [c, 1, V], x [c, 1], t [c], s [c]) -> [c, 1, V]`` (float64, unnormalised
    allowed) is one of the process's [B, L, V] functions, called on chunks of c positions (each its own
    row of length 1), so the full [B, L, V] float64 tensor never exists. ``filt``: apply
    :meth:`LogitFilter.transition` (temperature / top-k / top-p on the jump targets); None: as given.
    """
    B, L = x_t.shape
    flat_x, flat_u = x_t.reshape(-1), u.reshape(-1)
    out = torch.empty(B * L, dtype=torch.long, device=x_t.device)
    for sl in row_chunks(B * L, logits.shape[-1]):
        pos = torch.arange(sl.start, sl.stop, device=x_t.device)
        b, l = pos // L, pos % L
        x = flat_x[sl][:, None]  # [c, 1]
        probs = probs_fn(gather_rows(logits, b, l)[:, None], x, t[b], s[b])  # [c, 1, V]
        if filt is not None:
            probs = filt.transition(probs, x)
        out[sl] = inverse_cdf(probs[:, 0].to(torch.float64), flat_u[sl])
    return out.view(B, L)


def torch_order_draw(rows: torch.Tensor, temperature: float, top_k, top_p: float, generator=None):
    """(token [n], its probability [n] float32): one ``torch.multinomial`` over the rows [n, V] in their
    own float32, in the order torch's generator gives (``generator``, or torch's global one) — the
    draw of SDAR's ``sample_with_temperature_topk_topp`` (logits / T when T ≠ 1, top-k, then top-p
    with the first token kept, softmax), for the samplers' reference-RNG mode (``rng = "torch"``).

    Not textdiff's own draw: it exists to reproduce a publisher's random stream in tests; the default
    per-row float64 draws (:func:`step_uniforms`) make results batch-invariant."""
    lg = rows.float()
    if temperature != 1.0:
        lg = lg / temperature
    if top_k:
        kth = torch.topk(lg, int(top_k), dim=-1).values[..., -1:]
        lg = torch.where(lg < kth, torch.full_like(lg, float("-inf")), lg)
    if top_p < 1.0:
        ordered, index = torch.sort(lg, descending=True)
        beyond = torch.softmax(ordered, dim=-1).cumsum(-1) > top_p  # [n, V] in the sorted order
        beyond[..., 1:] = beyond[..., :-1].clone()
        beyond[..., 0] = False  # the best token always stays
        lg = lg.masked_fill(torch.zeros_like(beyond).scatter(-1, index, beyond), float("-inf"))
    probs = torch.softmax(lg, dim=-1)
    token = torch.multinomial(probs, num_samples=1, generator=generator)  # [n, 1]
    return token[:, 0], probs.gather(-1, token)[:, 0]
