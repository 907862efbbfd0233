"""Confidence-ordered unmasking for masked diffusion: MaskGIT (Chang et al. 2022), LLaDA's
low-confidence remasking (Nie et al. 2025), Dream's top-k margin and entropy orderings (Ye et al.
2025), and Fast-dLLM's threshold parallel decoding (Wu et al. 2025).

One step, at every [MASK] position of x_t [B, L]:

1. draw a candidate x̂0 ~ p̃_θ(x0 | x_t), the filtered prediction (temperature / top-k / top-p;
   temperature 0 = argmax);
2. score every masked position (higher = commit first), by default (``score_from = "model"``) from
   the UNFILTERED p = p_θ(x0 | x_t), so that greedy decoding still has a meaningful order (LLaDA
   scores with the plain softmax too); with ``score_from = "sampling"`` from the filtered p̃ itself
   (Dream's ``sample_tokens``: softmax of the logits divided by the temperature when it is > 0,
   after top-k and top-p; textdiff applies top-k before top-p, Dream top-p first: the same when only
   one is set):

   * ``confidence``: p(x̂0) — LLaDA "low_confidence" remasking, MaskGIT, Dream "maskgit_plus";
   * ``margin``: p(top-1) − p(top-2) — Dream "topk_margin";
   * ``entropy``: Σ_v p(v) log p(v) = −H(p) — Dream "entropy";
   * ``random``: U(0, 1) — LLaDA "random" remasking (plain MDLM order);

   with ``order_temperature`` τ > 0 the order is sampled: positions are drawn without replacement
   with probability ∝ exp(score / τ) (Gumbel-top-k; Dream's ``alg_temp``);
3. commit x̂0 at the k best masked positions; the others stay [MASK] (they are "remasked").

The commit schedule gives k from the fraction m(t) of tokens still masked at time t::

    k = ceil(n_masked · (1 − m(s) / m(t))),   at least 1 while masks remain, all of them at s = 0

with ``commit_schedule`` = ``linear`` (m(t) = t: LLaDA's even split, remainder first),
``cosine`` (m(t) = cos(π/2 · (1 − t)): MaskGIT) or ``process`` (m(t) = 1 − α(t): the expected MDLM
rate; equal to ``linear`` for the log-linear schedule).

:class:`ThresholdSampler` (``threshold``, Fast-dLLM): commit every masked position whose confidence
p(x̂0) exceeds τ, and at least the most confident one per step (all of them at s = 0), so fewer steps
than the grid are often used (the loop stops once no [MASK] is left). With ``min_commit =
"even_split"`` the floor is the step's share of the window split evenly over the N steps, ⌊W / N⌋
plus one for the first W mod N steps (LLaDA 2.0's ``generate``; 1 when N = W).

Cost and precision: only the masked rows of the logits are read, once, in float64 chunks: the
weights w = 2^((l − max l) log2 e) give the draw (inverse CDF; at temperature 0 the argmax, no noise)
and the EXACT float64 scores (confidence w(x̂0) / Σ w, margin, entropy). With ``score_from =
"sampling"`` (and no top-k) the weights of p̃ come straight from the rows, temperature and the
nucleus cut included, without a sort (:func:`~.nucleus.filtered_weights`). Positions are ranked by
these values as they are; ties (equal scores, e.g. identical positions) go to the leftmost position.
Each row's scores are computed by the same row-wise kernel whatever the batch, so a batch gives the
rows decoded alone. Margin, entropy and random scores do not depend on x̂0, so those orderings draw
x̂0 only at the positions they commit (the same uniforms: the same x_s; ``x0_pred`` is then x_s).

Publishers' knobs (both samplers): ``suppress_ids`` sets those tokens' logits to −∞ before the
draw and the scores (never proposed, e.g. EOS / EOT to force full-length answers); ``deprioritize_ids`` lowers the
score of positions whose candidate is one of those tokens by ``deprioritize_by`` (confidence and
threshold: 1.0 puts them after every other candidate), so an early EOS / EOT is committed last.
``commit_rounding = "floor"`` with ``time_eps`` = ε gives Dream's schedule: the grid
t_i = 1 − i (1 − ε) / N and k = ⌊n (1 − s / t)⌋ (possibly 0) with everything at the last step.
``mask_logit = "keep"`` leaves the [MASK] logit in the softmax that gives candidates and scores
(the probability normaliser of LLaDA 2.1's generate, which ranks by a softmax over the whole
vocabulary; the default ``"drop"`` is SUBS, p over the clean tokens). ``first_commit = "leftmost"`` makes the first step of every window commit only its leftmost [MASK]
(Fast-dLLM's block-wise Dream decoding fixes the block's first token at the forward that refreshes
its cache; the other steps follow the rule, on the rest of the grid).

Neither sampler ever changes a committed token (``revises = False``). Block-wise (semi-AR) decoding,
as in LLaDA, is the ``block_size`` of ``generate()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..categorical import Buffers, gather_rows, row_chunks
from ..errors import ConfigError
from ..registry import register
from .base import Sampler, SamplerConfig, StepOutput
from .draws import step_uniforms, torch_order_draw
from .nucleus import filtered_weights
from .unmask_rows import (ExactScores, RowKernel, argmax_rows, greedy_confidence_bounds, rank_commit,
                          rank_commit_bounded)


class _Unmasker(Sampler):
    """Shared parts of the confidence samplers: candidate draw and scores, on the masked rows only."""

    #: the noisy positions must be known: an absorbing graph (masked, block, sedd_absorb)
    requires = {"graph": "absorbing"}
    #: which score the ranking uses (ConfidenceSampler reads its config)
    ordering = "confidence"
    #: scores from p̃ without top-k read its float64 weights straight from the logit rows, nucleus cut
    #: included (:func:`~.nucleus.filtered_weights`); False: filter the rows (``self.filter``), then score
    fused_filter = True

    def finished(self, x_t):
        return self._no_noise_left(x_t)

    @property
    def _buffers(self) -> Buffers:
        """The row kernels' scratch tensors, kept from step to step (no fresh pages every step)."""
        if getattr(self, "_scratch", None) is None:
            self._scratch = Buffers()
        return self._scratch

    def x0_rows(self, rows):
        """The gathered logit rows [c, V] (the caller's copy) as the publisher normalises them: the
        process's log p_θ(x0 | x_t) ([MASK] at −∞) or, with ``mask_logit = "keep"``, as they are."""
        if self.config.mask_logit == "keep" and not getattr(self, "_drop_mask", False):
            return rows if rows.dtype in (torch.float32, torch.float64) else rows.float()
        return self.process.x0_logits_rows(rows, fresh=True)

    def no_mask_left(self, logits, x_t, x0_hat, where, u):
        """x̂0 [B, L] with the positions ``where`` whose candidate is [MASK] itself (possible with
        ``mask_logit = "keep"``) drawn again without it: the step to s = 0 leaves no [MASK]."""
        again = where & self.process.is_noise(x0_hat)
        if not bool(again.any()):
            return x0_hat
        self._drop_mask = True
        try:
            return torch.where(again, self.candidates(logits, x_t, again, u)[0], x0_hat)
        finally:
            self._drop_mask = False

    def suppress(self, rows):
        """Logit rows [c, V] (the caller's own copy) with ``suppress_ids`` set to −∞ in place."""
        ids = self.config.suppress_ids
        if ids:
            rows[:, list(ids)] = float("-inf")
        return rows

    def deprioritize(self, score, x0_hat):
        """``score`` [B, L] lowered by ``deprioritize_by`` where x̂0 [B, L] is a ``deprioritize_ids`` token."""
        ids = self.config.deprioritize_ids
        if not ids:
            return score
        hit = torch.isin(x0_hat, torch.as_tensor(list(ids), device=x0_hat.device))
        return score - self.config.deprioritize_by * hit.to(score.dtype)

    def candidates(self, logits, x_t, noise, u, draw_x0: bool = True):
        """(x̂0 [B, L], score [B, L] float64) at the masked positions ``noise`` [B, L].

        x̂0 ~ p̃_θ(x0 | x_t) (filtered; argmax at temperature 0) with the uniforms ``u`` [B, L];
        the score is computed exactly in float64 from the UNFILTERED p = p_θ(x0 | x_t) or, with
        ``score_from = "sampling"``, from p̃ itself (module docstring). Other positions: x̂0 = x_t,
        score −∞. One :class:`~.unmask_rows.RowKernel` pass per chunk of masked rows. Without
        ``draw_x0`` only the scores are computed (x̂0 = x_t): for orderings whose score does not
        depend on x̂0, whose draws are then made at the committed positions alone.
        """
        B, L = x_t.shape
        x0_hat = x_t.clone()
        score = torch.full((B, L), float("-inf"), dtype=torch.float64, device=x_t.device)
        cfg, kind = self.config, self.ordering
        if not draw_x0 and kind == "random":
            return x0_hat, score  # the random order's scores are uniforms: nothing to read
        bi, li = noise.nonzero(as_tuple=True)
        sampling = cfg.score_from == "sampling" and self._scores_filtered
        if not draw_x0:
            draw = "none"
        elif cfg.temperature == 0:
            draw = "argmax"
        else:
            draw = "plain" if sampling or not self.filter.active else "filtered"
        kernel = RowKernel(kind, draw, self.filter, self._buffers)
        fused = sampling and cfg.top_k is None and self.fused_filter  # p̃'s weights straight from the rows
        for sl in row_chunks(bi.shape[0], logits.shape[-1]):
            b, l = bi[sl], li[sl]
            mine = kernel.bufs.get("rows", (b.numel(), logits.shape[-1]), logits.dtype, logits.device)
            rows = self.suppress(self.x0_rows(gather_rows(logits, b, l, out=mine)))  # [c, V]
            if fused:  # score (and draw) from p̃ = softmax(l / T) after top-p, as float64 weights
                top, m = argmax_rows(rows) if draw == "argmax" or kind == "margin" else (None, None)
                f = filtered_weights(rows, cfg.temperature or 1.0, cfg.top_p, kernel.bufs, m, entropy=kind == "entropy",
                                     weights=not (kind == "entropy" and draw == "none"))  # the scores alone
                tok, sc = kernel.weighted(f.d, f.w, u[b, l], top, total=f.total, wd=f.wd)
            else:
                if sampling:  # top-k too: the filtered rows, float64
                    rows = self.filter(rows, temperature=cfg.temperature or 1.0)
                tok, sc = kernel(rows, u[b, l])
            if tok is not None:
                x0_hat[b, l] = tok
            if sc is not None:
                score[b, l] = sc
        return x0_hat, score

    def torch_candidates(self, logits, x_t, noise, generator=None):
        """(x̂0 [B, L], p̃(x̂0) [B, L] float64; −∞ off ``noise``) drawn as the publisher draws them
        (``rng = "torch"``): every position of the window in one multinomial (one per row with a list of
        per-row generators), scored by the probability of the filtered softmax it was drawn from."""
        cfg = self.config
        B, L, V = logits.shape
        rows = self.suppress(self.x0_rows(logits.reshape(B * L, V).clone()))  # [B·L, V]
        if isinstance(generator, (list, tuple)):
            drawn = [torch_order_draw(rows[b * L:(b + 1) * L], cfg.temperature, cfg.top_k, cfg.top_p, g)
                     for b, g in enumerate(generator)]
            tok, p = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
        else:
            tok, p = torch_order_draw(rows, cfg.temperature, cfg.top_k, cfg.top_p, generator)
        x0_hat = torch.where(noise, tok.view(B, L), x_t)
        score = torch.where(noise, p.view(B, L).double(), torch.full((B, L), float("-inf"), dtype=torch.float64))
        return x0_hat, score

    def leftmost_first(self, logits, t, x_t, noise, generator=None):
        """With ``first_commit = "leftmost"``, on the first step of a window (t = 1): the StepOutput that
        commits the candidate x̂0 at each row's leftmost [MASK] only (one logit row read per row);
        otherwise None."""
        if self.config.first_commit != "leftmost" or not bool((self.rows(t, x_t) >= 1.0).all()):
            return None
        pick = noise & (noise.cumsum(1) == 1)  # [B, L] the leftmost masked position of each row
        greedy = self.config.temperature == 0
        u = torch.zeros(x_t.shape, dtype=torch.float64) if greedy else step_uniforms(x_t, 1, generator)[..., 0]
        x0_hat, _ = self.candidates(logits, x_t, pick, u)
        return StepOutput(x_s=torch.where(pick, x0_hat, x_t), x0_pred=x0_hat)

    def bounded(self, logits) -> bool:
        """Whether the greedy confidence path applies: argmax candidates ranked by p(x̂0) of float32
        logits (an order that is not sampled); then only the rows whose rank is in doubt go to float64."""
        cfg = self.config
        sampling = cfg.score_from == "sampling" and self._scores_filtered
        return (cfg.temperature == 0 and self.ordering == "confidence" and logits.dtype == torch.float32
                and getattr(cfg, "order_temperature", 0.0) == 0 and not sampling)

    def candidate_bounds(self, logits, x_t, noise):
        """(x̂0 [B, L], lo [B, L], hi [B, L]): greedy candidates and bounds lo ≤ score ≤ hi on the
        exact float64 confidence (−∞ off ``noise``), from one float32 pass per row
        (:func:`~.unmask_rows.greedy_confidence_bounds`); exact scores come from :meth:`candidates`."""
        B, L = x_t.shape
        x0_hat = x_t.clone()
        lo = torch.full((B, L), float("-inf"), dtype=torch.float64, device=x_t.device)
        hi = lo.clone()
        bi, li = noise.nonzero(as_tuple=True)
        for sl in row_chunks(bi.shape[0], logits.shape[-1]):
            b, l = bi[sl], li[sl]
            mine = self._buffers.get("rows", (b.numel(), logits.shape[-1]), logits.dtype, logits.device)
            rows = self.suppress(self.x0_rows(gather_rows(logits, b, l, out=mine)))
            x0_hat[b, l], lo[b, l], hi[b, l] = greedy_confidence_bounds(rows)  # (rows overwritten)
        exact = ExactScores(lambda where: self.deprioritize(
            self.candidates(logits, x_t, where, torch.zeros(B, L, dtype=torch.float64))[1], x0_hat), lo)
        return x0_hat, self.deprioritize(lo, x0_hat), self.deprioritize(hi, x0_hat), exact

    @property
    def _scores_filtered(self) -> bool:
        """Whether p̃ (Dream's scoring distribution: temperature when > 0, top-k, top-p) differs from p."""
        cfg = self.config
        return cfg.temperature not in (0.0, 1.0) or cfg.top_k is not None or cfg.top_p < 1.0


