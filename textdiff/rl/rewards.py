"""Reward functions: built-ins for verifiable answers and formats, and a loader for the user's own.

A reward function has TRL's signature, so functions written for TRL's ``GRPOTrainer`` work as they are::

    f(prompts: list, completions: list, **kwargs) -> list[float | None]

``prompts[i]`` / ``completions[i]`` are strings, or for conversational data (a ``prompt`` column of
chat messages) lists of messages, the completion being ``[{"role": "assistant", "content": text}]``.
Keyword arguments: ``completion_ids`` (token-id lists) and every other column of the dataset row
(e.g. ``answer``), one value per completion. ``None`` means "does not apply to this row"; see
:func:`textdiff.rl.advantages.combine_rewards` for how the weighted sum treats it.

Built-ins (``rl.reward_funcs`` names; ``rl.reward_kwargs`` passes their keyword arguments):

* ``exact_answer``: 1.0 when the number extracted from the completion equals the number extracted
  from the row's ``answer`` column (GSM8K: ``"... #### 72"``), else 0.0; None when the gold answer has
  no number. Extraction rule (:func:`extract_answer`), on the text:

  1. the span after the LAST ``####`` marker; else
  2. the content of the LAST ``\\boxed{...}`` (nested braces balanced); else
  3. the content of the LAST ``<answer>...</answer>`` tag; else
  4. the whole text.

  In a marked span (1-3) the FIRST number is the answer, in the whole text (4) the LAST one.
  A number is an optional sign (``-`` or ``−``), digits with optional thousands commas
  (``1,234``), an optional decimal part and an optional ``/denominator``; it is normalised by
  dropping the commas and read as an exact fraction, so ``$1,000``, ``1000.00`` and ``1000 dollars``
  are all 1000 and ``0.5`` equals ``1/2``. Currency signs, ``%`` and unit words around it are ignored.
* ``tag_format``: 1.0 when the completion is ``<reasoning>…</reasoning>`` then ``<answer>…</answer>``
  (whitespace around allowed, nothing else; d1's "soft" format), else 0.0. ``tags=[a, b, ...]``
  changes the tag sequence.
* ``regex_format``: 1.0 when ``re.search(pattern, completion, re.DOTALL)`` matches (anchor with
  ``^...$`` for a whole-text format), else 0.0. ``pattern`` is required.
* ``length``: 1 − min(1, |n − target| / target) for a completion of n tokens (``unit="chars"``:
  characters); ``target`` is required.

User rewards: ``module:function`` (or ``module:factory`` returning one, given ``reward_kwargs``) is
imported by the normal import system from the user's PYTHONPATH / working directory, as named in
the user's own recipe. textdiff never adds a model or data folder to the import path and never
reads reward code from one. No built-in executes generated code (no code-execution reward exists
here); a user function that does so must sandbox it itself.
"""
from __future__ import annotations

import importlib
import numbers
import re
from fractions import Fraction
from typing import Callable, Optional, Sequence

import torch

from ..errors import ConfigError
from .config import REWARD_NAMES, check_reward_name  # noqa: F401  (the names are checked where the recipe is)

RewardFunc = Callable[..., list]

