"""Supervised fine-tuning (SFT) of a diffusion LM on instruction data.

Data (``sft.source``): a JSONL file with one example per line, either ``{"prompt": ..., "response":
...}`` or chat rows ``{"messages": [{"role": ..., "content": ...}, ...]}`` (the last message is the
assistant's response; the others are rendered with the tokenizer's chat template and
``add_generation_prompt=True``), or ``synthetic``: arithmetic, copying and word-reversal tasks
generated deterministically from ``sft.seed`` (no download; a model must read the prompt to answer).

Rows (``data.seq_len`` = L tokens)::

    [ prompt | response | EOS | EOS ... EOS ]      prompt_mask: 1 on the prompt
                                                   loss_mask:   per-token weights, see below

Chat rows follow the publishers' layout (LLaDA, Nie et al. 2025, §2.3 / App. B; Dream's SFT): the
prompt is the template's rendering of the earlier turns plus the assistant header, the response is
the template's assistant turn INCLUDING its end-of-turn token (LLaDA ``<|eot_id|>``, Dream
``<|im_end|>``; :func:`assistant_turn`), and the padding is the tokenizer's EOS (LLaDA and Dream:
``<|endoftext|>``). A model fine-tuned this way ends an answer with EOT and fills the rest of the
window with EOS, which is what the publishers' decoding (and textdiff's stop tokens) expect.

Objective, as in LLaDA's SFT (Nie et al. 2025, "Large Language Diffusion Models", §2.3 and
Algorithm 2): the prompt is never corrupted (``frozen`` in :func:`textdiff.objective.nelbo_terms`),
only response tokens are masked and scored, and each sequence's loss is divided by its response
length before averaging over sequences. Here that normalisation is carried by ``loss_mask``: the
weights of a row sum to 1, so the loop's "sum of weighted NELBO terms / sum of weights" is exactly
``mean_rows( Σ_response nelbo / |response| )``.

EOS padding (``sft.eos_policy``). Short responses are padded with EOS to L.

* ``first`` (default): only the EOS that ends the response counts (weight 1, like a response
  token); the EOS pads after it are corrupted like any response position but carry no loss, as
  ``data.layout: pad`` counts a document's EOS but not its padding. Kim et al. 2025 ("Rainbow
  Padding", arXiv 2510.03680) trace the early termination of instruction-tuned diffusion LLMs
  ("<eos> overflow": longer generation windows give shorter answers) to EOS serving as both the
  terminator and the padding that is trained at every later position; they keep a single EOS at the
  true end and fill the rest with distinct pad tokens. Here the single EOS is kept and the padding
  simply teaches nothing, so the model learns WHERE an answer ends, not to predict EOS everywhere.
* ``all``: LLaDA's policy: every EOS pad is a response token (weight 1, counted in the length).
  The model learns to fill the rest of the window with EOS, i.e. to control the answer length.
* ``weighted``: the first EOS has weight 1, each later pad ``sft.pad_eos_weight`` (a compromise).

Reported numbers: ``train_loss`` and ``val_nelbo`` are nats per counted response token, averaged
per sequence (the weights above); ``val_tokens`` is then the number of validation sequences.

Condition dropout (``train.cond_dropout`` = p, for classifier-free guidance): with probability p a
training row's prompt is shown to the network as [MASK] tokens (:class:`PromptDropout`), exactly
what :class:`textdiff.guidance.ClassifierFreeGuidance` feeds its unconditional branch
(``uncond="mask"``); the loss is still the response's. The draw depends only on (seed, global row
index), so it is the same on any number of processes.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch

from .chat_template import render_chat
from .dataclass_io import at_least, not_blank
from .errors import ConfigError, DataError, warn

# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------

WORDS = (
    "apple river stone cloud green light house music paper table water winter garden silver "
    "orange window yellow forest summer bread candle letter mirror pocket rabbit shadow spring "
    "thunder valley castle dragon engine flower island jacket kettle lemon marble needle ocean "
    "pencil planet rocket saddle ticket violin wagon basket button copper desert feather harbor"
).split()


TASKS = ("add", "copy", "reverse", "count", "next")  # the synthetic tasks (sft.tasks)


@dataclass
class SFTConfig:
    """Supervised fine-tuning on instruction data (:mod:`textdiff.sft`); replaces the ``data`` corpus.

    Rows are ``[prompt | response | EOS | EOS padding]`` of ``data.seq_len`` tokens; the prompt is
    never corrupted and the loss covers the response, normalised per sequence by its counted length."""

    source: str = "synthetic"  # a .jsonl file ({prompt, response} or {messages}) or 'synthetic' (built-in tasks)
    val_source: Optional[str] = None  # separate validation .jsonl; else a held-out fraction of source
    val_fraction: float = 0.05  # held-out fraction of rows when val_source is not given
    prompt_field: str = "prompt"  # JSONL keys of prompt/response rows
    response_field: str = "response"
    messages_field: str = "messages"  # JSONL key of chat rows (formatted with the tokenizer's chat template)
    eos_policy: Literal["first", "all", "weighted"] = "first"  # which EOS pads count in the loss (see textdiff.sft)
    pad_eos_weight: float = 0.1  # eos_policy=weighted: loss weight of each EOS pad after the first
    tasks: list[str] = field(default_factory=lambda: ["add", "copy", "reverse"])  # synthetic: which tasks
    num_examples: int = 4000  # synthetic: rows generated (deterministic in seed)
    seed: int = 0  # synthetic: generator seed
    max_examples: Optional[int] = None  # cap on rows read from source

    def validate(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"sft.val_fraction={self.val_fraction} must be in [0, 1)")
        if not 0.0 <= self.pad_eos_weight <= 1.0:
            raise ConfigError(f"sft.pad_eos_weight={self.pad_eos_weight} must be in [0, 1]")
        for name in ("source", "val_source", "prompt_field", "response_field", "messages_field"):
            not_blank(f"sft.{name}", getattr(self, name))
        at_least("sft", self, 1, "num_examples")
        at_least("sft", self, 1, "max_examples", optional=True)
        at_least("sft", self, 0, "seed")
        if self.source == "synthetic":
            unknown = [t for t in self.tasks if t not in TASKS]
            if unknown or not self.tasks:
                raise ConfigError(f"sft.tasks {unknown or self.tasks} not known; choose from {sorted(TASKS)}")


def synthetic_examples(tasks: list[str], n: int, seed: int) -> list[dict]:
    """``n`` prompt/response pairs cycling through ``tasks``, deterministic in ``seed``.

    add: "What is 17 + 25?" -> "42"; copy: "Copy: apple river stone" -> "apple river stone";
    reverse: "Reverse: apple river stone" -> "stone river apple"; count: "Count: apple river" -> "2";
    next: "Next: apple" -> "river" (the word after it in :data:`WORDS`, a lookup learned fastest).
    """
    makers = {"add": _add, "copy": _copy, "reverse": _reverse, "count": _count, "next": _next}
    unknown = [t for t in tasks if t not in makers]
    if unknown or not tasks:
        raise ConfigError(f"sft.tasks {unknown or tasks} not known; choose from {sorted(makers)}")
    rng = random.Random(seed)
    return [makers[tasks[i % len(tasks)]](rng) for i in range(n)]


def _add(rng):
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    return {"prompt": f"What is {a} + {b}?\n", "response": str(a + b)}


def _words(rng):
    return [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]


def _copy(rng):
    w = _words(rng)
    return {"prompt": f"Copy: {' '.join(w)}\n", "response": " ".join(w)}


def _reverse(rng):
    w = _words(rng)
    return {"prompt": f"Reverse: {' '.join(w)}\n", "response": " ".join(reversed(w))}


def _count(rng):
    w = _words(rng)
    return {"prompt": f"Count: {' '.join(w)}\n", "response": str(len(w))}


def _next(rng):
    i = rng.randrange(len(WORDS))
    return {"prompt": f"Next: {WORDS[i]}\n", "response": WORDS[(i + 1) % len(WORDS)]}


def read_jsonl(path: str, limit: Optional[int] = None) -> list[dict]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"SFT data file {path!r} does not exist; give a .jsonl file or sft.source=synthetic")
    rows = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(row).__name__}")
            row["_where"] = f"{path}:{n}"
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise DataError(f"SFT data file {path!r} holds no examples")
    return rows


def load_examples(cfg: SFTConfig) -> tuple[list[dict], Optional[list[dict]]]:
    """(train, validation) examples: from ``sft.source`` (+ ``val_source``) or generated."""
    if cfg.source == "synthetic":
        rows = synthetic_examples(cfg.tasks, cfg.num_examples, cfg.seed)
        for i, r in enumerate(rows):
            r["_where"] = f"synthetic example {i}"
    else:
        rows = read_jsonl(cfg.source, cfg.max_examples)
    for r in rows:
        check_example(r, cfg)
    if cfg.val_source is not None:
        val = read_jsonl(cfg.val_source)
        for r in val:
            check_example(r, cfg)
        return rows, val
    return held_out_split(rows, cfg, "SFT examples")


def held_out_split(rows: list, cfg: SFTConfig, what: str):
    """(train, held-out) rows: ``sft.val_fraction`` of them held out in a seeded shuffle (None: none)."""
    if cfg.val_fraction == 0:
        return rows, None
    order = list(range(len(rows)))
    random.Random(cfg.seed + 1).shuffle(order)
    n_val = max(1, int(round(cfg.val_fraction * len(rows))))
    if n_val >= len(rows):
        raise DataError(f"only {len(rows)} {what}; lower sft.val_fraction or give sft.val_source")
    val = set(order[:n_val])
    return [r for i, r in enumerate(rows) if i not in val], [r for i, r in enumerate(rows) if i in val]


def example_texts(examples: list[dict], cfg: SFTConfig) -> list[str]:
    """Plain texts of the examples (to train a tokenizer on)."""
    texts = []
    for r in examples:
        if cfg.messages_field in r and isinstance(r[cfg.messages_field], list):
            texts += [str(m.get("content", "")) for m in r[cfg.messages_field] if isinstance(m, dict)]
        else:
            texts.append(f"{r.get(cfg.prompt_field) or ''}{r.get(cfg.response_field) or ''}")
    return [t for t in texts if t.strip()]


def check_example(row: dict, cfg: SFTConfig) -> None:
    """One-line error for a row that cannot become an example (before any tokenizer exists)."""
    where = row.get("_where", "an SFT row")
    if cfg.messages_field in row:
        messages = row[cfg.messages_field]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise DataError(f"{where}: '{cfg.messages_field}' must be a non-empty list of {{role, content}} objects")
        last = messages[-1]
        if last.get("role") != "assistant" or not str(last.get("content") or "").strip():
            raise DataError(f"{where}: the last message must be the assistant's response (non-empty); this row has none")
        return
    if cfg.prompt_field not in row:
        raise DataError(f"{where}: no '{cfg.prompt_field}' or '{cfg.messages_field}' field; each row needs a prompt and a response")
    response = row.get(cfg.response_field)
    if response is None or not str(response).strip():
        raise DataError(f"{where}: the row has no '{cfg.response_field}' (a response is required for SFT)")


def split_example(row: dict, tokenizer, cfg: SFTConfig) -> tuple[str, str]:
    """(prompt text, response text) of one example; one-line errors for rows that cannot be used."""
    where = row.get("_where", "an SFT row")
    check_example(row, cfg)
    if cfg.messages_field in row:
        messages = row[cfg.messages_field]
        last = messages[-1]
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "the data has chat 'messages' but the tokenizer has no chat template; use a tokenizer that has one "
                "(tokenizer.path, or the init_from / denoiser model's own) or write rows as {prompt, response}"
            )
        prompt = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
        return prompt, assistant_turn(tokenizer, messages, prompt)
    if cfg.prompt_field not in row:
        raise DataError(f"{where}: no '{cfg.prompt_field}' or '{cfg.messages_field}' field; each row needs a prompt and a response")
    response = row.get(cfg.response_field)
    if response is None or not str(response).strip():
        raise DataError(f"{where}: the row has no '{cfg.response_field}' (a response is required for SFT)")
    return str(row[cfg.prompt_field]), str(response)


def assistant_turn(tokenizer, messages: list[dict], prompt: str) -> str:
    """The response text of a chat row AS THE TEMPLATE WRITES IT: the assistant's content plus the
    template's end-of-turn marker (LLaDA ``<|eot_id|>``, Dream / Qwen ``<|im_end|>\n``), i.e. what
    follows ``prompt`` in the rendering of the whole conversation. The model thus learns to close
    its turn with the end-of-turn token, and the EOS padding follows it (LLaDA's SFT layout). A
    template whose full rendering does not start with the prompt's gives the bare content."""
    content = str(messages[-1]["content"])
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    if full.startswith(prompt) and content in full[len(prompt):]:
        return full[len(prompt):]
    return content


def row_weights(n_prompt: int, n_response: int, seq_len: int, policy: str, pad_weight: float) -> list[float]:
    """loss_mask of one row [L]: 0 on the prompt, the policy's weights after it, summing to 1."""
    w = [0.0] * n_prompt + [1.0] * (n_response + 1)  # the response and the EOS that ends it
    pads = seq_len - len(w)
    w += [{"first": 0.0, "all": 1.0, "weighted": pad_weight}[policy]] * pads
    total = sum(w)
    return [x / total for x in w]


def build_rows(examples: list[dict], tokenizer, seq_len: int, cfg: SFTConfig, what: str = "training"):
    """Examples -> a torch-formatted ``datasets.Dataset`` with ``input_ids``, ``loss_mask`` (float
    weights) and ``prompt_mask`` [N, L]. Rows longer than L are dropped (one line says how many)."""
    import datasets

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("the tokenizer has no EOS token; SFT pads responses with EOS")
    ids, masks, prompts, dropped = [], [], [], 0
    for row in examples:
        prompt, response = split_example(row, tokenizer, cfg)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"]
        if len(p) + len(r) + 1 > seq_len:
            dropped += 1
            continue
        seq = p + r + [eos]
        ids.append(seq + [eos] * (seq_len - len(seq)))
        masks.append(row_weights(len(p), len(r), seq_len, cfg.eos_policy, cfg.pad_eos_weight))
        prompts.append([1] * len(p) + [0] * (seq_len - len(p)))
    if not ids:
        raise DataError(f"no {what} example fits data.seq_len={seq_len} (prompt + response + EOS); raise data.seq_len")
    if dropped:
        warn(f"sft: dropped {dropped} of {len(examples)} {what} examples longer than data.seq_len={seq_len}; "
             "raise data.seq_len to keep them")
    ds = datasets.Dataset.from_dict({"input_ids": ids, "loss_mask": masks, "prompt_mask": prompts})
    return ds.with_format("torch")


# ---------------------------------------------------------------------------------------------
# Condition dropout
# ---------------------------------------------------------------------------------------------


def dropped_rows(seed: int, start: int, count: int, p: float) -> torch.Tensor:
    """[count] bool: which global rows start..start+count-1 lose their prompt (depends on nothing else)."""
    draws = [torch.rand((), generator=torch.Generator().manual_seed(hash((seed, 104_729, start + i)) & 0x7FFF_FFFF_FFFF_FFFF))
             for i in range(count)]
    return torch.stack(draws) < p


class PromptDropout:
    """The denoiser as seen by a training batch whose dropped rows have their prompt replaced by [MASK]
    in the network input. x0 and x_t are untouched, so the loss (response only) is unchanged."""

    def __init__(self, model, hide: torch.Tensor, mask_id: int):
        self.model = model
        self.hide = hide  # [B, L] bool: prompt positions of dropped rows
        self.mask_id = mask_id

    def __call__(self, input_ids, **kwargs):
        if input_ids.shape == self.hide.shape:
            input_ids = torch.where(self.hide, torch.full_like(input_ids, self.mask_id), input_ids)
        return self.model(input_ids, **kwargs)


def with_prompt_dropout(model, prompt_mask: Optional[torch.Tensor], p: float, mask_id: Optional[int], seed: int, start: int):
    """``model`` itself, or a :class:`PromptDropout` view of it when condition dropout applies."""
    if p <= 0 or prompt_mask is None:
        return model
    if mask_id is None:
        raise ConfigError("train.cond_dropout needs a process with a mask token (the dropped prompt becomes [MASK])")
    drop = dropped_rows(seed, start, prompt_mask.shape[0], p).to(prompt_mask.device)
    if not bool(drop.any()):
        return model
    return PromptDropout(model, prompt_mask.bool() & drop[:, None], mask_id)
