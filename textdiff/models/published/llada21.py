"""LLaDA 2.1 (inclusionAI 2026): LLaDA2.1-mini / -flash, LLaDA 2.0's network with token-editing decoding.

Layout: the released folders (``inclusionAI/LLaDA2.1-*``) are LLaDA 2.0's exactly: ``model_type
"llada2_moe"``, ``architectures ["LLaDA2MoeModelLM"]``, the same BailingMoeV2 keys, shards and Ling's
tokenizer; config.json cannot tell the two releases apart, so a released 2.1 folder is detected as
``llada2`` (same network, same weights) and gets 2.1's decoding by naming it::

    lm = DiffusionLM.from_pretrained("inclusionAI/LLaDA2.1-mini")
    lm.generate(prompts, sampler=llada21.QUALITY)        # or llada21.SPEED

A folder written by the ``dllm`` library's LLaDA 2.1 pipeline says ``model_type "llada21_moe"``
(its ``LLaDA2MoeConfig`` registers that name) and is detected as this family, with QUALITY as its
default sampler.

Decoding (``LLaDA2MoeModelLM.generate`` of the 2.1 release): blocks of 32 counted from the sequence
start, temperature 0; per step, mask-to-token commits of every [MASK] with confidence above
``threshold`` (at least ``num_to_transfer`` = 1, the most confident), token-to-token edits of the
block's committed (non-prompt) tokens whose argmax differs with confidence above
``editing_threshold``, and up to ``max_post_steps`` extra passes once the block has no [MASK]; the
block ends at a pass with no [MASK] and no edit. Confidences are a softmax over the WHOLE vocabulary
([MASK] included). That is textdiff's ``editing`` sampler with ``mask_logit = "keep"``
(:mod:`textdiff.samplers.editing`). Model card modes: quality (0.7 / 0.5) and speed (0.5 / 0.0); the
signature's defaults are 0.95 / 0.9. The publisher's ``block_length`` also sets its attention mask;
the converted denoiser attends in blocks of its ``config.block_size`` (32, as released).
"""
from __future__ import annotations

from .ling import BLOCK_SIZE, LingBlockFamily

#: the model card's quality and speed modes, and generate()'s signature defaults, as sampler specs
QUALITY = {"name": "editing", "threshold": 0.7, "editing_threshold": 0.5, "max_post_steps": 16, "temperature": 0.0,
           "mask_logit": "keep"}
SPEED = {**QUALITY, "threshold": 0.5, "editing_threshold": 0.0}
SIGNATURE = {**QUALITY, "threshold": 0.95, "editing_threshold": 0.9}


class LLaDA21(LingBlockFamily):
    """LLaDA 2.1 folders saved as ``model_type "llada21_moe"`` (dllm's pipeline); released folders load as llada2."""

    name, label = "llada21", "LLaDA 2.1"
    tokenizer_default = "inclusionAI/LLaDA2.1-mini"
    sampler = dict(QUALITY)
    generation = {"block_size": BLOCK_SIZE, "blocks_from": "sequence_start"}
    protocol = ("LLaDA2MoeModelLM.generate (2.1): block_length 32, temperature 0, threshold 0.7, editing_threshold 0.5, "
                "max_post_steps 16 (quality mode), stop after the block with EOS")

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "llada21_moe"
