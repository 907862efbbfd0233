"""Chat templates rendered under limits: a template is a Jinja program that comes with a model folder,
so rendering it is bounded in time and output size, and every way it can fail is one line naming
where the template came from.

    text = render_chat(tokenizer, messages, add_generation_prompt=True)

The template runs in the same sandboxed Jinja environment as ``tokenizer.apply_chat_template``
(transformers' filters, globals and extensions, an overlay of it) and sees the same variables
(``messages``, ``add_generation_prompt``, ``tools``, ``documents`` and the special tokens), so it
renders the same text. On top of the sandbox:

* time: the template's frames are traced line by line; past ``Limits.seconds`` of the thread's CPU
  time it stops (a nested loop of 1e9 iterations ends within that time, not hours later; CPU time,
  so a busy machine does not fail a normal template);
* output: the text is produced piece by piece and stops past ``Limits.max_chars``; ``*``, ``**``,
  ``%`` and ``+`` are checked before they build a string, list or number larger than that, and
  so are integer arguments of filters, method calls and values stored in a ``namespace``;
* errors: a syntax error, a sandbox violation (``SecurityError``), ``raise_exception(...)`` of the
  template or any error while rendering is a :class:`ChatTemplateError` (a ``TextDiffError``).

Python 3.11 has no cheaper hook than ``sys.settrace``; the previous trace function (a debugger,
coverage) is put back afterwards. Rendering a normal template takes well under a millisecond
more with the tracer on.
"""
from __future__ import annotations

import functools
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

TEMPLATE_FILENAME = "<template>"  # the code filename Jinja gives templates built from a string


class ChatTemplateError(ConfigError):
    """A chat template failed to render, broke the sandbox, or went past a limit."""


@dataclass(frozen=True)
class Limits:
    seconds: float = 1.0  # rendering time of one chat (the thread's CPU time)
    max_chars: int = 1_000_000  # output text, and any string / list / number built on the way


DEFAULT_LIMITS = Limits()


class _Stop(Exception):
    """Raised inside the template's frames by the tracer or a bound check; carries the message."""


def template_origin(tokenizer) -> str:
    """Where the tokenizer's chat template came from: a file of its folder, or the tokenizer."""
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    folder = Path(name) if name else None
    if folder is not None and folder.is_dir():
        for file in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
            if (folder / file).is_file():
                return str(folder / file)
        return str(folder)
    return f"the tokenizer {name!r}" if name else "the tokenizer's chat_template"


def render_chat(tokenizer, messages, add_generation_prompt: bool = True, origin: Optional[str] = None,
                limits: Limits = DEFAULT_LIMITS) -> str:
    """The chat template of ``tokenizer`` applied to ``messages`` (a list of message mappings), as
    ``apply_chat_template(messages, tokenize=False, ...)`` renders it, within ``limits``."""
    origin = origin or template_origin(tokenizer)
    source = getattr(tokenizer, "chat_template", None)
    if not source:
        raise ConfigError("this model's tokenizer has no chat template; pass plain strings as prompts")
    try:
        source = tokenizer.get_chat_template()
    except Exception as e:  # noqa: BLE001  e.g. a dict of named templates without a "default"
        raise ChatTemplateError(f"the chat template of {origin} cannot be chosen: {_one_line(e)}") from None
    chat = _messages(messages)
    context = {**getattr(tokenizer, "special_tokens_map", {}), "messages": chat, "tools": None, "documents": None,
               "add_generation_prompt": bool(add_generation_prompt)}
    deadline = time.thread_time() + limits.seconds
    pieces, size = [], 0
    try:
        with _traced(deadline, limits):
            template = _compile(source, limits)
            for piece in template.generate(**context):
                size += len(piece)
                if size > limits.max_chars:
                    raise _Stop(f"wrote more than {limits.max_chars:,} characters")
                pieces.append(piece)
    except _Stop as e:
        raise ChatTemplateError(f"the chat template of {origin} {e}; templates may run {limits.seconds:g} s (CPU) and write "
                                f"{limits.max_chars:,} characters: fix the template or pass plain strings") from None
    except Exception as e:  # noqa: BLE001  syntax, sandbox, raise_exception, undefined, type errors of the program
        kind = type(e).__name__
        raise ChatTemplateError(f"the chat template of {origin} failed ({kind}): {_one_line(e)}; fix the template "
                                "or the messages") from None
    return "".join(pieces)


def _messages(messages) -> list[dict]:
    """Plain copies of the messages (what transformers passes): None values dropped; one-line errors
    for anything that is not a list of mappings."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ConfigError(f"a chat must be a non-empty list of {{'role': ..., 'content': ...}} messages, got "
                          f"{type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ConfigError(f"message {i} of the chat is a {type(m).__name__}; every message is a "
                              "{'role': ..., 'content': ...} mapping")
        out.append({k: v for k, v in m.items() if v is not None})
    return _alias_reasoning(out)


def _alias_reasoning(chat: list[dict]) -> list[dict]:
    """transformers fills ``reasoning_content`` and ``thinking`` from a message's reasoning."""
    fields = ("reasoning_content", "thinking", "reasoning")
    out = []
    for m in chat:
        reasoning = next((m[k] for k in fields if m.get(k) is not None), None)
        out.append(m if reasoning is None else {"thinking": reasoning, **m, "reasoning_content": reasoning})
    return out


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


