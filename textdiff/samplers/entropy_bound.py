"""The entropy-bound (EB) sampler (Ben-Hamu et al. 2025, "Accelerated sampling from masked diffusion
models via entropy bounded unmasking"), for masked AND uniform processes; with the options of
DiffusionGemma's released decoding (transformers' ``DiffusionGemmaGenerationMixin``).

One step on a window x_t [B, W], with the tempered logits z = l / T of every candidate position
(masked process: the [MASK] positions; uniform process: every position):

1. draw x̂ ~ softmax(z) at every candidate (after top-k / top-p when set) and take its entropy H;
2. sort the candidates by H ascending, H_(1) ≤ H_(2) ≤ ..., and accept the largest prefix k with

       Σ_{i ≤ k} H_(i) − max_{i ≤ k} H_(i)  =  Σ_{i < k} H_(i)  ≤  γ      (γ = ``entropy_bound``)

   (the left side bounds the mutual information among the k tokens, so drawing them independently
   costs at most γ nats of KL to the joint); k ≥ 1 always (the empty sum is 0);
3. x_s = x̂ at the accepted positions. The others: masked process, they stay [MASK]; uniform process,
   they are RENOISED, redrawn uniformly from the V tokens (the uniform prior). On a uniform process
   every position is a candidate at every step, so an accepted token can be replaced later
   (``revises``).

At s = 0 (``output = "sample"``, the default) every candidate is accepted, so the window ends clean.

DiffusionGemma's options (all off by default):

* ``t_max`` / ``t_min``: the linear temperature schedule T(t) = t_min + (t_max − t_min) · t over the
  step grid t = n / N (n = N .. 1, the steps remaining), computed in float32 as transformers does;
  without them T = ``temperature``;
* ``self_conditioning``: the step's tempered logits z are handed to the denoiser at the next step
  (the loop passes :meth:`denoiser_inputs`; the network embeds softmax(z) as an extra input);
* ``stability_threshold`` S / ``confidence_threshold`` c (both set: the stable-and-confident stop): a
  row stops once its argmax canvas argmax z equals that of each of the S previous steps and the mean
  entropy of its window is below c; a stopped row keeps its canvas, argmax and conditioning logits, and
  the window ends when every row has stopped;
* ``output = "argmax"``: the window's result is the argmax canvas of its last step (per row, the step
  it stopped at), not the renoised canvas (:meth:`end`).

Noise: ``rng = "rows"`` (default) draws everything in float64 from each row's own generator (one
uniform per position for x̂ and one for the renoising draw: batch-invariant); the entropies are float64.
``rng = "torch"`` reproduces transformers' ``generate`` under ``torch.manual_seed``: the canvas is
redrawn with ``torch.randint`` when the window begins, and each step draws ``torch.multinomial`` over
the float32 softmax of all B · W rows then ``torch.randint`` for the renoising (whether accepted or
not, stopped rows too), with float32 entropies from ``torch.distributions.Categorical`` and
``torch.sort``'s order: the same random numbers in the same order (a parity mode; not batch-invariant).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ..categorical import inverse_cdf
from ..errors import ConfigError
from ..registry import register
from .base import Sampler, SamplerConfig, StepOutput
from .draws import step_uniforms


@dataclass
class EntropyBoundConfig(SamplerConfig):
    name: str = "entropy_bound"
    entropy_bound: float = 0.1  # γ (nats): Σ H − max H of the accepted tokens stays below it
    t_max: Optional[float] = None  # linear temperature schedule T(t) = t_min + (t_max − t_min) t (both or neither)
    t_min: Optional[float] = None
    stability_threshold: Optional[int] = None  # stop a row: argmax canvas unchanged for this many steps ...
    confidence_threshold: Optional[float] = None  # ... and its mean entropy below this (both or neither)
    self_conditioning: bool = False  # feed the step's tempered logits to the denoiser at the next step
    output: Literal["sample", "argmax"] = "sample"  # the window's result: the last sample, or the last argmax canvas
    rng: Literal["rows", "torch"] = "rows"  # per-row float64 draws, or torch's global generator in transformers' order

    def validate(self) -> None:
        super().validate()
        if not self.entropy_bound > 0:
            raise ConfigError(f"sampler.entropy_bound={self.entropy_bound} must be > 0")
        if (self.t_max is None) != (self.t_min is None):
            raise ConfigError("sampler.t_max and sampler.t_min set the temperature schedule together; give both or neither")
        if self.t_max is not None and not 0 <= self.t_min < self.t_max:
            raise ConfigError(f"sampler temperature schedule needs 0 <= t_min < t_max, got t_min={self.t_min}, t_max={self.t_max}")
        if (self.stability_threshold is None) != (self.confidence_threshold is None):
            raise ConfigError("sampler.stability_threshold and sampler.confidence_threshold make one stopping rule; "
                              "give both or neither")
        if self.stability_threshold is not None and self.stability_threshold < 0:
            raise ConfigError(f"sampler.stability_threshold={self.stability_threshold} must be >= 0")
        if self.confidence_threshold is not None and not self.confidence_threshold > 0:
            raise ConfigError(f"sampler.confidence_threshold={self.confidence_threshold} must be > 0")
        if self.output not in ("sample", "argmax"):
            raise ConfigError(f"sampler.output={self.output!r}; use 'sample' or 'argmax'")
        if self.rng not in ("rows", "torch"):
            raise ConfigError(f"sampler.rng={self.rng!r}; use 'rows' (per-row generators) or 'torch' (transformers' order)")


def entropy64(z: torch.Tensor) -> torch.Tensor:
    """H(softmax(z)) [...] in float64 of logits z [..., V] (−∞ entries allowed)."""
    logp = torch.log_softmax(z.double(), dim=-1)
    return -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)


def entropy_reference(z: torch.Tensor) -> torch.Tensor:
    """H(softmax(z)) [...] as transformers computes it (``Categorical(logits=z).entropy()``, z's dtype)."""
    return torch.distributions.Categorical(logits=z).entropy()


@register("sampler", "entropy_bound")
class EntropyBoundSampler(Sampler):
    """Entropy-bounded acceptance with renoising (module docstring)."""

    config_class = EntropyBoundConfig
    #: x0 logits on a masked / block (absorbing) or uniform graph; next-token processes excluded
    requires = {"parameterization": "x0", "logits_shift": 0}
    revises = True

    def __init__(self, config: EntropyBoundConfig, process):
        super().__init__(config, process)
        self.absorbing = process.graph == "absorbing"
        self.revises = not self.absorbing  # masked: a committed token stays; uniform: every position is redrawn
        self._reset(None)

    # ---- per-window state -----------------------------------------------------------------------------
    def _reset(self, x_t):
        self.done = None if x_t is None else torch.zeros(x_t.shape[0], dtype=torch.bool, device=x_t.device)
        self.argmax = None  # [B, W] the argmax canvas of the last step
        self.conditioning = None  # [B, W, V] the last tempered logits (self-conditioning)
        self.history = None  # [S, B, W] the argmax canvases of the last S steps

    def begin(self, x_t, generator=None):
        """Reset the window's state; with ``rng = "torch"`` on a uniform process, the window's starting
        canvas drawn as transformers draws it (returned: the loop puts it in place)."""
        self._reset(x_t)
        if self.config.rng == "torch" and not self.absorbing:
            return torch.randint(0, self.process.vocab_size, tuple(x_t.shape), device=x_t.device)
        return None

    def denoiser_inputs(self) -> dict:
        """Extra inputs of the next model call: the last tempered logits when self-conditioning."""
        if self.config.self_conditioning and self.conditioning is not None:
            return {"self_conditioning_logits": self.conditioning}
        return {}

    def finished(self, x_t):
        if self.done is not None and bool(self.done.all()):
            return True
        return self.absorbing and self.config.output == "sample" and self._no_noise_left(x_t)

    def end(self, x_t):
        """The window's result: the last argmax canvas with ``output = "argmax"``, else x_t."""
        return self.argmax if self.config.output == "argmax" and self.argmax is not None else x_t

    # ---- the step ---------------------------------------------------------------------------------------
    def temperature(self, t) -> torch.Tensor:
        """T at grid time t: float32, as transformers' LinearTemperatureScheduleLogitsProcessor computes it."""
        cfg = self.config
        if cfg.t_max is None:
            return torch.tensor(cfg.temperature or 1.0, dtype=torch.float32)
        t0 = float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)
        remaining = torch.tensor(round(t0 * self.num_steps), dtype=torch.int32)  # n of N steps left
        return cfg.t_min + (cfg.t_max - cfg.t_min) * (remaining / self.num_steps)

    def step(self, logits, t, s, x_t, generator=None) -> StepOutput:
        cfg = self.config
        B, W = x_t.shape
        if self.done is None:
            self._reset(x_t)
        z = logits[:, :W]
        if self.absorbing:
            z = self.process.x0_logits_rows(z.reshape(B * W, -1), fresh=False).view(B, W, -1).to(logits.dtype)
        greedy = cfg.t_max is None and cfg.temperature == 0
        z = z if greedy else z / self.temperature(t)  # [B, W, V] tempered logits
        candidate = self.process.is_noise(x_t) if self.absorbing else torch.ones_like(x_t, dtype=torch.bool)
        last = bool((self.rows(s, x_t) <= 0).all()) and cfg.output == "sample"
        if cfg.rng == "torch":
            x0_hat, entropy, renoise = self._draw_reference(z, x_t)
        else:
            x0_hat, entropy, renoise = self._draw_rows(z, x_t, generator, greedy)
        accept = self.accepted(entropy, candidate) | (candidate & last)
        x_s = torch.where(accept, x0_hat, x_t)
        if not self.absorbing:
            x_s = torch.where(accept, x_s, renoise)  # the rest is redrawn from the uniform prior
        argmax = z.argmax(-1)
        same_law = cfg.rng == "torch" or not self.filter.active  # the acceptance entropy is the stop rule's
        self._stop_rule(x_t, x_s, argmax, z, entropy if same_law else None)
        return StepOutput(x_s=self._x_s, x0_pred=self.argmax)

    def accepted(self, entropy: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """[B, W] bool: the largest entropy-sorted prefix of the candidates with Σ H − max H ≤ γ."""
        h = entropy.masked_fill(~candidate, float("inf"))
        ordered, order = torch.sort(h, dim=-1)
        before = torch.cumsum(ordered.masked_fill(ordered.isinf(), 0.0), -1) - ordered.masked_fill(ordered.isinf(), 0.0)
        keep = (before <= self.config.entropy_bound) & ordered.isfinite()
        return torch.zeros_like(keep).scatter(-1, order, keep)

    def _draw_rows(self, z, x_t, generator, greedy):
        """(x̂, H float64, renoising draw) with one float64 uniform pair per position from each row's generator."""
        B, W, V = z.shape
        u = step_uniforms(x_t, 2, generator)  # [B, W, 2]
        rows = self.filter(z.reshape(B * W, V), temperature=1.0) if not greedy else z.reshape(B * W, V).double()
        entropy = entropy64(rows).view(B, W)
        if greedy:
            x0_hat = z.argmax(-1)
        else:
            x0_hat = inverse_cdf(torch.softmax(rows, -1), u[..., 0].reshape(-1)).view(B, W)
        renoise = torch.floor(u[..., 1] * V).long().clamp_max(V - 1)
        return x0_hat, entropy, renoise

    def _draw_reference(self, z, x_t):
        """(x̂, H, renoising draw) from torch's global generator, in transformers' order and precision."""
        B, W, V = z.shape
        probs = torch.softmax(z, dim=-1, dtype=torch.float32)
        x0_hat = torch.multinomial(probs.view(-1, V), num_samples=1).view(B, W)
        entropy = entropy_reference(z)
        renoise = torch.randint(0, V, (B, W), device=x_t.device)
        return x0_hat, entropy, renoise

    def _stop_rule(self, x_t, x_s, argmax, z, entropy):
        """Freeze the stopped rows; update the argmax canvas, the conditioning logits and the stop rule."""
        done = self.done
        if self.argmax is not None and bool(done.any()):
            entropy = None  # z changes on the stopped rows: recompute
            argmax = torch.where(done[:, None], self.argmax, argmax)
            x_s = torch.where(done[:, None], x_t, x_s)
            z = torch.where(done[:, None, None], self.conditioning, z)
        cfg = self.config
        if cfg.stability_threshold is not None:
            self.done = done | (self._stable(argmax) & self._confident(z, entropy))
        self.argmax, self.conditioning, self._x_s = argmax, z, x_s

    def _stable(self, argmax):
        """[B]: the argmax canvas equals each of the last S ones (S = 0: always)."""
        S = self.config.stability_threshold
        if S == 0:
            return torch.ones(argmax.shape[0], dtype=torch.bool, device=argmax.device)
        if self.history is None:
            self.history = torch.full((S, *argmax.shape), -1, dtype=argmax.dtype, device=argmax.device)
        stable = (self.history == argmax[None]).all(-1).all(0)
        self.history = torch.cat([self.history[1:], argmax[None]], 0)
        return stable

    def _confident(self, z, entropy):
        """[B]: the window's mean entropy of the tempered logits is below ``confidence_threshold``
        (``entropy``: that of z, already computed; None: compute it)."""
        if entropy is not None:
            h = entropy
        elif self.config.rng == "torch":
            h = entropy_reference(z)
        else:
            h = entropy64(z)
        return h.mean(-1) < self.config.confidence_threshold
