"""The forward process: how clean tokens x0 are corrupted into x_t, and how a denoiser's logits
are read back (training loss, reverse posterior, rates, clean-token predictions).

Conventions used by every process:

* time t in [0, 1], t = 1 is pure noise; ``t`` is a tensor [B] (one time per row) or [B, L] (one
  time per token, as in block diffusion where every block has its own t);
* α(t) = survival probability of a token, from the process's schedule;
* logits are [B, L, V] from the denoiser; x0, x_t are [B, L] long tensors.

``loss`` is THE objective: the per-token integrand of the continuous-time NELBO (nats), shared by
training and evaluation. Its expectation over t ~ U(0, 1) summed over positions is an upper bound on
−log p(x0) (plus ``prior_loss``, which is ~0 for schedules that reach the prior).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..categorical import Generator, uniform
from ..errors import IncompatibleError
from ..registry import build_schedule


@dataclass
class ProcessConfig:
    name: str = "masked"
    schedule: Any = field(default=None, metadata={"registry": "schedule"})  # default: loglinear
    time_conditioning: bool = False  # feed t to the denoiser
    antithetic: bool = True  # stratified (low-discrepancy) t across the batch
    #: what a time-conditioned denoiser is fed (``network_time``): "t", "sigma" (σ(t) = −log α(t);
    #: SEDD, MDLM with time conditioning) or "zero" (MDLM / BD3-LM releases: adaLN layers fed σ = 0)
    time_input: str = "t"

    def __post_init__(self):
        if self.schedule is None:
            from ..config import resolve_section

            self.schedule = resolve_section("schedule", {"name": "loglinear"}, "process.schedule")
        if self.time_input not in TIME_INPUTS:
            from ..errors import ConfigError

            raise ConfigError(f"process.time_input={self.time_input!r}; use one of {', '.join(TIME_INPUTS)}")


TIME_INPUTS = ("t", "sigma", "zero")


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 -> float32; float32 and float64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row −log softmax(logits)[target], [N], returned in float32.

    Computed in the logits' own dtype, outside autocast: evaluation runs in float32 and is exact;
    bfloat16 training gets a 5× cheaper cross-entropy on CPUs (rounding of single terms is
    unbiased and averages out over the batch).
    """
    import torch.nn.functional as F

    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.cross_entropy(logits, target, reduction="none").float()


