"""Random numbers and categorical sampling, always in float64.

Gumbel-max with float32 noise truncates the Gumbel tail and silently lowers the diversity of samples
(Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic masked models and exploit
inaccurate categorical sampling"). Every categorical draw in textdiff goes through
:func:`sample_categorical`, which works in float64.

Two exact float64 draws are offered:

* :func:`sample_categorical` / :func:`sample_from_logits`: Gumbel-max over a whole tensor, V noise
  values per draw (used where the tensors are small);
* :func:`sample_rows`: inverse-CDF over rows of logits, ONE float64 uniform per row, computed in
  chunks of :data:`CHUNK_ROWS` rows (cache-resident float64 temporaries). The samplers use it to draw
  only at the positions that change in a step, at a fraction of the cost of one forward at real
  vocabularies (``benchmarks/sampling.py``).

``generator`` may be one ``torch.Generator`` or a list with one generator per batch row; with a list,
row ``b`` draws its noise only from ``generator[b]``, which makes batched generation give exactly the
per-row results (batch invariance).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

Generator = Optional[Union[torch.Generator, Sequence[torch.Generator]]]


def uniform(shape: Sequence[int], generator: Generator = None, device=None, dtype=torch.float64) -> torch.Tensor:
    """U(0, 1) noise of ``shape`` [B, ...]; per-row generators when ``generator`` is a list."""
    shape = tuple(shape)
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]} rows; give one per row")
        rows = [_rand(shape[1:], g, device, dtype) for g in generator]
        return torch.stack(rows, 0) if rows else torch.empty(shape, device=device, dtype=dtype)
    return _rand(shape, generator, device, dtype)


def _rand(shape, generator, device, dtype):
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=dtype)
    return u.to(device) if device is not None else u


def gumbel(shape, generator: Generator = None, device=None) -> torch.Tensor:
    """Standard Gumbel noise in float64: −log(−log U)."""
    u = uniform(shape, generator, device)
    tiny = torch.finfo(torch.float64).tiny
    exponential = -torch.log(u.clamp_min(tiny))  # Exp(1) noise, > 0
    return -torch.log(exponential.clamp_min(tiny))


def sample_categorical(probs: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Draw indices from ``probs`` [..., V] (unnormalised allowed) by float64 Gumbel-max.

    Returns a long tensor of shape ``probs.shape[:-1]``.
    """
    p = probs.to(torch.float64)
    logp = torch.log(p)  # log 0 = -inf: those classes are never chosen
    return torch.argmax(logp + gumbel(p.shape, generator, p.device), dim=-1)


