"""Token editing for masked diffusion (LLaDA 2.1, inclusionAI 2026): mask-to-token commits as in
threshold decoding, plus token-to-token edits of the tokens this window already committed.

One step on a window x_t [B, W] with the candidates x̂0 and their confidences c = p(x̂0) of the
denoiser's prediction (argmax at temperature 0; the ``mask_logit`` normaliser of the confidence
samplers decides whether [MASK] stays in the softmax):

* **mask to token** (M2T): commit x̂0 at every [MASK] with c > τ (``threshold``), and at least the
  ``min_commit`` most confident [MASK]s (at least each step's share of an even split of the window
  over the steps, so the grid's mask phase always ends with no [MASK]; the step to s = 0 commits
  every [MASK] that is left);
* **token to token** (T2T): at every position the window had as [MASK] when it began (never a prompt,
  template or padding token) and that now holds a token, replace it by x̂0 when x̂0 differs from it
  and c > τ_edit (``editing_threshold``). M2T and T2T use the same logits, so a token committed in
  this step can be edited from the next step on.

The window ends when a step saw no [MASK] and made no edit, or once ``max_post_steps`` steps have run
with no [MASK] left (the publisher's "post" refinement passes); :meth:`finished` says so row by row,
and a finished row is left unchanged by later steps of a batch. The grid :meth:`begin` lays out is
the N steps of :meth:`set_timesteps` (the mask phase) followed by ``max_post_steps`` steps at
t = s = 0, enough for every window the rule can produce. With LLaDA 2.1's model card settings:
``threshold`` 0.7 / ``editing_threshold`` 0.5 (quality mode) or 0.5 / 0.0 (speed mode),
``max_post_steps`` 16, temperature 0, blocks of 32 with 32 steps, ``mask_logit = "keep"``.

This sampler revises committed tokens (``revises = True``) and reads the logits of committed
positions (``reads_committed = True``), so the loop computes every row of the window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError
from ..registry import register
from .base import SamplerConfig, StepOutput
from .confidence import _Unmasker, _UnmaskerKnobs
from .draws import step_uniforms
from .unmask_rows import rank_commit


@dataclass
class EditingConfig(_UnmaskerKnobs, SamplerConfig):
    name: str = "editing"
    #: mask to token: commit every [MASK] whose confidence exceeds this (LLaDA 2.1's ``threshold``)
    threshold: float = 0.95
    #: token to token: replace a committed token by x̂0 ≠ it when x̂0's confidence exceeds this
    editing_threshold: float = 0.9
    #: steps with no [MASK] left that may still edit (LLaDA 2.1's ``max_post_steps``)
    max_post_steps: int = 16
    #: the fewest [MASK]s committed per step while some remain (LLaDA 2.1's ``num_to_transfer``)
    min_commit: int = 1

    def validate(self) -> None:
        super().validate()
        if self.rng != "rows":
            raise ConfigError(f"sampler.rng={self.rng!r}: the editing sampler draws with textdiff's per-row generators only ('rows')")
        for key in ("threshold", "editing_threshold"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"sampler.{key}={getattr(self, key)} must be in [0, 1]")
        if self.max_post_steps < 0:
            raise ConfigError(f"sampler.max_post_steps={self.max_post_steps} must be >= 0")
        if self.min_commit < 1:
            raise ConfigError(f"sampler.min_commit={self.min_commit} must be at least 1")


@register("sampler", "editing")
class EditingSampler(_Unmasker):
    config_class = EditingConfig
    revises = True
    reads_committed: ClassVar[bool] = True

    def set_timesteps(self, num_steps: int, device=None) -> None:
        super().set_timesteps(num_steps, device)
        self._generated = None  # a new window: :meth:`begin` (or the first step) starts its counters

    def begin(self, x_t, generator=None) -> None:
        """Remember the window's generated positions (its [MASK]s now), start every row's counters and
        append the ``max_post_steps`` refinement steps (t = s = 0) to the grid."""
        self._generated = self.process.is_noise(x_t)  # [B, W] the positions this window decodes
        B = x_t.shape[0]
        self._post = torch.zeros(B, dtype=torch.long, device=x_t.device)  # steps run with no [MASK] left
        self._done = torch.zeros(B, dtype=torch.bool, device=x_t.device)
        self._index = 0
        self._mask_steps = self.timesteps.shape[-1] - 1
        post = torch.zeros(self.config.max_post_steps, dtype=self.timesteps.dtype, device=self.timesteps.device)
        self.timesteps = torch.cat([self.timesteps, post])

    def finished(self, x_t) -> bool:
        """Every row's window has ended (no [MASK] and no edit, or its post steps spent)."""
        return getattr(self, "_generated", None) is not None and bool(self._done.all())

    def min_commits(self, x_t) -> torch.Tensor:
        """k [B]: ``min_commit``, and at least step i's share of the window split evenly over the N
        mask-phase steps (⌊W / N⌋, plus one for the first W mod N steps)."""
        base, extra = divmod(x_t.shape[1], self._mask_steps)
        share = base + int(self._index < extra) if self._index < self._mask_steps else 0
        return torch.full((x_t.shape[0],), max(self.config.min_commit, share), dtype=torch.long, device=x_t.device)

    def step(self, logits, t, s, x_t, generator=None):
        cfg = self.config
        if getattr(self, "_generated", None) is None:
            self.begin_counters(x_t)
        noise = self.process.is_noise(x_t)  # [B, W]
        editable = self._generated & ~noise  # tokens this window committed
        u = torch.zeros(x_t.shape, dtype=torch.float64) if cfg.temperature == 0 else step_uniforms(x_t, 1, generator)[..., 0]
        x0_hat, conf = self.candidates(logits, x_t, noise | editable, u)  # conf = p(x̂0) float64
        conf = self.deprioritize(conf, x0_hat)
        m2t = noise & (conf > cfg.threshold)
        m2t |= rank_commit(conf, noise, self.min_commits(x_t))
        end = noise & (self.rows(s, x_t) <= 0)[:, None]  # the step to s = 0 leaves no [MASK]
        m2t |= end
        x0_hat = self.no_mask_left(logits, x_t, x0_hat, end, u)
        t2t = editable & (conf > cfg.editing_threshold) & (x0_hat != x_t)
        live = ~self._done  # [B]
        change = (m2t | t2t) & live[:, None]
        x_s = torch.where(change, x0_hat, x_t)
        quiet = ~noise.any(1)  # this step saw no [MASK]
        self._post += (quiet & live).long()
        ends = (quiet & ~t2t.any(1)) | (~self.process.is_noise(x_s).any(1) & (self._post + 1 > cfg.max_post_steps))
        self._done |= ends & live
        self._index += 1
        return StepOutput(x_s=x_s, x0_pred=x0_hat)

    def begin_counters(self, x_t) -> None:
        """A step without :meth:`begin` (a direct call): every [MASK] of x_t is a generated position."""
        if self.timesteps is None:
            self.set_timesteps(1, device=x_t.device)
        self.begin(x_t)
