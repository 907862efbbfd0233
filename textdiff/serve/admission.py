"""From a checked API request to engine rows: prompts to token ids (chats through the model's chat
template), the sampler built and checked, the context and in-flight budget checked, one seed per
row. Everything that can be refused is refused here, before a row is queued (400 / 404).
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Optional, Union

from ..dataclass_io import to_dict
from ..errors import TextDiffError
from ..tokenization import encode_text
from .engine import DecodeSettings, Request
from .protocol import MAX_SEED, ApiError, ChatRequest, CompletionRequest


@dataclass
class ServeOptions:
    """The server's settings (``textdiff serve --help``)."""

    model_name: str
    api_key: Optional[str] = None
    max_batch: int = 8  # rows decoded together
    max_tokens_in_flight: int = 8192  # positions (prompt + answer, padded) of the running rows
    max_queue: int = 64  # waiting rows; beyond: 429
    request_timeout: float = 300.0  # seconds from arrival to the last byte; then 408
    shutdown_timeout: float = 30.0  # graceful shutdown: running rows get this long, then 503
    default_max_tokens: int = 64  # when a request gives no max_tokens
    max_body_bytes: int = 4 << 20
    exact_batching: bool = False  # merged forwards bit for bit equal to a row's own (serve/calls.py)


@dataclass
class Plan:
    """The rows of one API request (prompt-major: row = prompt index * n + choice)."""

    rows: list[Request]
    prompt_tokens: int  # summed over the distinct prompts


class Admission:
    """Model facts the HTTP layer needs, and the request -> rows translation."""

    def __init__(self, lm, options: ServeOptions):
        self.lm, self.options = lm, options
        config = lm.model.config
        self.context: Optional[int] = getattr(config, "max_position_embeddings", None)
        self.vocab_size = lm.process.vocab_size

    # ---- requests -----------------------------------------------------------------------------
    def completion(self, req: CompletionRequest) -> Plan:
        self._check_model(req.model)
        prompts = [self._ids(p, i) for i, p in enumerate(req.prompt)]
        return self._plan(req, prompts, req.max_tokens)

    def chat(self, req: ChatRequest) -> Plan:
        self._check_model(req.model)
        if req.max_tokens is not None and req.max_completion_tokens is not None and req.max_tokens != req.max_completion_tokens:
            raise ApiError(400, "max_tokens and max_completion_tokens differ; give one of them", param="max_completion_tokens")
        if not getattr(self.lm.tokenizer, "chat_template", None):
            raise ApiError(400, "this model's tokenizer has no chat template; use /v1/completions", param="messages",
                           code="no_chat_template")
        try:
            ids = self.lm.encode_prompts([[m.as_template_input() for m in req.messages]])[0]
        except Exception as e:  # noqa: BLE001  the template (a Jinja program) refuses these messages
            raise ApiError(400, f"the chat template cannot render these messages: {e}", param="messages") from None
        return self._plan(req, [ids], req.max_completion_tokens or req.max_tokens)

    def _plan(self, req: Union[CompletionRequest, ChatRequest], prompts: list[list[int]], max_tokens: Optional[int]) -> Plan:
        opts = req.textdiff
        N = max_tokens or self.options.default_max_tokens
        settings = DecodeSettings(max_new_tokens=N, steps=opts.steps, sampler=self._sampler(req),
                                  block_size=opts.block_size, cache=opts.cache or "auto")
        if len(prompts) * req.n > self.options.max_queue:
            raise ApiError(400, f"{len(prompts)} prompt(s) x n={req.n} is more answers than this server queues "
                                f"({self.options.max_queue}); split the request", param="n", code="invalid_value")
        for i, p in enumerate(prompts):
            self._check_fits(len(p), N, opts.block_size, i)
        base = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED)
        rows = [Request(prompt_ids=p, settings=settings, seed=base + i * req.n + c, stop=req.stop, stream=req.stream)
                for i, p in enumerate(prompts) for c in range(req.n)]
        return Plan(rows=rows, prompt_tokens=sum(len(p) for p in prompts))

    def _check_model(self, name: str) -> None:
        if name != self.options.model_name:
            raise ApiError(404, f"The model {name!r} does not exist; this server serves {self.options.model_name!r}",
                           param="model", code="model_not_found")

    def _ids(self, prompt, index: int) -> list[int]:
        if isinstance(prompt, str):
            return encode_text(self.lm.tokenizer, prompt, getattr(self.lm.process, "mask_id", None), f"prompt[{index}]")
        bad = [t for t in prompt if t >= self.vocab_size]
        if bad:
            raise ApiError(400, f"prompt[{index}] has token id {bad[0]}, outside the vocabulary [0, {self.vocab_size})",
                           param="prompt", code="invalid_value")
        return list(prompt)

    def _sampler(self, req) -> str:
        """The sampler's full config as canonical JSON (equal configs share batches)."""
        opts = req.textdiff
        options = dict(opts.sampler_options)  # a named sampler keeps the model's options it shares (lm.sampler_config_for)
        for key in ("temperature", "top_p"):
            if getattr(req, key) is not None:
                options[key] = getattr(req, key)
        if opts.top_k is not None:
            options["top_k"] = opts.top_k
        try:
            sampler = self.lm.make_sampler(opts.sampler or None, **options)
        except TextDiffError as e:
            raise ApiError(400, str(e), param="textdiff.sampler", code="invalid_value") from None
        return json.dumps(to_dict(sampler.config), sort_keys=True)

    # ---- sizes --------------------------------------------------------------------------------
    def positions_needed(self, prompt_len: int, N: int, block_size: Optional[int]) -> int:
        """Positions a row occupies in :meth:`DiffusionLM.generate`'s layout: the model's decoding layout
        (:mod:`textdiff.layouts`) with the one context rule of generation."""
        return self.lm.decoding_layout.positions_needed(prompt_len, N, block_size)

    def _check_fits(self, prompt_len: int, N: int, block_size: Optional[int], index: int) -> None:
        need = self.positions_needed(prompt_len, N, block_size)
        if self.context is not None and need > self.context:
            raise ApiError(400, f"This model's maximum context length is {self.context} tokens; prompt {index} "
                                f"({prompt_len} tokens) with max_tokens={N} needs {need}; shorten the prompt or max_tokens",
                           param="max_tokens", code="context_length_exceeded")
        if need > self.options.max_tokens_in_flight:
            raise ApiError(400, f"prompt {index} with max_tokens={N} needs {need} positions, more than this server's "
                                f"--max-tokens-in-flight {self.options.max_tokens_in_flight}", param="max_tokens",
                           code="context_length_exceeded")