def sample_from_logits(logits: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Draw indices from ``softmax(logits)`` [..., V] by float64 Gumbel-max."""
    lg = logits.to(torch.float64)
    return torch.argmax(lg + gumbel(lg.shape, generator, lg.device), dim=-1)


#: entries per chunk of the row-wise float64 kernels (2^19 x 8 bytes = 4 MB of temporaries: about
#: 10 rows at V = 50,257, the whole batch at small V)
CHUNK_ENTRIES = 1 << 19


class Buffers:
    """Reused scratch tensors by name (a step's chunks all have the same width: no reallocation,
    so no page faults on every chunk)."""

    def __init__(self):
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape, dtype, device) -> torch.Tensor:
        n = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = self._bufs[name] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(shape)


def row_chunks(n: int, width: int):
    """Slices covering range(n) rows of ``width`` entries, about CHUNK_ENTRIES entries per chunk."""
    size = max(1, CHUNK_ENTRIES // max(1, int(width)))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def shifted_weights(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, m): w = exp(logits − m) in float64 [c, V] and the row maxima m [c, 1] (float64).

    The subtraction is done in float64 (exact for float32 inputs); rows that are all −∞ get w = 0.
    """
    m = logits.amax(-1, keepdim=True).to(torch.float64)  # exact in the rows' own precision
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return (logits.to(torch.float64) - m).exp_(), m


def gather_rows(logits: torch.Tensor, b: torch.Tensor, l: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rows ``logits[b, l]`` [n, V] of logits [B, L, V] (``index_select``, far cheaper than
    advanced indexing on CPU), written into ``out`` [n, V] when given (a reused buffer)."""
    B, L, V = logits.shape
    flat = logits.reshape(B * L, V)  # a view when contiguous
    return flat.index_select(0, b * L + l) if out is None else torch.index_select(flat, 0, b * L + l, out=out)


def normaliser(rows: torch.Tensor, out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, Z) [n] float64 with m = max of each row and Z = Σ exp(row − m), for rows [n, V].

    The exponentials and their (cascade) sum are taken in the rows' own precision (float32 logits:
    relative error of Z about 1e-6 at V = 50k, the order of the logits' own rounding); the samplers use
    it for the one number per position that decides whether it moves; their draws over V are float64.
    ``out`` [n, V] (the rows' dtype): a reused buffer for the exponentials (a fresh [n, V] temporary
    costs page faults on every chunk).
    """
    m = rows.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = rows - m if out is None else torch.sub(rows, m, out=out)
    return m[:, 0].to(torch.float64), e.exp_().sum(-1).to(torch.float64)  # cascade sum


#: block width of the two-level inverse CDF (rows wider than 4 blocks use it)
CDF_BLOCK = 512


def _search(c: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Indices [c]: the i with C_{i-1} <= target < C_i for running sums C = ``c`` [c, n] and ``target``
    [c, 1], or the first index reaching C_{n-1} when the target is not below it (a positive entry)."""
    idx = torch.searchsorted(c, target, right=True)
    last = torch.searchsorted(c, c[:, -1:].contiguous(), right=False)
    return torch.minimum(idx, last).squeeze(-1)


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Indices [c] drawn from the float64 weights [c, V] (>= 0, unnormalised) with uniforms u [c].

    Index i is chosen iff C_{i-1} <= u · Z < C_i (C the running sum, Z = C_{V-1}), so zero-weight
    entries are never chosen; a u · Z rounded up to Z falls back to the last positive entry.

    Wide rows (V > 4 · :data:`CDF_BLOCK`) are searched in two levels, the same rule in exact arithmetic:
    the block sums S_j (one reduction pass) pick the block j with S_0 + … + S_{j-1} <= u · Z < … + S_j,
    then the running sum of that block alone picks the entry; only [c, V / CDF_BLOCK + CDF_BLOCK]
    running sums are formed instead of [c, V] (the full-row cumsum is the slowest pass of a draw).
    """
    n, V = weights.shape
    u = u.to(torch.float64).reshape(-1, 1)
    if V <= 4 * CDF_BLOCK:
        c = weights.cumsum(-1)  # [c, V]
        return _search(c, u * c[:, -1:])
    nb, bw = V // CDF_BLOCK, CDF_BLOCK
    w = weights.contiguous()
    sums = torch.cat([w[:, : nb * bw].view(n, nb, bw).sum(-1), w[:, nb * bw:].sum(-1, keepdim=True)], 1)  # [c, nb + 1]
    run = sums.cumsum(-1)  # [c, nb + 1]
    target = u * run[:, -1:]
    blk = _search(run, target)  # [c] a block with positive mass
    before = torch.where(blk > 0, run.gather(1, (blk - 1).clamp_min(0)[:, None])[:, 0], torch.zeros_like(target[:, 0]))
    cols = blk[:, None] * bw + torch.arange(bw, device=w.device)  # [c, bw]
    inside = cols < V
    part = torch.where(inside, w.gather(1, cols.clamp_max(V - 1)), torch.zeros((), dtype=w.dtype, device=w.device))
    rest = (target[:, 0] - before).clamp_min(0)[:, None]  # [c, 1] >= 0 by the block rule
    return blk * bw + _search(part.cumsum(-1), rest)


def sample_rows(logits: torch.Tensor, u: torch.Tensor, transform=None) -> torch.Tensor:
    """Draw one index per row of ``logits`` [N, V] from softmax(logits), exactly in float64.

    ``u`` [N]: one U(0, 1) float64 per row (drawn by the caller from the row's own generator, which
    keeps batch invariance). ``transform`` (e.g. temperature / top-k / top-p) is applied per chunk.
    Inverse-CDF sampling: one exp pass and one running sum per row, chunked over rows.
    """
    out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    for sl in row_chunks(logits.shape[0], logits.shape[-1]):
        lg = logits[sl] if transform is None else transform(logits[sl])
        w, _ = shifted_weights(lg)
        out[sl] = inverse_cdf(w, u[sl])
    return out


def make_generators(seeds: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One generator per row, seeded by ``seeds``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def generator_for(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator whose seed is a fixed function of (seed, keys) (no Python ``hash``)."""
    value = int(seed) & 0xFFFF_FFFF
    for k in keys:
        value = (value * 1_000_003 + int(k) + 1) % (2**61 - 1)
    return torch.Generator().manual_seed(value)