@dataclass
class _UnmaskerKnobs:
    #: token ids never proposed (logits at −∞), e.g. EOS / EOT for fixed-length answers
    suppress_ids: list[int] = field(default_factory=list)
    #: token ids whose positions are committed after the others (score lowered by ``deprioritize_by``)
    deprioritize_ids: list[int] = field(default_factory=list)
    deprioritize_by: float = 1.0
    #: the distribution the ordering scores come from: "model" = p_θ(x0 | x_t) unfiltered (LLaDA),
    #: "sampling" = the temperature / top-k / top-p filtered p̃ the candidate is drawn from (Dream)
    score_from: Literal["model", "sampling"] = "model"
    #: the first step of each window: "ranked" = the sampler's own rule, "leftmost" = commit only the
    #: window's leftmost [MASK] (Fast-dLLM's block-wise Dream decoding, at its cache-refresh forward)
    #: (threshold sampler) "block_start" = commit only a window's first position when it is [MASK] (Fast-dLLM v2)
    first_commit: Literal["ranked", "leftmost", "block_start"] = "ranked"
    #: where the random numbers come from: "rows" = textdiff's per-row float64 draws (batch-invariant),
    #: "torch" = one float32 ``torch.multinomial`` over the window per step, in the publisher's order
    #: (SDAR; a reference mode for parity tests, see :func:`~.draws.torch_order_draw`)
    rng: Literal["rows", "torch"] = "rows"
    #: the softmax that gives candidates and scores: "drop" = over the clean tokens ([MASK] at −∞,
    #: SUBS), "keep" = over the whole vocabulary, [MASK] included (LLaDA 2.1's generate)
    mask_logit: Literal["drop", "keep"] = "drop"

    def validate(self) -> None:
        super().validate()
        if self.rng not in ("rows", "torch"):
            raise ConfigError(f"sampler.rng={self.rng!r} must be 'rows' or 'torch'")
        if self.rng == "torch" and self.temperature == 0:
            raise ConfigError("sampler.rng='torch' reproduces a sampling publisher (SDAR); it needs temperature > 0")
        if self.mask_logit not in ("drop", "keep"):
            raise ConfigError(f"sampler.mask_logit={self.mask_logit!r} must be 'drop' or 'keep'")
        if self.score_from not in ("model", "sampling"):
            raise ConfigError(f"sampler.score_from={self.score_from!r} must be 'model' or 'sampling'")
        if self.first_commit not in ("ranked", "leftmost", "block_start"):
            raise ConfigError(f"sampler.first_commit={self.first_commit!r} must be 'ranked', 'leftmost' or 'block_start'")
        if self.first_commit == "block_start" and self.name != "threshold":
            raise ConfigError("sampler.first_commit='block_start' is the threshold sampler's (Fast-dLLM v2)")


