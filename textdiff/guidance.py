"""Classifier-free guidance as a wrapper around the denoiser call, so every sampler uses it unchanged.

For discrete diffusion (Schiff et al. 2024, "Simple guidance mechanisms for discrete diffusion
models"; Nisonoff et al. 2024) guidance tilts the clean-token prediction. With the conditional and
unconditional log-probabilities log p_c = log p_θ(x0 | x_t, prompt) and
log p_u = log p_θ(x0 | x_t, ∅) (each a log-softmax of the denoiser's logits, per position)::

    log p_w(x0 | x_t) = (1 + w) · log p_c − w · log p_u        (+ a per-position constant)

i.e. p_w ∝ p_c^(1+w) / p_u^w = p_c · (p_c / p_u)^w. w = 0 is no guidance, w > 0 sharpens towards
what the prompt makes likely. The wrapper returns these unnormalised log-probs [B, L, V] as
"logits"; the process normalises them (a per-position constant does not matter to a softmax). With
w = 0 the wrapper returns the conditional logits untouched and makes no unconditional call, so it is
exactly no guidance (tested).

The unconditional branch is the SAME call with the prompt removed:

* ``uncond="mask"`` (default): the prompt tokens become [MASK]. For a masked-diffusion model this
  works without any special training: a masked prompt is just a noisier input, and the model's
  prediction for it is the marginal over prompts it learned. Needs a process with a mask token.
* ``uncond="drop"``: the prompt tokens are hidden from attention (key padding). Works with any model
  and any process, but the model should have been trained with condition dropout of this kind.

Training with condition dropout (``train.cond_dropout`` = p, the lead's SFT code): with probability p
a training row's prompt is made unconditional exactly as the wrapper does it at sampling time
(replaced by [MASK] for ``uncond="mask"``, or excluded from attention for ``uncond="drop"``), with its
loss still computed on the response only. Then p_θ(x0 | x_t, ∅) is what the network was trained to
give for such inputs.

Which tokens are the prompt: ``generate()`` calls ``setup(layout)`` before sampling; tokens with a
position before ``layout.first_new_position`` (and not padding) are prompt tokens. Positions, not
columns, are used, so the wrapper also works when the context feeds only a window with a KV cache;
the unconditional branch then keeps its own cache, filled by the same calls.

Guidance needs denoiser outputs that are clean-token logits (masked, uniform, block processes); a
score-entropy network outputs log-ratios, for which this mixing has no meaning, so it is refused.
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Optional

import torch

from .errors import ConfigError, IncompatibleError


def guided_log_probs(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 + w) log_softmax(cond) − w log_softmax(uncond), [B, L, V] (float32 or wider)."""
    c = cond_logits if cond_logits.dtype in (torch.float32, torch.float64) else cond_logits.float()
    u = uncond_logits.to(c.dtype)
    return (1.0 + weight) * torch.log_softmax(c, dim=-1) - weight * torch.log_softmax(u, dim=-1)


