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

import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

import torch

from ..categorical import Generator, uniform
from ..dataclass_io import make_config, resolve_section
from ..errors import ConfigError, IncompatibleError
from ..registry import lookup
from ..schedules import build_schedule
from ..signatures import checked, checked_config


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
            self.schedule = resolve_section("schedule", {"name": "loglinear"}, "process.schedule")
        if self.time_input not in TIME_INPUTS:
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


@checked
def build_process(spec: Any, vocab_size: int, mask_id: Optional[int] = None) -> "ForwardProcess":
    """A process from a name, a mapping with ``name`` or a process config; ``mask_id`` (the [MASK]
    token) is required by processes that declare ``needs_mask_token``."""
    cfg = make_config("process", spec)
    return lookup("process", cfg.name)(cfg, vocab_size=vocab_size, mask_id=mask_id)


def process_class(process: Any) -> type["ForwardProcess"]:
    """The ForwardProcess subclass of ``process``: a process, its class, or (before anything is built)
    its config, name or mapping. The declared capabilities are class attributes, readable from it."""
    if isinstance(process, ForwardProcess):
        return type(process)
    if isinstance(process, type) and issubclass(process, ForwardProcess):
        return process
    return lookup("process", make_config("process", process).name)


class ForwardProcess(ABC):
    """Base class: one subclass per family, with the math in its docstrings."""

    config_class = ProcessConfig

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        checked_config(cls)  # MaskedConfig(bad_keyword=...) is a one-line ConfigError

    # ---- what the process offers, DECLARED (read by the samplers, the generation loop, the recipe
    # ---- rules and the evaluation code; class attributes, so they are known before anything is built)
    #: the corruption graph. "absorbing": a token jumps to [MASK] and stays there, so the noisy positions
    #: are known (:meth:`is_noise`) and a clean token never changes again; "uniform": a token jumps to
    #: any of the V states, so any position may be noise; None: nothing is corrupted (autoregressive)
    graph: ClassVar[Optional[Literal["absorbing", "uniform"]]] = None
    #: what the denoiser's logits are. "x0": logits of p_θ(x0 | x_t) (temperature / top-k / top-p act on
    #: them before :meth:`reverse_probs`); "score": log concentration ratios s_θ(x_t)_y ≈ p_t(y) / p_t(x_t)
    #: (SEDD), whose one-step law is the Tweedie step ``analytic_probs``. With ``graph`` it names the
    #: one-step law, so the samplers pick their row-wise kernels from these two declarations
    parameterization: ClassVar[Literal["x0", "score"]] = "x0"
    #: :meth:`reverse_probs` gives the posterior p_θ(x_s | x_t) of one step (ancestral samplers)
    gives_posterior: ClassVar[bool] = False
    #: :meth:`reverse_rate` gives the reverse-time rates R_θ(x_t → y) (Euler / tau-leaping samplers)
    gives_rates: ClassVar[bool] = False
    #: the process needs a [MASK] token in the vocabulary
    needs_mask_token: ClassVar[bool] = False
    #: a diffusion process (its loss is a NELBO, estimated over draws of t); False: an autoregressive
    #: model whose loss is the exact next-token NLL
    is_diffusion: ClassVar[bool] = True
    #: attention the denoiser must use ("causal" for AR, "block_causal" for block diffusion); None: any
    required_attention: ClassVar[Optional[Literal["causal", "block_causal"]]] = None
    #: 1 when the logits predicting row position i come from position i − 1 (next-token models; they are
    #: fed :attr:`start_token` before the first token)
    logits_shift: ClassVar[int] = 0
    #: True when p_θ(x0 | x_t) at a clean (non-noise) position does not depend on the network (SUBS
    #: carry-over): generation then computes the logits of the noise positions only
    clean_logits_unused: ClassVar[bool] = False
    #: the token a next-token process feeds before the first one (None for diffusion processes)
    start_token: Optional[int] = None
    #: how generation lays prompts and answer out (:mod:`textdiff.layouts`): "windows" (the prompt, then N new
    #: positions decoded in windows) or "next_token" (the start token first, one token per window and step)
    decoding_layout: ClassVar[str] = "windows"

    @classmethod
    def config_block_size(cls, config: ProcessConfig) -> Optional[int]:
        """The block length L' that a process of this class with ``config`` trains and decodes in
        (block diffusion), None when it has no block structure. Readable from a config alone."""
        return None

    @property
    def block_size(self) -> Optional[int]:
        """L' of block diffusion (:meth:`config_block_size` of this process's config), else None."""
        return self.config_block_size(self.config)

    def __init__(self, config: ProcessConfig, vocab_size: int, mask_id: Optional[int] = None):
        self.config = config
        self.vocab_size = _vocab_size(config.name, vocab_size)
        if self.needs_mask_token and mask_id is None:
            raise IncompatibleError(
                f"process {config.name!r} needs a mask token; give the tokenizer a mask token (textdiff adds one when training a tokenizer)"
            )
        if self.needs_mask_token:
            _check_mask_id(config.name, mask_id, self.vocab_size)
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
        kind = self.config.time_input
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

    def check_model(self, model_config) -> None:
        """Raise a one-line error unless a denoiser with ``model_config`` can serve this process
        beyond its attention kind (block diffusion: the same block size). Default: no constraint."""

    def prior_loss(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_1 | x0) || prior) per token [B, L]; zero when the schedule reaches the prior."""
        return torch.zeros_like(x0, dtype=torch.float32)

    # ---- reading the denoiser for sampling ----------------------------------------------------
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

    def unmask_probability(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """(α_s − α_t) / (1 − α_t) = (m_t − m_s) / m_t, m = 1 − α, in float64 (shape of t).

        Absorbing graphs: the chance that a [MASK] at time t is a clean token at s < t. It does not
        depend on the network (SUBS never predicts [MASK]), so samplers decide where tokens appear
        before drawing them. At s = 0 it is 1 (:meth:`survival`).
        """
        _, m_t = self.survival(t)
        _, m_s = self.survival(s)
        p = (m_t - m_s) / m_t.clamp_min(1e-300)
        return torch.where(m_t > 0, p, torch.ones_like(p)).clamp(0.0, 1.0)

    def is_noise(self, x_t: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: positions known to be still corrupted (``graph == "absorbing"`` only)."""
        raise IncompatibleError(
            f"process {self.config.name!r} cannot tell noisy from clean tokens; confidence samplers need the masked process"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def _vocab_size(name: str, vocab_size: Any) -> int:
    """The vocabulary size a process is built with: an integer >= 2 (a negative or zero size would
    build a process that fails, or silently does nothing, later)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < 2:
        raise ConfigError(f"process {name!r} was given vocab_size={vocab_size!r}; it must be an integer >= 2 "
                          "(the model's config.vocab_size)")
    return int(vocab_size)


def _check_mask_id(name: str, mask_id: Any, vocab_size: int) -> None:
    if isinstance(mask_id, bool) or not isinstance(mask_id, numbers.Integral) or not 0 <= mask_id < vocab_size:
        raise IncompatibleError(f"process {name!r} was given mask_id={mask_id!r}, not a token id of the model's "
                                f"{vocab_size} (0..{vocab_size - 1}); use the tokenizer's mask_token_id with a model "
                                "whose vocabulary includes it")


def causal_diffusion_note(process_name: str, attention: Optional[str], is_diffusion: bool,
                          required: Optional[str]) -> Optional[str]:
    """The warning text for a diffusion process on a causal network, else None."""
    if attention != "causal" or not is_diffusion or required is not None:
        return None
    return (f"process {process_name!r} with causal attention: each position sees only the tokens before it, so a "
            "[MASK] cannot read the text after it; diffusion denoisers use attention=bidirectional "
            "(use process ar for a left-to-right model)")


checked_config(ForwardProcess)  # ProcessConfig(...) itself