@dataclass
class ConfidenceConfig(_UnmaskerKnobs, SamplerConfig):
    name: str = "confidence"
    #: which positions are committed first: confidence (LLaDA/MaskGIT), margin / entropy (Dream), random
    ordering: Literal["confidence", "margin", "entropy", "random"] = "confidence"
    #: how many tokens each step commits: linear (LLaDA), cosine (MaskGIT) or process (1 − α(t))
    commit_schedule: Literal["linear", "cosine", "process"] = "linear"
    #: > 0: sample the order ∝ exp(score / τ) instead of taking the top scores (Dream's alg_temp)
    order_temperature: float = 0.0
    #: k = ceil(...) and at least one per step (LLaDA), or floor(...) possibly 0 (Dream)
    commit_rounding: Literal["ceil", "floor"] = "ceil"
    #: the time grid ends at this ε instead of 0 (Dream's eps = 1e-3); the last step commits everything
    time_eps: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.rng == "torch" and (self.ordering != "confidence" or self.order_temperature > 0):
            raise ConfigError("sampler.rng='torch' draws as SDAR does; it goes with ordering='confidence' only")
        if self.order_temperature < 0:
            raise ConfigError(f"sampler.order_temperature={self.order_temperature} must be >= 0")
        if not 0.0 <= self.time_eps < 1.0:
            raise ConfigError(f"sampler.time_eps={self.time_eps} must be in [0, 1)")