# ---- the bounded environment --------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _compile(source: str, limits: Limits):
    return _environment(limits).from_string(source)


@functools.lru_cache(maxsize=4)
def _environment(limits: Limits):
    """An overlay of transformers' chat-template environment whose operators, filters, calls and
    namespaces refuse to build anything larger than ``limits.max_chars``."""
    env = _base_environment().overlay()
    env.intercepted_binops = frozenset({"*", "**", "%", "+"})
    base_call, base_binop = env.call, env.call_binop

    def call_binop(context, operator, left, right):
        _check_binop(operator, left, right, limits.max_chars)
        return _checked(base_binop(context, operator, left, right), limits.max_chars)

    def call(context, obj, /, *args, **kwargs):
        _check_arguments(args, kwargs, limits.max_chars)
        return _checked(base_call(context, obj, *args, **kwargs), limits.max_chars)

    base_wrap = env.wrap_str_format

    def wrap_str_format(value):  # "{:>1000000000}".format: the sandbox wraps the method when it is looked up
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str):
            _check_arguments((owner,), {}, limits.max_chars)
        return base_wrap(value)

    env.call_binop, env.call, env.wrap_str_format = call_binop, call, wrap_str_format
    env.filters = {name: _bounded(f, limits.max_chars) for name, f in env.filters.items()}
    namespace = env.globals.get("namespace")
    if isinstance(namespace, type):
        env.globals = {**env.globals, "namespace": _bounded_namespace(namespace, limits.max_chars)}
    return env


def _base_environment():
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        return _compile_jinja_template("").environment
    except Exception:  # noqa: BLE001  another transformers: the same sandbox, Jinja's own settings
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3  # about its decimal digits
    return 0


def _checked(value: Any, limit: int) -> Any:
    if _size(value) > limit:
        raise _Stop(f"built a value of more than {limit:,} items")
    return value


def _check_binop(operator: str, left: Any, right: Any, limit: int) -> None:
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(n, int) and _size(seq) and not isinstance(seq, int) and _size(seq) * max(n, 0) > limit:
                raise _Stop(f"repeats a value {n:,} times, more than {limit:,} items")
        if isinstance(left, int) and isinstance(right, int) and _size(left) + _size(right) > limit:
            raise _Stop(f"multiplies numbers of more than {limit:,} digits")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right * abs(left).bit_length() > 3 * limit:
            raise _Stop(f"raises {left} to the power {right:,}, a number of more than {limit:,} digits")
    elif operator == "%" and isinstance(left, str):
        _check_arguments(right if isinstance(right, tuple) else (right,), {}, limit)
        widths = [int(w) for w in re.findall(r"%[-#0 +]*(\d+)", left)]
        if widths and max(widths) > limit:
            raise _Stop(f"formats a field {max(widths):,} characters wide, more than {limit:,}")
    elif operator == "+" and _size(left) + _size(right) > limit and not isinstance(left, int):
        raise _Stop(f"joins values into more than {limit:,} items")


def _check_arguments(args, kwargs, limit: int) -> None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > limit:
            raise _Stop(f"passes the number {a:,} to a function, more than the limit of {limit:,}")
        if isinstance(a, str) and ("{" in a or "%" in a):  # a format spec such as "{:>1000000000}"
            widths = [int(w) for w in re.findall(r"\d{7,}", a)]
            if widths and max(widths) > limit:
                raise _Stop(f"formats a field {max(widths):,} characters wide, more than {limit:,}")


def _bounded(f, limit: int):
    @functools.wraps(f)
    def filter_(*args, **kwargs):
        _check_arguments(args, kwargs, limit)
        return _checked(f(*args, **kwargs), limit)

    return filter_


def _bounded_namespace(base: type, limit: int) -> type:
    class BoundedNamespace(base):
        def __setitem__(self, name, value):
            _checked(value, limit)
            base.__setitem__(self, name, value)

    BoundedNamespace.__name__ = "Namespace"
    return BoundedNamespace


class _traced:
    """``sys.settrace`` for the duration: the template's frames are checked against the deadline at
    every line, so a loop in the template stops; other frames only at their calls."""

    def __init__(self, deadline: float, limits: Limits):
        self.deadline, self.limits = deadline, limits

    def _local(self, frame, event, arg):
        if time.thread_time() > self.deadline:
            raise _Stop(f"ran longer than {self.limits.seconds:g} s of CPU time")
        return self._local

    def _global(self, frame, event, arg):
        if time.thread_time() > self.deadline:
            raise _Stop(f"ran longer than {self.limits.seconds:g} s of CPU time")
        return self._local if frame.f_code.co_filename == TEMPLATE_FILENAME else None

    def __enter__(self):
        self._previous = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc):
        sys.settrace(self._previous)
        return False