class ForwardProcess(ABC):
    """Base class: one subclass per family, with the math in its docstrings."""

    config_class = ProcessConfig
    #: the process needs a [MASK] token in the vocabulary
    needs_mask_token: bool = False
    #: the model may attend in any direction (AR sets this False)
    is_diffusion: bool = True
    #: attention the denoiser must use ("causal" for AR, "block_causal" for block diffusion); None: any
    required_attention: Optional[str] = None
    #: 1 when the logits predicting row position i come from position i − 1 (next-token models)
    logits_shift: int = 0

    def __init__(self, config: ProcessConfig, vocab_size: int, mask_id: Optional[int] = None):
        self.config = config
        self.vocab_size = int(vocab_size)
        if self.needs_mask_token and mask_id is None:
            raise IncompatibleError(
                f"process {config.name!r} needs a mask token; give the tokenizer a mask token (textdiff adds one when training a tokenizer)"
            )
        self.mask_id = mask_id
        self.schedule = build_schedule(config.schedule)

    # ---- time ---------------------------------------------------------------------------------
    @property
    def time_conditioning(self) -> bool:
        """Whether the denoiser must be given t."""
        return bool(self.config.time_conditioning)

    @property
    def time_dependent(self) -> bool:
        """Whether the denoiser's output can change with t (False when it is fed a constant)."""
        return self.time_conditioning and self.config.time_input != "zero"

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is fed for time t ([B] or [B, L], same shape back), per ``time_input``:
        t itself, σ(t) = −log α(t) from the schedule, or zeros (a model whose adaLN layers were
        trained on a constant σ = 0). Every caller that passes t to the model goes through here."""
        kind = getattr(self.config, "time_input", "t")
        if kind == "t":
            return t
        if kind == "zero":
            return torch.zeros_like(t)
        return self.schedule.sigma(t.double()).to(t.dtype)

    def sample_t(self, batch_size: int, device=None, generator: Generator = None,
                 seq_len: Optional[int] = None) -> torch.Tensor:
        """t ~ U(0, 1) [B]; with ``antithetic`` the B draws are stratified: (i + u) / B, shuffled
        by a single offset, which lowers the variance of the batch loss (MDLM's low-discrepancy sampler).
        ``seq_len`` (L) lets a process draw per-token times [B, L] (block diffusion); ignored here."""
        if self.config.antithetic and not isinstance(generator, (list, tuple)):
            u = uniform((1,), generator, device)
            t = (torch.arange(batch_size, device=device, dtype=torch.float64) + u) / batch_size
        else:
            t = uniform((batch_size,), generator, device)
        return t.float()

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.alpha(t)

    def survival(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(α(t), 1 − α(t)) in float64, shaped like ``t``, for the reverse (sampling) steps.

        t <= 0 is the DATA: (1, 0) exactly, whatever α(0) of the schedule is (a geometric or clipped
        schedule has α(0) < 1). The last step of every sampler goes to s = 0, so it leaves no noise.
        1 − α comes from the schedule's cancellation-free ``mask_rate``.
        """
        t = torch.as_tensor(t).to(torch.float64)
        a, m = self.schedule.alpha(t).to(torch.float64), self.schedule.mask_rate(t).to(torch.float64)
        data = t <= 0
        return torch.where(data, torch.ones_like(a), a), torch.where(data, torch.zeros_like(m), m)

    @staticmethod
    def per_token(t: torch.Tensor, x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Broadcast t [B] or [B, L] against x [B, L] -> [B, L] (float32, or ``dtype``)."""
        t = torch.as_tensor(t, device=x.device).to(dtype)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.dim() == 1:
            t = t[:, None]
        return t.expand(x.shape[0], x.shape[1])

    # ---- the forward process ------------------------------------------------------------------
    @abstractmethod
    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, frozen: Optional[torch.Tensor] = None,
                generator: Generator = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x0) [B, L]; positions where ``frozen`` [B, L] is True stay clean."""

    @abstractmethod
    def prior(self, shape, device=None, generator: Generator = None) -> torch.Tensor:
        """Draw x_1 from the limiting distribution, [B, L]."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-token NELBO integrand at time t, [B, L] (nats). E_t[sum_l loss] >= −log p(x0)."""

    # ---- how the denoiser is fed (block diffusion overrides these) -----------------------------
    def model_inputs(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> dict:
        """Keyword arguments of the denoiser call for a training / evaluation batch."""
        return {"input_ids": x_t}

    def model_logits(self, logits: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """Pick the [B, L, V] logits of x_t out of the denoiser's output."""
        return logits

    def prior_loss(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_1 | x0) || prior) per token [B, L]; zero when the schedule reaches the prior."""
        return torch.zeros_like(x0, dtype=torch.float32)

    # ---- reading the denoiser for sampling ----------------------------------------------------
    #: True when p_θ(x0 | x_t) at a clean (non-noise) position does not depend on the network (SUBS
    #: carry-over): generation then computes the logits of the noise positions only
    clean_logits_unused: bool = False

    def x0_logits(self, logits: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the clean token at every position, [B, L, V]."""
        return torch.log_softmax(upcast(logits), dim=-1)

    def x0_logits_rows(self, rows: torch.Tensor, fresh: bool = False) -> torch.Tensor:
        """Unnormalised log p_θ(x0 | x_t) [n, V] from the logits rows [n, V] of positions that are
        still noise (the row-wise samplers use it on the rows they draw; softmax normalises).
        ``fresh``: ``rows`` is the caller's own copy (e.g. gathered), which may be changed in place."""
        return upcast(rows)

    def x0_probs(self, logits: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p_θ(x0 | x_t) [B, L, V] (used by confidence samplers)."""
        return self.x0_logits(logits, x_t, t).exp()

    def reverse_probs(self, logits, x_t, t, s) -> torch.Tensor:
        """p_θ(x_s | x_t) [B, L, V] for s < t (ancestral samplers)."""
        raise IncompatibleError(
            f"process {self.config.name!r} has no ancestral posterior; use a sampler made for it (e.g. 'euler')"
        )

    def reverse_rate(self, logits, x_t, t) -> torch.Tensor:
        """Reverse-time rate matrix row R_θ(x_t -> y) [B, L, V] (Euler / tau-leaping samplers)."""
        raise IncompatibleError(
            f"process {self.config.name!r} gives no reverse rates; use 'ancestral' or a confidence sampler"
        )

    def is_noise(self, x_t: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: positions known to be still corrupted (only absorbing processes can tell)."""
        raise IncompatibleError(
            f"process {self.config.name!r} cannot tell noisy from clean tokens; confidence samplers need the masked process"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
