"""The sampler interface shared by every sampler.

A sampler is bound to a forward process and reads the denoiser's logits through it. The generation
loop owns the model call and the blocks/caches; a sampler only sees one window::

    sampler.set_timesteps(num_steps)             # the time grid 1 = t_0 > t_1 > ... > t_N = 0
    sampler.begin(x_t, generator)                # optional: a grid that depends on the state
    for t, s in sampler.pairs():                 # consecutive (t, s) with s < t
        if sampler.finished(x_t): break          # optional early exit (nothing left to do)
        logits = model(x_t, t)                   # the loop calls the model
        x_t = sampler.step(logits, t, s, x_t, generator).x_s

Per-sampler knobs live in the sampler's config dataclass (which round-trips through JSON), never as
extra ``step`` arguments. Every categorical draw is float64 (see :mod:`textdiff.categorical`).

Cost: a step's work scales with what can change in it, not with B × L × V. The helpers below
work on ROWS of the logits (one row = one position's V logits), in float64 chunks of
:data:`~textdiff.categorical.CHUNK_ENTRIES` entries, with one float64 uniform per row and draw
(inverse-CDF, :func:`~textdiff.categorical.sample_rows`); absorbing processes first decide, without the
network, which positions leave [MASK] and only those rows are read. Every sampler draws its step's
uniforms as one ``uniform((B, L, k))`` call, so each row's noise comes from its own generator
whatever the other rows do (batch invariance).

Time grids: ``timesteps`` is either one grid ``[N + 1]`` shared by all rows (``pairs()`` gives python
floats) or one grid per row ``[B, N + 1]`` (``pairs()`` gives ``[B]`` float64 tensors). Per-row grids
serve samplers whose times are random and state dependent, e.g. first-hitting sampling, whose grid
is drawn in :meth:`Sampler.begin` once the sampler sees the window. ``t`` and ``s`` reaching ``step``
are always ``[B]`` tensors (the generation loop broadcasts floats).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from ..categorical import Generator, gather_rows, inverse_cdf, row_chunks, sample_rows, uniform
from ..errors import ConfigError, IncompatibleError
from .nucleus import nucleus


@dataclass
class SamplerConfig:
    name: str = "ancestral"
    temperature: float = 1.0  # divides the clean-token logits (0 = greedy)
    top_k: Optional[int] = None  # keep the k most likely clean tokens
    top_p: float = 1.0  # nucleus: keep the smallest set with this much mass

    def validate(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"sampler.temperature={self.temperature} must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"sampler.top_p={self.top_p} must be in (0, 1]")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"sampler.top_k={self.top_k} must be at least 1")


@dataclass
class StepOutput:
    x_s: torch.Tensor  # [B, L] the sample at the earlier time s
    x0_pred: Optional[torch.Tensor] = None  # [B, L] the sampler's current guess of the clean tokens


class Sampler(ABC):
    """Base class. Subclasses set ``compatible`` (process classes they can serve) and ``revises``."""

    config_class: ClassVar[type] = SamplerConfig
    #: names of the process families this sampler serves (checked at construction)
    compatible: ClassVar[tuple[str, ...]] = ()
    #: True if a committed (clean) token may change again (ReMDM-style remasking)
    revises: ClassVar[bool] = False
    #: True if this sampler's model call may be skipped when x_t did not change (cached-NFE)
    cache_unchanged: ClassVar[bool] = False

    def __init__(self, config: SamplerConfig, process):
        config.validate()
        self.config = config
        self.process = process
        family = type(process).__name__
        names = {c.registered_name for c in type(process).__mro__ if hasattr(c, "registered_name")}
        if self.compatible and not names & set(self.compatible):
            raise IncompatibleError(
                f"sampler {config.name!r} cannot serve process {process.config.name!r} ({family}); "
                f"it works with: {', '.join(self.compatible)}"
            )
        self.timesteps: Optional[torch.Tensor] = None

    # ---- time grid ----------------------------------------------------------------------------
    def set_timesteps(self, num_steps: int, device=None) -> None:
        """Uniform grid t_i = 1 − i / N, i = 0..N (N + 1 points, N steps)."""
        if num_steps < 1:
            raise ConfigError(f"steps={num_steps} must be at least 1")
        self.num_steps = int(num_steps)
        self.timesteps = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64, device=device)

    def begin(self, x_t: torch.Tensor, generator: Generator = None) -> None:
        """Called once per window after :meth:`set_timesteps`, with the initial x_t [B, L].

        The default does nothing; a sampler whose grid depends on the state (first-hitting) draws it
        here, replacing ``timesteps`` with a per-row grid [B, N + 1].
        """

    def pairs(self):
        """Consecutive (t, s) of the grid, s <= t: floats for a shared grid, [B] tensors per row."""
        if self.timesteps is None:
            raise ConfigError("call set_timesteps(num_steps) before sampling")
        if self.timesteps.dim() == 2:  # one grid per row
            cols = self.timesteps.unbind(1)
            return list(zip(cols[:-1], cols[1:]))
        ts = self.timesteps.tolist()
        return list(zip(ts[:-1], ts[1:]))

    def finished(self, x_t: torch.Tensor) -> bool:
        """True when further steps cannot change x_t [B, L] (the loop may stop early). Default False."""
        return False

    def _no_noise_left(self, x_t: torch.Tensor) -> bool:
        """For absorbing processes: no [MASK] left, so a non-revising sampler has nothing to do."""
        try:
            return not bool(self.process.is_noise(x_t).any())
        except IncompatibleError:
            return False

    # ---- the step -----------------------------------------------------------------------------
    @abstractmethod
    def step(self, logits: torch.Tensor, t, s, x_t: torch.Tensor, generator: Generator = None) -> StepOutput:
        """Move x_t [B, L] at time t to x_s at time s < t using the denoiser's ``logits`` [B, L, V]."""

    # ---- helpers shared by samplers -----------------------------------------------------------
    @staticmethod
    def rows(t, x_t: torch.Tensor) -> torch.Tensor:
        """A time given as a float, a [] or a [B] tensor -> [B] float64 on x_t's device."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device)
        return t.expand(x_t.shape[0]) if t.dim() == 0 else t.reshape(x_t.shape[0])

    def filter_logits(self, logits: torch.Tensor, temperature: Optional[float] = None) -> torch.Tensor:
        """Temperature, top-k and nucleus filtering of [..., V] logits (float32 -> float64 result).

        ``temperature`` overrides the config's (the confidence samplers' scores use 1 at temperature 0).
        """
        lg = logits.double()
        cfg = self.config
        temp = cfg.temperature if temperature is None else temperature
        if temp == 0:
            best = lg.argmax(-1, keepdim=True)
            return torch.full_like(lg, float("-inf")).scatter_(-1, best, 0.0)
        if temp != 1.0:
            lg = lg / temp
        if cfg.top_k is not None and cfg.top_k < lg.shape[-1]:
            # the k-th value found in the logits' own dtype: l -> l / T in float64 is strictly increasing
            # on distinct float32 / bf16 values, so the kept set is the one of the float64 comparison
            kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
            lg = lg.masked_fill(logits < kth, float("-inf"))
        if cfg.top_p < 1.0:
            lg = nucleus(lg, cfg.top_p, inplace=lg is not logits)  # a copy of ours: filtered in place
        return lg

    @property
    def filters(self) -> bool:
        """Whether temperature / top-k / top-p change anything (False at the defaults)."""
        cfg = self.config
        return cfg.temperature != 1.0 or cfg.top_k is not None or cfg.top_p < 1.0

    def filter_transition(self, probs: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """Apply temperature / top-k / top-p to a one-step transition distribution ``probs`` [B, L, V].

        Used by samplers that never form p_θ(x0 | x_t) (Euler, analytic). The probability of
        leaving x_t, J = 1 − p(x_t), is kept; only the choice of WHERE to jump is filtered::

            p̃(y) = (1 − J) [y = x_t] + J · filter(p(y) [y ≠ x_t] / J)

        so a low temperature sharpens the jump targets without freezing the chain. Identity (exactly)
        at the default knobs.
        """
        probs = probs.double()
        if not self.filters:
            return probs
        here = torch.nn.functional.one_hot(x_t, probs.shape[-1]).bool()
        jump = probs.masked_fill(here, 0.0)
        total = jump.sum(-1, keepdim=True)  # J [B, L, 1]
        moving = total > 0
        target = torch.softmax(self.filter_logits(torch.log(jump / total.clamp_min(1e-300))), dim=-1)
        target = torch.where(moving, target.nan_to_num(0.0), torch.zeros_like(target))
        return target * total + here.double() * (1.0 - total)

    # ---- row-wise kernels (cost proportional to the rows that are read) ---------------------------
    @staticmethod
    def step_uniforms(x_t: torch.Tensor, k: int, generator: Generator = None) -> torch.Tensor:
        """[B, L, k] float64 U(0, 1): the step's noise, k values per position, row b from generator b."""
        return uniform((x_t.shape[0], x_t.shape[1], k), generator, x_t.device)

    def draw_rows(self, rows: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Tokens [n] from the filtered softmax of clean-token logits ``rows`` [n, V], one uniform
        ``u`` [n] each (float64 inverse CDF). Temperature 0 is the argmax: no noise is used."""
        if rows.shape[0] == 0:
            return torch.empty(0, dtype=torch.long, device=rows.device)
        if self.config.temperature == 0:
            return rows.argmax(-1)
        return sample_rows(rows, u, self.filter_logits if self.filters else None)

    def draw_clean_at(self, logits: torch.Tensor, where: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Tokens [n] at the noisy positions ``where`` [B, L] (bool), from p̃_θ(x0 | x_t) read
        through the process (only those rows of ``logits`` [B, L, V] are touched); ``u`` [B, L]."""
        bi, li = where.nonzero(as_tuple=True)
        out = torch.empty(bi.shape[0], dtype=torch.long, device=logits.device)
        for sl in row_chunks(bi.shape[0], logits.shape[-1]):
            rows = self.process.x0_logits_rows(gather_rows(logits, bi[sl], li[sl]), fresh=True)  # [c, V]
            out[sl] = self.draw_rows(rows, u[bi[sl], li[sl]])
        return out

    def draw_transition(self, probs_fn, logits, x_t, t, s, u, filtered: bool = True) -> torch.Tensor:
        """x_s [B, L] drawn at EVERY position from a process's one-step transition, row by row.

        ``probs_fn(logits [c, 1, V], x [c, 1], t [c], s [c]) -> [c, 1, V]`` (float64, unnormalised
        allowed) is one of the process's [B, L, V] functions, called on chunks of c positions (each
        its own row of length 1), so the full [B, L, V] float64 tensor never exists. ``filtered``:
        apply :meth:`filter_transition` (temperature / top-k / top-p on the jump targets).
        """
        B, L = x_t.shape
        flat_x, flat_u = x_t.reshape(-1), u.reshape(-1)
        out = torch.empty(B * L, dtype=torch.long, device=x_t.device)
        for sl in row_chunks(B * L, logits.shape[-1]):
            pos = torch.arange(sl.start, sl.stop, device=x_t.device)
            b, l = pos // L, pos % L
            x = flat_x[sl][:, None]  # [c, 1]
            probs = probs_fn(gather_rows(logits, b, l)[:, None], x, t[b], s[b])  # [c, 1, V]
            if filtered:
                probs = self.filter_transition(probs, x)
            out[sl] = inverse_cdf(probs[:, 0].to(torch.float64), flat_u[sl])
        return out.view(B, L)

    def x0_log_probs(self, logits, x_t, t) -> torch.Tensor:
        """Filtered log p_θ(x0 | x_t) [B, L, V] in float64, read through the process."""
        return torch.log_softmax(self.filter_logits(self.process.x0_logits(logits, x_t, t)), dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