NUMBER = re.compile(r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")


# ---------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------


def _last_boxed(text: str) -> Optional[str]:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return text[i:]  # unbalanced: everything after the brace


def parse_number(token: str) -> Optional[Fraction]:
    """A NUMBER match -> exact Fraction (commas dropped); None if it cannot be read."""
    s = token.replace(",", "").replace("−", "-")
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return Fraction(Fraction(num), Fraction(den)) if Fraction(den) != 0 else None
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def extract_answer(text: str) -> Optional[Fraction]:
    """The answer of ``text`` by the rule of the module docstring, or None when it has no number."""
    span, marked = text, True
    if "####" in text:
        span = text.rsplit("####", 1)[1]
    elif (boxed := _last_boxed(text)) is not None:
        span = boxed
    elif (tags := re.findall(r"<answer>(.*?)</answer>", text, flags=re.DOTALL)):
        span = tags[-1]
    else:
        marked = False
    numbers = NUMBER.findall(span)
    if not numbers:
        return None
    return parse_number(numbers[0] if marked else numbers[-1])


def completion_text(completion) -> str:
    """The text of a completion: a string, or the content of a conversational [{role, content}] list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise ConfigError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


# ---------------------------------------------------------------------------------------------
# Built-ins
# ---------------------------------------------------------------------------------------------


def exact_answer() -> RewardFunc:
    def exact_answer(prompts, completions, answer=None, **kwargs) -> list:
        if answer is None:
            raise ConfigError("reward exact_answer needs an 'answer' column in the dataset (the gold answer per prompt)")
        out = []
        for c, gold in zip(completions, answer):
            want = extract_answer(str(gold))
            out.append(None if want is None else float(extract_answer(completion_text(c)) == want))
        return out

    return exact_answer


def regex_format(pattern: Optional[str] = None) -> RewardFunc:
    if not pattern:
        raise ConfigError("reward regex_format needs a pattern: rl.reward_kwargs: {regex_format: {pattern: '...'}}")
    try:
        rx = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise ConfigError(f"reward regex_format: pattern {pattern!r} is not a valid regular expression ({e})") from None

    def regex_format(prompts, completions, **kwargs) -> list:
        return [float(rx.search(completion_text(c)) is not None) for c in completions]

    return regex_format


def tag_format(tags: Sequence[str] = ("reasoning", "answer")) -> RewardFunc:
    if not tags or not all(isinstance(t, str) and re.fullmatch(r"[\w\-]+", t) for t in tags):
        raise ConfigError(f"reward tag_format: tags must be a list of tag names (letters, digits, _ or -), got {tags!r}")
    rx = re.compile(r"\s*" + r"\s*".join(f"<{t}>.*?</{t}>" for t in tags) + r"\s*", re.DOTALL)

    def tag_format(prompts, completions, **kwargs) -> list:
        return [float(rx.fullmatch(completion_text(c)) is not None) for c in completions]

    return tag_format


def length(target: Optional[int] = None, unit: str = "tokens") -> RewardFunc:
    if target is None or isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise ConfigError(f"reward length needs a positive integer target (rl.reward_kwargs: {{length: {{target: 64}}}}), got {target!r}")
    if unit not in ("tokens", "chars"):
        raise ConfigError(f"reward length: unit={unit!r}; use 'tokens' or 'chars'")

    def length(prompts, completions, completion_ids=None, **kwargs) -> list:
        if unit == "tokens" and completion_ids is None:
            raise ConfigError("reward length (unit=tokens) needs completion_ids; pass them or use unit=chars")
        sizes = [len(ids) for ids in completion_ids] if unit == "tokens" else [len(completion_text(c)) for c in completions]
        return [1.0 - min(1.0, abs(n - target) / target) for n in sizes]

    return length


BUILTINS: dict[str, Callable[..., RewardFunc]] = {
    "exact_answer": exact_answer, "regex_format": regex_format, "tag_format": tag_format, "length": length,
}


# ---------------------------------------------------------------------------------------------
# Loading and calling
# ---------------------------------------------------------------------------------------------


def load_reward(name: str, kwargs: Optional[dict] = None) -> RewardFunc:
    """The reward callable named ``name`` (a built-in, or ``module:function`` from the user's own code;
    with ``kwargs`` the named object is a factory called with them)."""
    check_reward_name(name)
    kwargs = dict(kwargs or {})
    if name in BUILTINS:
        factory = BUILTINS[name]
    else:
        module_name, attr = name.split(":", 1)
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"reward {name!r}: cannot import module {module_name!r} ({e}); put it on PYTHONPATH "
                              "or in the directory you run from") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ConfigError(f"reward {name!r}: module {module_name!r} has no callable {attr!r}")
        if not kwargs:
            return factory
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"reward {name!r}: bad rl.reward_kwargs {kwargs} ({e})") from None


def compute_rewards(funcs: Sequence[tuple[str, RewardFunc]], prompts: list, completions: list,
                    completion_ids: Optional[list] = None, columns: Optional[dict] = None) -> torch.Tensor:
    """[B, F] float32 rewards of F named functions (None -> NaN), called TRL's way with the extra
    dataset ``columns`` (each a list of B values) as keyword arguments."""
    B = len(completions)
    extra = dict(columns or {})
    for key, values in extra.items():
        if len(values) != B:
            raise ConfigError(f"column {key!r} has {len(values)} values for {B} completions; repeat it per completion")
    out = torch.empty(B, len(funcs), dtype=torch.float32)
    for j, (name, fn) in enumerate(funcs):
        values = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **extra)
        if not isinstance(values, (list, tuple)) or len(values) != B:
            raise ConfigError(f"reward {name!r} returned {type(values).__name__} of length "
                              f"{len(values) if hasattr(values, '__len__') else '?'} for {B} completions; return one number per completion")
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, numbers.Real):
                raise ConfigError(f"reward {name!r} returned {v!r} for completion {i}; return a number or None")
            out[i, j] = float("nan") if v is None else float(v)
    return out