@register("sampler", "confidence")
class ConfidenceSampler(_Unmasker):
    config_class = ConfidenceConfig

    def masked_fraction(self, t: torch.Tensor) -> torch.Tensor:
        """m(t) [B] float64: the fraction of the window still masked at time t."""
        t = t.double()
        kind = self.config.commit_schedule
        if kind == "linear":
            return t
        if kind == "cosine":
            return torch.cos(0.5 * math.pi * (1.0 - t))
        return self.process.survival(t)[1]  # 1 − α(t) in float64

    def set_timesteps(self, num_steps: int, device=None) -> None:
        super().set_timesteps(num_steps, device)
        if self.config.time_eps > 0:  # Dream: t_i = 1 - i (1 - eps) / N
            self.timesteps = torch.linspace(1.0, self.config.time_eps, num_steps + 1, dtype=torch.float64, device=device)

    def commit_counts(self, n: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """k [B] tokens to commit this step for ``n`` [B] masked positions."""
        m_t, m_s = self.masked_fraction(t), self.masked_fraction(s)
        frac = torch.where(m_t > 0, 1.0 - m_s / m_t.clamp_min(1e-300), torch.ones_like(m_t)).clamp(0.0, 1.0)
        last = s.double() <= self.config.time_eps + 1e-9  # the last step (s = eps, or 0) commits everything
        if self.config.commit_rounding == "floor":  # Dream: int(n (1 - s/t)), zero allowed
            return torch.where(last, n, torch.floor(n.double() * frac + 1e-9).long().clamp_max(n))
        k = torch.ceil(n.double() * frac - 1e-9).long()
        k = torch.where(last, n, k)
        return torch.minimum(torch.maximum(k, (n > 0).long()), n)

    @property
    def ordering(self):
        return self.config.ordering

    def step(self, logits, t, s, x_t, generator=None):
        noise = self.process.is_noise(x_t)  # [B, L]
        first = self.leftmost_first(logits, t, x_t, noise, generator)
        if first is not None:
            return first
        cfg = self.config
        k = self.commit_counts(noise.sum(1), self.rows(t, x_t), self.rows(s, x_t))
        if cfg.rng == "torch" and cfg.ordering == "confidence":  # the publisher's stream (SDAR "static")
            x0_hat, score = self.torch_candidates(logits, x_t, noise, generator)
            commit = rank_commit(self.deprioritize(score, x0_hat), noise, k)
            return StepOutput(x_s=torch.where(commit, x0_hat, x_t), x0_pred=x0_hat)
        if self.bounded(logits):  # greedy confidence: float64 only where the top-k is in doubt
            x0_hat, lo, hi, exact = self.candidate_bounds(logits, x_t, noise)
            commit = rank_commit_bounded(lo, hi, noise, k, exact)
            return StepOutput(x_s=torch.where(commit, x0_hat, x_t), x0_pred=x0_hat)
        random = cfg.temperature > 0 or cfg.ordering == "random" or cfg.order_temperature > 0
        # [B, L, 3]: candidate, random score, order noise; greedy, deterministic orders draw nothing
        u = step_uniforms(x_t, 3, generator) if random else torch.zeros(*x_t.shape, 3, dtype=torch.float64)
        # margin / entropy / random scores do not depend on x̂0: draw it at the committed positions only
        later = cfg.ordering in ("margin", "entropy", "random") and not cfg.deprioritize_ids
        x0_hat, score = self.candidates(logits, x_t, noise, u[..., 0], draw_x0=not later)
        score = self.deprioritize(score, x0_hat)
        if self.config.ordering == "random":
            score = u[..., 1]
        if self.config.order_temperature > 0:
            tiny = torch.finfo(torch.float64).tiny
            g = -torch.log(-torch.log(u[..., 2].clamp_min(tiny)).clamp_min(tiny))  # Gumbel(0, 1)
            score = score / self.config.order_temperature + g
        commit = rank_commit(score, noise, k)
        if later:  # the same uniforms u[..., 0] as a draw at every position: the same x_s
            x0_hat = self.candidates(logits, x_t, commit, u[..., 0])[0]
        return StepOutput(x_s=torch.where(commit, x0_hat, x_t), x0_pred=x0_hat)
