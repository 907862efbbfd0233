"""Adaptation through ``textdiff train``: the model it starts from, and its hooks into the loop.

A recipe with ``train.init_from`` (a transformers causal-LM folder or hub id, or a textdiff AR run's
folder) and an ``adapt:`` section trains :class:`~textdiff.models.adapted.AdaptedLM`:

* :meth:`Adaptation.build_model`: the causal network (transformers' own class, checked by
  :func:`~textdiff.adapt.architectures.check_adaptable`), grown by the [MASK] row (initialised by
  ``adapt.mask_init``, :mod:`~textdiff.adapt.mask_token`), wrapped for the target process;
* :meth:`Adaptation.before_step`: the annealing progress p = min(1, step / anneal_steps) and the block
  size of ``adapt.block_schedule`` at this step (the process draws its times and masks per block of
  that size, the model's mask and read-out follow it);
* :meth:`Adaptation.nelbo_terms`: with ``complementary_masks`` each row is run twice in one batch,
  with a mask and its complement, and the pair's loss is ½ (loss + r · loss̄) with
  r = (1 − α) / α (flat weighting: 1), unbiased for the NELBO on a symmetric band of mask rates
  (:mod:`~textdiff.adapt.complementary`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch

from ..errors import ConfigError, IncompatibleError
from ..objective import LossTerms
from ..training.hooks import TrainHooks
from .attention import anneal_progress
from .block_schedule import BlockSchedule
from .complementary import complement_of, complement_ratio, pair_nelbo
from .config import AdaptConfig


class Adaptation(TrainHooks):
    """The ``adapt:`` section at work in one run (module docstring)."""

    def __init__(self, cfg: AdaptConfig, seq_len: int):
        cfg.validate()
        self.cfg = cfg
        self.schedule: Optional[BlockSchedule] = None
        if cfg.target == "block":
            self.schedule = BlockSchedule(cfg.block_schedule, cfg.block_size)
            self.schedule.check_divides(seq_len)

    def block_size(self, step: int) -> Optional[int]:
        return self.schedule.block_size(step) if self.schedule is not None else None

    # ---- the model ---------------------------------------------------------------------------------
    def build_model(self, init_path: Path, init_kind: str, tokenizer, process, seq_len: int):
        from ..models.adapted import AdaptedLM
        from .architectures import check_adaptable

        network = self._network(init_path, init_kind)
        self._add_mask_row(network, tokenizer)
        if init_kind != "textdiff":
            check_adaptable(network, seq_len, self.cfg.target)
        cfg = self.cfg
        model = AdaptedLM(network, cfg.target, self.block_size(0), cfg.shift, len(tokenizer), tokenizer.mask_token_id,
                          anneal_progress(0, cfg.anneal_steps), cfg.anneal_rule, cfg.anneal_seed)
        self.before_step(0, model, process)
        return model.train()

    @staticmethod
    def _network(init_path: Path, init_kind: str):
        """The causal network of ``train.init_from``: a textdiff AR folder or a transformers causal LM."""
        if init_kind == "textdiff":
            from ..models.format import read_network

            network = read_network(init_path, init_kind)
            if getattr(network.config, "attention", None) != "causal" or getattr(network.config, "time_conditioning", True):
                raise IncompatibleError(f"train.init_from={str(init_path)!r} is not an autoregressive textdiff model "
                                        "(causal attention, no time input); adapt: starts from a causal LM")
            return network
        if init_kind != "published":
            raise IncompatibleError(f"train.init_from={str(init_path)!r} is already a diffusion denoiser; "
                                    "drop the adapt section to fine-tune it")
        from transformers import AutoConfig, AutoModelForCausalLM

        try:
            config = AutoConfig.from_pretrained(str(init_path), trust_remote_code=False)
        except Exception as e:  # noqa: BLE001 - unknown architecture, damaged config
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
            raise ConfigError(f"cannot read a transformers config at {str(init_path)!r} ({msg}); adapt: needs a "
                              "causal-LM folder of a family transformers knows (Llama, Qwen2/3, Gemma, GPT-2, ...)") from None
        try:
            return AutoModelForCausalLM.from_pretrained(str(init_path), trust_remote_code=False)
        except ValueError as e:
            if "Unrecognized configuration class" not in str(e):
                raise
            raise IncompatibleError(f"cannot adapt the {config.model_type!r} model at {str(init_path)!r}: transformers "
                                    "has no causal-LM class for it (AutoModelForCausalLM)") from None

    def _add_mask_row(self, network, tokenizer) -> None:
        """Grow the embedding (and head) to the tokenizer and set the [MASK] row by ``adapt.mask_init``."""
        from .mask_token import init_mask_rows, mask_source_id

        mask_id = tokenizer.mask_token_id
        rows = int(network.get_input_embeddings().weight.shape[0])
        vocab = len(tokenizer)
        if vocab > rows:
            network.resize_token_embeddings(vocab, mean_resizing=False)
        # trained rows: the tokenizer's tokens before the [MASK] it gained (padding rows past them never trained)
        source_rows = min(rows, mask_id if mask_id >= vocab - 1 else vocab)
        source = mask_source_id(self.cfg.mask_init, tokenizer.get_vocab())
        generator = torch.Generator().manual_seed(self.cfg.anneal_seed)
        init_mask_rows(network.get_input_embeddings(), network.get_output_embeddings(), mask_id, self.cfg.mask_init,
                       source_rows, source, generator=generator)

    # ---- the loop ----------------------------------------------------------------------------------
    def before_step(self, step: int, model, process) -> None:
        from ..models.adapted import AdaptedLM

        model = next(m for m in model.modules() if isinstance(m, AdaptedLM))  # (below a LoRA wrapper too)
        model.progress = anneal_progress(step, self.cfg.anneal_steps)
        model.anneal_step = step
        if self.schedule is not None:
            size = self.schedule.block_size(step)
            model.set_block_size(size)
            if process.config.block_size != size:
                process.config = dataclasses.replace(process.config, block_size=size)  # never the recipe's own section

    def nelbo_terms(self, model, process, x0, loss_mask=None, t=None, frozen=None, generator=None) -> LossTerms:
        if not self.cfg.complementary_masks:
            return super().nelbo_terms(model, process, x0, loss_mask, t, frozen, generator)
        B = x0.shape[0]
        if t is None:
            t = process.sample_t(B, device=x0.device, generator=generator, seq_len=x0.shape[1])
        x_t = process.corrupt(x0, t, frozen=frozen, generator=generator)
        x_bar = complement_of(x_t, x0, process.mask_id, frozen)
        both_t = torch.cat([t, t], dim=0)
        inputs = process.model_inputs(torch.cat([x_t, x_bar]), torch.cat([x0, x0]), both_t)  # [2B, ...]: one forward
        logits = process.model_logits(model(**inputs).logits, torch.cat([x_t, x_bar]))
        loss, loss_bar = process.loss(logits, torch.cat([x_t, x_bar]), torch.cat([x0, x0]), both_t).split(B)
        weighting = "flat" if getattr(process.config, "loss_weight", "elbo") == "flat" else "elbo"
        alpha = process.alpha(process.per_token(t, x0, torch.float64))  # [B, L]
        pair = pair_nelbo(loss, loss_bar, complement_ratio(alpha, weighting))
        mask = torch.ones_like(pair) if loss_mask is None else loss_mask.to(pair.dtype)
        if frozen is not None:
            mask = mask * (~frozen).to(pair.dtype)
        return LossTerms(loss=pair * mask, mask=mask, x_t=x_t, t=t)
