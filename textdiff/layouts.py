"""Decoding layouts: how a family lays its prompts and answer out for :func:`textdiff.generation.generate`.

``DiffusionLM.generate`` asks :func:`layout_for` for the layout its process and family declare, and
runs every family through the same three calls: the window width (:meth:`DecodingLayout.window`), the
rows handed to the loop (:meth:`DecodingLayout.arrange`) and the answer cut from the result
(:meth:`Arranged.answer`). The server admits requests by :meth:`DecodingLayout.positions_needed`, the
one context rule (:func:`textdiff.generation.positions_needed`) applied to the arranged rows.

* :class:`Windows` (every diffusion process): the prompt, then N new positions decoded in windows of
  ``block_size`` left to right; default width: the family's released ``block_size`` when N is longer
  (or always, when the family decodes ``whole_blocks``), else the model's block for a block-causal
  network (BD3-LM: exact KV cache), else one window. A family declaring ``whole_blocks``
  (DiffusionGemma: whole canvases only) decodes N rounded up to whole windows, by default in
  ``steps_per_block`` steps per window (default: the window's width).
* :class:`NextToken` (declared by a process with ``decoding_layout = "next_token"``: autoregressive):
  the start token is fed before each prompt, one token per window, one step per token.
* :class:`SequenceStartBlocks` (declared by a family's ``generation = {"blocks_from": "sequence_start"}``,
  LLaDA 2.0): blocks are counted from position 0 of the sequence, so the prompt's last partial block
  (its tail) is decoded together with the answer: the loop gets the prompts cut to whole blocks and a
  template that starts with each tail; the answer is the N tokens after the tail.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional


@dataclass
class Arranged:
    """The rows one layout hands to the loop."""

    ids: list  # prompts as the loop sees them
    steps: Optional[int]  # sampler steps (None: one per new position)
    template: Optional[list] = None  # [B, N'] rows to fill (None: N new positions)
    tails: Optional[list] = None  # per row: prompt tokens decoded with the answer (sequence-start blocks)
    new_tokens: int = 0  # N, the answer's length

    def answer(self, generated: list) -> list:
        """The answer of each row: the new tokens (after each row's tail, when the tail was decoded too)."""
        if self.tails is None:
            return generated
        return [g[r: r + self.new_tokens] for g, r in zip(generated, self.tails)]


class DecodingLayout:
    """A prompt followed by N new positions, decoded in windows (subclasses change where they lie)."""

    name: ClassVar[str] = "windows"
    #: the answer is the last N columns of the loop's rows (streamed step by step by the server)
    answer_is_last_columns: ClassVar[bool] = True

    def __init__(self, released_block: Optional[int] = None, model_block: Optional[int] = None,
                 start_token: Optional[int] = None, whole_blocks: bool = False, steps_per_block: Optional[int] = None):
        self.released_block = released_block  # the family's released decoding window (generation defaults)
        self.model_block = model_block  # a block-causal network's block
        self.start_token = start_token
        self.whole_blocks = bool(whole_blocks)  # the family decodes whole windows only
        self.steps_per_block = steps_per_block  # its default steps per window (None: the window's width)

    def window(self, block_size: Optional[int], new_tokens: int) -> Optional[int]:
        """The window width: ``block_size`` when given, else the released one (one window when N fits in it)."""
        if block_size is not None:
            return block_size
        if self.released_block is not None and (new_tokens > self.released_block or self.whole_blocks):
            return self.released_block
        return self.fallback_block()

    def fallback_block(self) -> Optional[int]:
        return None

    def arrange(self, ids: list, new_tokens: int, block_size: Optional[int], steps: Optional[int],
                template: bool = False) -> Arranged:
        """The rows for the loop; ``template``: the caller gives its own template (kept as it is)."""
        if block_size and self.whole_blocks:  # N rounded up to whole windows, steps_per_block each by default
            new_tokens = -(-new_tokens // block_size) * block_size
            steps = steps or int(self.steps_per_block or block_size) * (new_tokens // block_size)
        return Arranged(ids=ids, steps=steps, new_tokens=new_tokens)

    def positions_needed(self, prompt_len: int, new_tokens: int, block_size: Optional[int] = None) -> int:
        """Positions a prompt of ``prompt_len`` tokens + ``new_tokens`` needs in this layout."""
        from .generation import positions_needed

        block = self.window(block_size, new_tokens)
        rows = self.arrange([[0] * prompt_len], new_tokens, block, None)
        width = rows.new_tokens if rows.template is None else len(rows.template[0])
        return positions_needed(len(rows.ids[0]), width, block)


class Windows(DecodingLayout):
    """Full-sequence or block-wise diffusion (module docstring)."""

    def fallback_block(self) -> Optional[int]:
        return self.model_block  # block diffusion decodes block by block (exact KV cache)


class NextToken(DecodingLayout):
    """Next-token (AR) models: the start token predicts the first token; one token per window and step."""

    name = "next_token"

    def fallback_block(self) -> Optional[int]:
        return 1

    def arrange(self, ids, new_tokens, block_size, steps, template=False) -> Arranged:
        return Arranged(ids=[[self.start_token] + p for p in ids], steps=new_tokens, new_tokens=new_tokens)


class SequenceStartBlocks(Windows):
    """Blocks counted from the sequence start (LLaDA 2.0's generate), on textdiff's block-aligned windows."""

    name = "sequence_start"
    answer_is_last_columns = False

    def __init__(self, *args, mask_id: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_id = mask_id

    def arrange(self, ids, new_tokens, block_size, steps, template=False) -> Arranged:
        """Prompts cut to whole blocks and a template [B, N'] that starts with each prompt's tail (the
        tokens after its last whole block, frozen) followed by [MASK]s, N' whole blocks holding every
        row's tail + N; the released decoding takes ``block_size`` steps per block."""
        if not block_size or template:
            return super().arrange(ids, new_tokens, block_size, steps, template)
        tails = [len(p) % block_size for p in ids]
        width = -(-(max(tails) + new_tokens) // block_size) * block_size  # N': whole blocks
        heads = [p[: len(p) - r] for p, r in zip(ids, tails)]
        rows = [p[len(p) - r:] + [self.mask_id] * (width - r) for p, r in zip(ids, tails)]
        return Arranged(ids=heads, steps=steps or width, template=rows, tails=tails, new_tokens=new_tokens)


LAYOUTS = {cls.name: cls for cls in (Windows, NextToken, SequenceStartBlocks)}


def layout_for(process, model_config, generation: Optional[dict] = None) -> DecodingLayout:
    """The layout a model decodes with: the family's (``generation["blocks_from"]``) over the process's
    declared ``decoding_layout``; the family's released window and a block-causal network's block."""
    generation = generation or {}
    name = "sequence_start" if generation.get("blocks_from") == "sequence_start" else process.decoding_layout
    block_causal = getattr(model_config, "attention", None) == "block_causal"
    kwargs = dict(released_block=generation.get("block_size"),
                  model_block=getattr(model_config, "block_size", None) if block_causal else None,
                  start_token=process.start_token, whole_blocks=bool(generation.get("whole_blocks")),
                  steps_per_block=generation.get("steps_per_block"))
    if name == SequenceStartBlocks.name:
        kwargs["mask_id"] = process.mask_id
    return LAYOUTS[name](**kwargs)
