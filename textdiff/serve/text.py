"""Answer text from token ids, for whole answers and for streamed final prefixes.

A streamed answer is sent as deltas of the text of its FINAL token prefix (tokens no later step can
change). The deltas, concatenated, are exactly the whole answer's text, because a delta never holds

* a character whose bytes are not all decoded yet: byte-level and byte-fallback tokenizers decode a
  cut UTF-8 sequence to U+FFFD, so trailing U+FFFD characters wait for the next token;
* text at or after a stop: the answer ends before the first stop token (EOS, the model's stop
  tokens) and before the first occurrence of a ``stop`` string; an end of the text that could still
  grow into a stop string waits.

Decoding skips special tokens and leaves the tokenizer's space clean-up off, so the text of a
prefix is a prefix of the text of the whole (what the deltas rely on).
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

logger = logging.getLogger("textdiff.serve")


class AnswerText:
    """The text of one row's answer; ``update`` gives deltas, ``finish`` the rest."""

    def __init__(self, tokenizer, stop: Sequence[str] = (), stop_token_ids: Iterable[int] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.stop_token_ids = {int(i) for i in stop_token_ids}
        self.sent = ""
        self.ended = False  # a stop was seen: nothing after it is sent

    def decode(self, tokens: Sequence[int]) -> tuple[str, bool]:
        """(text up to the first stop, whether a stop token or stop string ended it)."""
        tokens = list(tokens)
        cut = next((i for i, tok in enumerate(tokens) if tok in self.stop_token_ids), None)
        if cut is not None:
            tokens = tokens[:cut]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            return text[: min(hits)], True
        return text, cut is not None

    def update(self, final_prefix: Sequence[int]) -> str:
        """The new text of a longer final prefix ('' when nothing new is safe to send)."""
        if self.ended:
            return ""
        text, stopped = self.decode(final_prefix)
        if stopped:
            self.ended = True
        else:
            text = text.rstrip("\ufffd")  # a character cut in the middle of its bytes
            text = text[: len(text) - self._stop_overlap(text)]
        return self._advance(text)

    def finish(self, answer: Sequence[int], complete: bool) -> tuple[str, str, str]:
        """(whole text, what is left to send, finish_reason) of the row's answer tokens.

        complete: the answer stopped before its last position (EOS or a stop token)."""
        text, stopped = self.decode(answer)
        reason = "stop" if stopped or complete else "length"
        return text, self._advance(text, final=True), reason

    def _advance(self, text: str, final: bool = False) -> str:
        if not text.startswith(self.sent):  # not for prefix-stable decoders (module docstring)
            if final:
                logger.warning("streamed text %r is not a prefix of the answer %r", self.sent[-20:], text[:40])
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def _stop_overlap(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best

