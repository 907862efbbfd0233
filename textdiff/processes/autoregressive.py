"""The autoregressive baseline: the same denoiser with a causal mask and the next-token loss.

Nothing is corrupted (x_t = x0, t is ignored). The network reads the row shifted right by one, with a
start token in front::

    input_ids = [START, x0_0, ..., x0_{L-2}]          logits[:, i] -> p_θ(x0_i | x0_{<i})
    loss_i    = −log p_θ(x0_i | x0_{<i})              Σ_i loss_i = −log p_θ(x0)   (exact NLL)

so every token of the row is scored, the first one included (a diffusion model scores it too, which
keeps the comparison fair). START is ``start_id`` or, by default, the [MASK] token (which an AR model
never otherwise sees).

Generation: the model's output at row position i − 1 predicts position i (``logits_shift = 1``; the
generation contexts honour it). Generate with ``block_size=1`` and the ``ancestral`` sampler, and give
every prompt at least one token: start prompts with ``start_token`` (the loop has no position −1).
``reverse_probs`` is p_θ(x_i | x_{<i}), whatever t and s are, so extra steps per position only redraw
from the same distribution. A causal model allows the exact KV cache (``use_cache=True``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..categorical import Generator
from ..errors import ConfigError
from ..registry import register
from .base import ForwardProcess, ProcessConfig, upcast


@dataclass
class AutoregressiveConfig(ProcessConfig):
    name: str = "ar"
    start_id: Optional[int] = None  # start-of-row token fed before x0_0; default: the [MASK] token

    def validate(self) -> None:
        if self.time_conditioning:
            raise ConfigError("process ar takes no time; set process.time_conditioning=false")


@register("process", "ar")
class AutoregressiveProcess(ForwardProcess):
    """Next-token prediction with exact NLL (module docstring)."""

    config_class = AutoregressiveConfig
    gives_posterior = True  # p_θ(x_i | x_{<i}) whatever t and s
    is_diffusion = False
    #: the model builder reads this: an AR model must be causal
    required_attention = "causal"
    #: logits predicting row position i come from position i − 1
    logits_shift = 1
    #: generation feeds the start token before each prompt and decodes one token per window and step
    decoding_layout = "next_token"

    def __init__(self, config: AutoregressiveConfig, vocab_size: int, mask_id: Optional[int] = None):
        super().__init__(config, vocab_size, mask_id)
        start = config.start_id if config.start_id is not None else mask_id
        if start is None:
            raise ConfigError("process ar needs a start token: set process.start_id (e.g. the BOS id) or use a tokenizer with a mask token")
        if not 0 <= int(start) < self.vocab_size:
            raise ConfigError(f"process.start_id={start} is outside the vocabulary [0, {self.vocab_size})")
        self.start_token = int(start)

    @property
    def time_conditioning(self) -> bool:
        return False

    def sample_t(self, batch_size, device=None, generator: Generator = None, seq_len=None):
        """t is unused; zeros [B]."""
        return torch.zeros(batch_size, device=device)

    def corrupt(self, x0, t, frozen=None, generator: Generator = None):
        """Nothing is corrupted: x_t = x0."""
        return x0

    def prior(self, shape, device=None, generator: Generator = None):
        """Placeholders [B, L] for positions not generated yet (the causal model never reads them)."""
        return torch.full(tuple(shape), self.start_token, dtype=torch.long, device=device)

    def model_inputs(self, x_t, x0, t):
        """[START, x0_0 .. x0_{L-2}] so that logits[:, i] predicts x0_i."""
        start = torch.full_like(x0[:, :1], self.start_token)
        return {"input_ids": torch.cat([start, x0[:, :-1]], dim=1)}

    def loss(self, logits, x_t, x0, t):
        """[B, L] −log p_θ(x0_i | x0_{<i}) for every position (exact, no time)."""
        lg = upcast(logits)
        nll = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), x0.reshape(-1), reduction="none")
        return nll.view(x0.shape)

    def x0_logits(self, logits, x_t, t):
        """log p_θ(next token) [B, L, V] (the window's logits, already shifted by the context)."""
        return torch.log_softmax(upcast(logits), dim=-1)

    def reverse_probs(self, logits, x_t, t, s):
        """p_θ(x_i | x_{<i}) [B, L, V] (float64), for any t > s."""
        return torch.softmax(upcast(logits).double(), dim=-1)
