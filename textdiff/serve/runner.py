"""The runner: rows with equal :class:`~textdiff.serve.engine.DecodeSettings` decoded to the end by
:meth:`textdiff.lm.DiffusionLM.generate` with one seed per row. Phase 1's scheduler hands it whole
batches; the continuous engine (:mod:`.continuous`) hands it one row at a time with a ``denoise``
hook that parks the model call (:class:`~textdiff.serve.calls.Parked`), so the row's forwards are
merged with the other running rows'.

Streaming reads the rows after every sampler step (``generate``'s ``callback``) and sends the text
of each row's FINAL prefix: the longest run of answer positions, from the first, that no later step
can change. A position is final when

* its window is done (windows are decoded left to right and never revisited), or
* the process is absorbing (it can tell noise from clean tokens: ``is_noise``), the sampler does not
  revise clean tokens (``Sampler.revises`` is False) and the position is no longer noise.

So a masked-diffusion answer streams as its left part unmasks; a revising sampler (ReMDM) or a
uniform-state process (UDLM, SEDD-uniform) sends a window's text when the window ends, and a
one-window decoding sends everything at the end.
"""
from __future__ import annotations

import json
from typing import Callable

import torch

from ..errors import IncompatibleError, TextDiffError
from .calls import Stopped
from .engine import Delta, Event, Failed, Finished, Request
from .text import AnswerText


# raised in the step callback (or the model-call hook) to end a decoding nobody waits for
_Stopped = Stopped


def tells_noise(process) -> bool:
    """Whether the process can tell noisy positions from clean ones (absorbing processes)."""
    try:
        process.is_noise(torch.zeros(1, 1, dtype=torch.long))
    except IncompatibleError:
        return False
    return True


def final_lengths(x: torch.Tensor, window_lo: int, clean_is_final: bool, process) -> list[int]:
    """Per row, the length of the final prefix of the answer.

    x: [B, N] the answer positions after a step; window_lo: answer positions before it belong to
    finished windows; clean_is_final: the process tells noise and the sampler never revises."""
    N = x.shape[1]
    final = (torch.arange(N, device=x.device) < window_lo)[None].expand(x.shape[0], N)  # [B, N]
    if clean_is_final:
        final = final | ~process.is_noise(x)
    return final.long().cumprod(1).sum(1).tolist()  # [B] length of the leading run of True


class BatchRunner:
    """Decodes a batch with ``lm.generate``; emits each row's deltas and its final result."""

    def __init__(self, lm):
        self.lm = lm
        self.stop_token_ids = [i for i in [lm.tokenizer.eos_token_id, *lm.stop_token_ids] if i is not None]
        self.absorbing = tells_noise(lm.process)
        self.batches = 0

    def answer_backs(self, rows: list[Request]) -> list[int]:
        """Per row, how many columns before the end of ``generate``'s rows its answer starts: read from
        the model's decoding layout (:mod:`textdiff.layouts`), as :meth:`textdiff.lm.DiffusionLM.generate`
        arranges them. The answer is the last N columns, except when the layout decodes part of the
        prompt with it (LLaDA 2.0's blocks from the sequence start): then it starts after each tail."""
        s, layout = rows[0].settings, self.lm.decoding_layout
        N = s.max_new_tokens
        arranged = layout.arrange([list(r.prompt_ids) for r in rows], N, layout.window(s.block_size, N), None)
        if arranged.tails is None:
            return [N] * len(rows)
        width = len(arranged.template[0])  # N': whole blocks
        return [width - tail for tail in arranged.tails]

    def run(self, rows: list[Request], emit: Callable[[Request, Event], None], stop: Callable[[], bool],
            denoise=None) -> None:
        """Decode ``rows`` to the end; ``denoise``: the model-call hook of ``generate`` (the continuous
        engine's :class:`~textdiff.serve.calls.Parked`; None: the model itself)."""
        texts = [AnswerText(self.lm.tokenizer, r.stop, self.stop_token_ids) for r in rows]
        try:
            self._decode(rows, texts, emit, stop, denoise)
        except _Stopped:
            return
        except TextDiffError as e:
            if len(rows) == 1:
                emit(rows[0], Failed(400, str(e), "invalid_request_error", "invalid_decoding_settings"))
                return
            for row, text in zip(rows, texts):  # only the row that cannot be decoded gets the error
                try:
                    self._decode([row], [text], emit, stop, denoise)
                except _Stopped:
                    return
                except TextDiffError as err:
                    emit(row, Failed(400, str(err), "invalid_request_error", "invalid_decoding_settings"))

    def _decode(self, rows: list[Request], texts: list[AnswerText], emit, stop, denoise=None) -> None:
        settings = rows[0].settings
        N = settings.max_new_tokens
        spec = json.loads(settings.sampler)
        clean_is_final = self.absorbing and not type(self.lm.make_sampler(spec)).revises
        watched = [b for b, r in enumerate(rows) if r.stream]
        backs = self.answer_backs(rows)
        seen = [0] * len(rows)

        def on_step(info) -> None:
            if stop():
                raise _Stopped
            for b in watched:
                start = info.x.shape[1] - backs[b]
                answer = info.x[b: b + 1, start: start + N]  # [1, N] this row's answer positions
                length = final_lengths(answer, info.window[0] - start, clean_is_final, self.lm.process)[0]
                if length > seen[b]:
                    seen[b] = length
                    delta = texts[b].update(answer[0, :length].tolist())
                    if delta:
                        emit(rows[b], Delta(delta))

        self.batches += 1
        _, out = self.lm.generate(
            [r.prompt_ids for r in rows], max_new_tokens=N, steps=settings.steps, sampler=spec,
            seed=[r.seed for r in rows], block_size=settings.block_size, use_cache=settings.cache,
            return_output=True, callback=on_step, progress=False, **({} if denoise is None else {"denoise": denoise}))
        for b, row in enumerate(rows):
            answer = out.generated[b]
            text, rest, reason = texts[b].finish(answer, complete=len(answer) < N)
            emit(row, Finished(text=text, delta=rest, finish_reason=reason, completion_tokens=len(answer),
                               steps=out.steps, model_calls=out.model_calls, batch_rows=len(rows), batch=self.batches))
