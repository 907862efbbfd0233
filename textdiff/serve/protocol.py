"""Request bodies of the OpenAI-compatible API, checked strictly, and OpenAI-style errors.

Every field OpenAI's API defines for these endpoints that textdiff serves is accepted with OpenAI's
ranges; anything else (an unknown field, a wrong type — ``"8"`` for a number —, NaN, a value out of
range) is a 400 whose body names the field::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}

The ``textdiff`` object carries what OpenAI's API has no name for: the sampler and its options,
the number of steps, the block size and the KV-cache mode (``docs/serving.md``).
"""
from __future__ import annotations

import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_N = 16  # answers per request (OpenAI's n)
MAX_STOPS = 4
MAX_SEED = 2**62  # row seeds are seed + row index, far below 2**63


class ApiError(Exception):
    """An error response: HTTP status and OpenAI's error object."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextdiffOptions(BaseModel):
    """Decoding settings beyond OpenAI's fields."""

    model_config = _STRICT
    sampler: Optional[str] = Field(None, min_length=1, max_length=64)  # a registered sampler name
    sampler_options: dict[str, Any] = Field(default_factory=dict)  # other fields of its config
    steps: Optional[int] = Field(None, ge=1, le=100_000)
    block_size: Optional[int] = Field(None, ge=1)
    cache: Optional[Literal["auto", "none", "exact", "prefix", "dual"]] = None
    top_k: Optional[int] = Field(None, ge=1)

    @field_validator("sampler_options")
    @classmethod
    def _plain_options(cls, value):
        for key, v in value.items():
            if key in ("name", "temperature", "top_p", "top_k"):
                raise ValueError(f"set {key!r} with its own field, not in sampler_options")
            if not isinstance(v, (str, int, float, bool, type(None))):
                raise ValueError(f"sampler option {key!r} must be a string, number, boolean or null")
        return value


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = True  # textdiff always sends usage in the last chunk


class _Common(BaseModel):
    """Fields shared by both endpoints."""

    model_config = _STRICT
    model: str = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    stop: Any = Field(None, validate_default=True)  # -> a tuple of strings
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    user: Optional[str] = Field(None, max_length=256)
    textdiff: TextdiffOptions = Field(default_factory=TextdiffOptions)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        if value is None:
            return ()
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise ValueError("must be a non-empty string or a list of non-empty strings")
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        return tuple(stops)


class CompletionRequest(_Common):
    prompt: Any = Field(...)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value):
        """A string, a list of strings, a list of token ids or a list of such lists -> a list of prompts."""
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not value:
            raise ValueError("must be a string, a non-empty list of strings, a list of token ids or a list of token-id lists")
        if all(_is_id(v) for v in value):
            return [value]
        for v in value:
            if not (isinstance(v, str) or (isinstance(v, list) and all(_is_id(i) for i in v))):
                raise ValueError("each prompt must be a string or a list of token ids (non-negative integers)")
        return list(value)


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: Optional[str] = Field(None, max_length=64)

    def as_template_input(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)


def _is_id(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def parse_body(raw: bytes, model: type[BaseModel]):
    """The request body as ``model``, or an :class:`ApiError` 400 naming what is wrong."""
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON ({getattr(e, 'msg', e)}); send a JSON object",
                       code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _as_api_error(e) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _as_api_error(error: ValidationError) -> ApiError:
    first = error.errors(include_url=False)[0]
    param = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in first["loc"]).replace(".[", "[")
    if first["type"] == "extra_forbidden":
        return ApiError(400, f"Unrecognized request argument supplied: {param}", param=param, code="unknown_field")
    if first["type"] == "missing":
        return ApiError(400, f"Missing required parameter: {param}", param=param, code="missing_required_parameter")
    message = first["msg"].removeprefix("Value error, ")
    shown = repr(first.get("input"))
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return ApiError(400, f"Invalid value for {param}: {message} (got {shown})", param=param, code="invalid_value")
