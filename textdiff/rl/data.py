"""The prompts of an RL run, read from the recipe's ``sft`` section (the same instruction data).

RL needs prompts (and, for verifiable rewards, the gold answers); the ``sft`` section already says
where instruction examples live, so an RL recipe names them there and ``rl`` says to learn from
rewards instead of likelihood. Each example becomes one row in TRL's dataset convention::

    {"prompt": text, or chat messages [{"role": ..., "content": ...}, ...],
     "answer": the example's response (the gold answer; None when the row has none),
     <every other column of the JSONL row, passed to the reward functions as a keyword argument>}

* ``sft.source: synthetic``: the built-in tasks (:func:`textdiff.sft.synthetic_examples`), the
  response as ``answer`` (e.g. ``"What is 17 + 25?\\n"`` -> ``"42"``);
* a ``.jsonl`` file: ``{sft.prompt_field, sft.response_field, ...}`` rows (GSM8K: ``prompt_field:
  question``, ``response_field: answer``: the ``#### 72`` line is what ``exact_answer`` reads), or
  chat rows ``{messages: [...]}`` whose earlier messages are the prompt (rendered with the
  tokenizer's chat template at rollout time) and whose last message, when it is the assistant's,
  is the answer (else the ``sft.response_field`` column is, e.g. GSM8K's ``answer``). A row
  without a response is kept (rewards that need no answer); ``exact_answer`` then gives None.

The held-out prompts (``sft.val_source`` or the ``sft.val_fraction`` split) feed the held-out
evaluation (``rl.eval_every``).
"""
from __future__ import annotations

from typing import Optional

from ..errors import DataError
from ..sft import SFTConfig, held_out_split, read_jsonl, synthetic_examples

_SKIP = ("_where",)


def prompt_row(row: dict, cfg: SFTConfig) -> dict:
    """One example -> ``{"prompt", "answer", **other columns}`` (module docstring)."""
    where = row.get("_where", "an RL prompt row")
    if cfg.messages_field in row:
        messages = row[cfg.messages_field]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise DataError(f"{where}: '{cfg.messages_field}' must be a non-empty list of {{role, content}} objects")
        answer = row.get(cfg.response_field)  # a gold-answer column beside prompt-only messages
        if messages[-1].get("role") == "assistant":
            answer, messages = str(messages[-1].get("content") or ""), messages[:-1]
        if not messages:
            raise DataError(f"{where}: the messages hold no prompt before the assistant's answer")
        prompt = messages
    elif cfg.prompt_field in row:
        prompt = row[cfg.prompt_field]
        if not isinstance(prompt, (str, list)) or not prompt:
            raise DataError(f"{where}: '{cfg.prompt_field}' must be a non-empty string or a list of chat messages")
        answer = row.get(cfg.response_field)
    else:
        raise DataError(f"{where}: no '{cfg.prompt_field}' or '{cfg.messages_field}' field; each RL row needs a prompt")
    out = {k: v for k, v in row.items() if k not in _SKIP and k not in (cfg.prompt_field, cfg.response_field, cfg.messages_field)}
    out.update(prompt=prompt, answer=None if answer is None else str(answer))
    return out


def load_prompts(cfg: SFTConfig) -> tuple[list[dict], Optional[list[dict]]]:
    """(train, held-out) prompt rows of the ``sft`` section, split as :func:`textdiff.sft.load_examples` splits."""
    if cfg.source == "synthetic":
        rows = synthetic_examples(cfg.tasks, cfg.num_examples, cfg.seed)
    else:
        rows = read_jsonl(cfg.source, cfg.max_examples)
    rows = [prompt_row(r, cfg) for r in rows]
    if cfg.val_source is not None:
        return rows, [prompt_row(r, cfg) for r in read_jsonl(cfg.val_source)]
    return held_out_split(rows, cfg, "RL prompts")


def as_dataset(rows: list[dict]):
    """Prompt rows -> a ``datasets.Dataset`` (indexable by a list of rows, as the loop's row stream reads it)."""
    import datasets

    columns = sorted({k for r in rows for k in r})
    return datasets.Dataset.from_dict({k: [r.get(k) for r in rows] for k in columns})


def prompt_texts_of(rows: list[dict]) -> list[str]:
    """Plain texts of prompt rows and answers (for a tokenizer trained on the run's data)."""
    texts = []
    for r in rows:
        p = r["prompt"]
        texts.append(p if isinstance(p, str) else " ".join(str(m.get("content", "")) for m in p))
        if r.get("answer"):
            texts.append(str(r["answer"]))
    return [t for t in texts if t.strip()]