class ClassifierFreeGuidance:
    """A ``denoise`` callable for :func:`textdiff.generation.generate` (see the module docstring).

    Example::

        cfg = ClassifierFreeGuidance(model, process, weight=1.5)
        out = generate(model, process, "ancestral", prompts, denoise=cfg, seed=0)
    """

    def __init__(self, model, process, weight: float, uncond: Literal["mask", "drop"] = "mask",
                 base: Optional[Callable] = None, trained: Optional[bool] = None):
        """trained: whether the model was trained with condition dropout (``train.cond_dropout`` > 0;
        None: unknown), for the warning on a negative weight."""
        from .generation import _model_call

        if not math.isfinite(float(weight)):
            raise ConfigError(f"guidance weight={weight} must be a finite number (0 = no guidance)")
        check_weight(float(weight), trained)
        if uncond not in ("mask", "drop"):
            raise ConfigError(f"guidance uncond={uncond!r} must be 'mask' or 'drop'")
        if uncond == "mask" and process.mask_id is None:
            raise IncompatibleError(
                f"guidance with uncond='mask' needs a process with a mask token; process {process.config.name!r} has none, use uncond='drop'"
            )
        if process.parameterization == "score":
            raise IncompatibleError(
                f"classifier-free guidance mixes clean-token log-probs; process {process.config.name!r} outputs scores; use masked, uniform or block"
            )
        self.weight = float(weight)
        self.uncond = uncond
        self.mask_id = process.mask_id
        self.base = base or _model_call(model, process)
        self.first_new_position: Optional[int] = None
        self._uncond_caches: dict[int, object] = {}

    @property
    def forwards_per_call(self) -> int:
        """Network forwards per call (counted by ``generate``'s ``model_calls``)."""
        return 1 if self.weight == 0 else 2

    def setup(self, layout) -> None:
        """Called by ``generate()`` with its :class:`~textdiff.generation.Layout`."""
        self.first_new_position = int(layout.first_new_position)
        self._uncond_caches = {}

    def unconditional_inputs(self, ids, attention_mask, position_ids):
        """(ids, attention_mask) of the unconditional branch: the prompt masked or hidden."""
        if self.first_new_position is None:
            raise ConfigError("ClassifierFreeGuidance must be passed to generate(..., denoise=...), which sets it up")
        valid = attention_mask.bool() if attention_mask is not None else torch.ones_like(ids, dtype=torch.bool)
        prompt = (position_ids < self.first_new_position) & valid  # [B, L]
        if self.uncond == "mask":
            return ids.masked_fill(prompt, self.mask_id), attention_mask
        return ids, (valid & ~prompt).to(attention_mask.dtype if attention_mask is not None else torch.long)

    def __call__(self, ids, t, attention_mask, position_ids, cache, update_cache, logits_to_keep=0):
        from .contexts import call_keeping

        if self.weight == 0:
            return call_keeping(self.base, (ids, t, attention_mask, position_ids, cache, update_cache), logits_to_keep)
        u_cache = self._uncond_cache(cache)  # before the conditional call extends ``cache``
        cond = call_keeping(self.base, (ids, t, attention_mask, position_ids, cache, update_cache), logits_to_keep)
        u_ids, u_mask = self.unconditional_inputs(ids, attention_mask, position_ids)
        uncond = call_keeping(self.base, (u_ids, t, u_mask, position_ids, u_cache, update_cache), logits_to_keep)
        return guided_log_probs(cond, uncond, self.weight)

    def _uncond_cache(self, cache):
        """The unconditional branch's own KV cache, shadowing ``cache`` call for call."""
        if cache is None:
            return None
        u_cache = self._uncond_caches.get(id(cache))
        if u_cache is None:
            if cache.length > 0:  # a cache filled outside this wrapper (approximate prefix / dual caches)
                raise IncompatibleError(
                    "classifier-free guidance works with use_cache='none', 'exact' or 'auto', not the approximate prefix/dual caches"
                )
            u_cache = self._uncond_caches[id(cache)] = type(cache)(len(cache.keys))
        if u_cache.length > cache.length:  # the context slid its window (max_context): slide ours too
            u_cache.crop(cache.length)
        return u_cache


def check_weight(weight: float, trained: Optional[bool]) -> None:
    """w < −1 inverts the conditional distribution (p_c^(1+w) with 1 + w < 0): an error. −1 <= w < 0
    pulls samples away from the prompt towards the unconditional prediction: one warning line, which
    says whether the model was trained for an unconditional prediction at all."""
    if weight < -1:
        raise ConfigError(f"guidance weight={weight:g} < -1 inverts the conditional distribution; use w >= 0 "
                          "(w > 0 follows the prompt more closely, 0 = no guidance)")
    if weight < 0:
        from .errors import warn

        why = {True: "", False: " and this model was not trained with condition dropout (train.cond_dropout),",
               None: " and it is not known whether this model was trained with condition dropout,"}[trained]
        warn(f"guidance weight={weight:g} < 0 moves samples away from the prompt{why} so its unconditional "
             "prediction is untested; use w > 0 for guidance towards the prompt")


def trained_for_guidance(source_dir) -> Optional[bool]:
    """Whether the run a model folder came from trained with condition dropout (its config.yaml beside
    it: ``train.cond_dropout`` > 0); None when the folder has no readable recipe."""
    if source_dir is None:
        return None
    from pathlib import Path

    import yaml

    recipe = Path(source_dir) / "config.yaml"  # models.format.RECIPE_FILE
    try:
        raw = yaml.safe_load(recipe.read_text()) if recipe.is_file() else None
        return None if not isinstance(raw, dict) else float((raw.get("train") or {}).get("cond_dropout", 0) or 0) > 0
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return None
