"""The ``adapt:`` recipe section: how an autoregressive LM becomes a diffusion LM (issue 26).

Every knob has a paper behind it (the math lives beside the code that uses it):

* ``target``: the diffusion process the AR model is turned into: ``masked`` (MDLM, full-sequence,
  as DiffuGPT / DiffuLLaMA / Dream) or ``block`` (BD3-LM, as Fast-dLLM v2 / SDAR / LLaDA 2.0) with
  blocks of ``block_size`` tokens (L').
* ``anneal_steps``: attention goes from causal (the AR model's) to the target's (bidirectional, or
  bidirectional inside each block) over this many optimizer steps: DiffuLLaMA's attention-mask
  annealing (Gong et al. 2025). 0 switches at step 0 (Dream, Fast-dLLM v2, SDAR).
  ``anneal_rule`` says which future keys open first (:mod:`textdiff.adapt.attention`).
* ``shift``: the output at position i − 1 predicts token i, as the AR head did (Dream's "shift
  operation", DiffuLLaMA's shifted loss, Fast-dLLM v2's token shift); false reads position i itself
  (SDAR) (:func:`textdiff.adapt.attention.read_index`).
* ``mask_init``: how the [MASK] row of the embedding (and output head) starts
  (:mod:`textdiff.adapt.mask_token`).
* ``complementary_masks``: each row is trained twice, with a mask and its complement, so every
  token is in exactly one loss (Fast-dLLM v2; LLaDA 2.0's SFT) (:mod:`textdiff.adapt.complementary`).
* ``block_schedule``: the block size by phase (LLaDA 2.0's warmup-stable-decay over block sizes:
  small blocks, then the full sequence, then the target) (:mod:`textdiff.adapt.block_schedule`).

This module imports nothing of textdiff but errors, so the recipe (``textdiff.config``) can hold it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ..errors import ConfigError

MASK_INIT_KINDS = ("mean", "noisy_mean", "keep", "token")


@dataclass
class BlockPhase:
    """One phase of a block-size schedule: ``steps`` optimizer steps at block size ``block_size``."""

    steps: int  # how long the phase lasts, in optimizer steps
    block_size: int  # L' during the phase: 1 is next-token prediction, data.seq_len the full-sequence masked model

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"adapt.block_schedule: steps={self.steps} must be at least 1")
        if self.block_size < 1:
            raise ConfigError(f"adapt.block_schedule: block_size={self.block_size} must be at least 1")


@dataclass
class AdaptConfig:
    """How ``train.init_from`` (a causal LM) is adapted; see the module docstring for the sources."""

    target: Literal["masked", "block"] = "masked"  # masked: MDLM over the whole row; block: BD3-LM blocks of block_size
    block_size: Optional[int] = None  # L' of the block target (required there; leave out for masked)
    anneal_steps: int = 0  # steps from causal to the target attention (DiffuLLaMA); 0: the target from step 0
    anneal_rule: Literal["random", "fresh", "band"] = "random"  # which future keys open first (textdiff.adapt.attention)
    anneal_seed: int = 0  # seed of the random / fresh rules
    shift: bool = True  # the output at i - 1 predicts token i, as the AR head did (Dream); false: position i itself
    mask_init: str = "mean"  # [MASK] row: mean | noisy_mean | keep | token:<id or token string>
    complementary_masks: bool = False  # train each row with a mask and its complement (Fast-dLLM v2)
    block_schedule: Optional[list[BlockPhase]] = None  # phases of (steps, block_size) before the target (LLaDA 2.0 WSD)

    def validate(self) -> None:
        if self.target == "block":
            if self.block_size is None:
                raise ConfigError("adapt.target=block needs adapt.block_size (the block length L', e.g. 32)")
            if self.block_size < 1:
                raise ConfigError(f"adapt.block_size={self.block_size} must be at least 1")
        elif self.block_size is not None or self.block_schedule:
            raise ConfigError("adapt.block_size and adapt.block_schedule belong to adapt.target=block; remove them "
                              "or set adapt.target=block")
        if self.anneal_steps < 0:
            raise ConfigError(f"adapt.anneal_steps={self.anneal_steps} must be at least 0 (0: no annealing)")
        parse_mask_init(self.mask_init)
        if self.block_schedule is not None and not self.block_schedule:
            raise ConfigError("adapt.block_schedule is an empty list; give phases [{steps: N, block_size: B}, ...] "
                              "or leave it out")


def parse_mask_init(text: str) -> tuple[str, Optional[object]]:
    """``"mean"`` -> ("mean", None); ``"token:811"`` -> ("token", 811); ``"token:<mask>"`` -> ("token", "<mask>")."""
    kind, sep, arg = str(text).partition(":")
    kind = kind.strip()
    if kind not in MASK_INIT_KINDS or (kind == "token") != bool(sep):
        raise ConfigError(f"adapt.mask_init={text!r}; use one of mean, noisy_mean, keep, token:<id or token string>")
    if kind != "token":
        return kind, None
    arg = arg.strip()
    if not arg:
        raise ConfigError("adapt.mask_init=token: needs a token after the colon, e.g. token:811 or token:<unk>")
    return kind, int(arg) if arg.isdigit() else arg
