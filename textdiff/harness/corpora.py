"""Evaluation corpora by local path, with the detokenizers of the zero-shot protocols.

Formats (``dataset.format``):

* ``lines``: one document per non-blank line (PTB, LM1B: one sentence per line);
* ``paragraphs``: documents separated by blank lines;
* ``wikitext``: WikiText raw files, one document per article; an article starts at a top-level
  heading line `` = Title = `` (level-2+ headings `` = = Section = = `` stay inside it);
* ``jsonl``: one JSON object per line, the text in ``text_field`` (LAMBADA);
* ``embedded``: the package's embedded corpus; ``part: validation`` gives exactly the held-out
  documents of a training run with the same ``val_fraction`` / ``shuffle_seed`` (quickstart: 0.05 / 0).

Detokenizers (``dataset.detokenizer``) undo the benchmark's tokenisation so that the model sees
ordinary text, as in the zero-shot protocols of SEDD (Lou et al. 2024) and MDLM (Sahoo et al. 2024),
which apply per-dataset detokenizers before GPT-2 tokenisation. The rules below are ours, written
from the corpora's documented conventions:

* ``ptb``: re-attach clitics (`` 's``, `` n't``, `` 're``, `` 've``, `` 'm``, `` 'll``, `` 'd``), `` \\/ `` → ``/``,
  drop the line's outer spaces; ``<unk>`` and ``N`` (PTB's number token) are kept as they are;
* ``wikitext``: `` @-@ `` → ``-``, `` @,@ `` → ``,``, `` @.@ `` → ``.``, punctuation re-attached
  (`` , `` → ``, ``, `` . `` → ``. ``, brackets, quotes of clitics), heading spacing tightened;
* ``lm1b``: punctuation and clitics re-attached, PTB-style quotes (````` `` ''``) → ``"``;
* ``none``: LAMBADA (OpenAI's jsonl is already detokenized).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from textdiff.errors import DataError

_CLITICS = [(" 's", "'s"), (" n't", "n't"), (" 're", "'re"), (" 've", "'ve"), (" 'm", "'m"), (" 'll", "'ll"), (" 'd", "'d")]


def _punct(text: str) -> str:
    for a, b in ((" ,", ","), (" .", "."), (" ;", ";"), (" :", ":"), (" ?", "?"), (" !", "!"), ("( ", "("), (" )", ")"),
                 ("[ ", "["), (" ]", "]")):
        text = text.replace(a, b)
    return text


def detok_ptb(text: str) -> str:
    for a, b in _CLITICS:
        text = text.replace(a, b)
    text = text.replace(" \\/ ", "/").replace("\\/", "/")
    return text.strip()


def detok_wikitext(text: str) -> str:
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for a, b in _CLITICS:
        text = text.replace(a, b)
    text = _punct(text)
    text = re.sub(r"(=+) (.*?) (=+)", lambda m: f"{m.group(1)} {m.group(2).strip()} {m.group(3)}", text)
    text = re.sub(r" {2,}", " ", text)
    return "\n".join(line.strip() for line in text.split("\n"))


def detok_lm1b(text: str) -> str:
    text = text.replace("`` ", '"').replace(" ''", '"').replace("``", '"').replace("''", '"')
    for a, b in _CLITICS:
        text = text.replace(a, b)
    text = _punct(text)
    text = re.sub(r" - ", "-", text)
    return re.sub(r" {2,}", " ", text).strip()


DETOKENIZERS = {"none": lambda s: s, "ptb": detok_ptb, "wikitext": detok_wikitext, "lm1b": detok_lm1b}


def _wikitext_articles(raw: str) -> list[str]:
    articles, current = [], []
    for line in raw.split("\n"):
        if re.fullmatch(r" = [^=].* = ", line):  # a top-level heading starts a new article
            if any(ln.strip() for ln in current):
                articles.append("\n".join(ln for ln in current if ln.strip()))
            current = []
        current.append(line)
    if any(ln.strip() for ln in current):
        articles.append("\n".join(ln for ln in current if ln.strip()))
    return articles


def load_corpus(spec, repo_root: Path) -> list[str]:
    """Documents (strings, detokenized) of a dataset spec (see :class:`textdiff.harness.suite.DatasetSpec`)."""
    if spec.detokenizer not in DETOKENIZERS:
        raise DataError(f"dataset {spec.path!r}: unknown detokenizer {spec.detokenizer!r}; use one of {sorted(DETOKENIZERS)}")
    if spec.format == "embedded" or spec.path == "embedded":
        docs = _embedded(spec)
    else:
        path = Path(spec.path)
        path = path if path.is_absolute() else (repo_root / path)
        if not path.is_file():
            raise DataError(f"dataset file {spec.path!r} does not exist (resolved to {str(path)!r}); fix dataset.path")
        raw = path.read_text(encoding="utf-8")
        if spec.format == "lines":
            docs = [ln for ln in raw.split("\n") if ln.strip()]
        elif spec.format == "paragraphs":
            docs = [p for p in re.split(r"\n\s*\n", raw) if p.strip()]
        elif spec.format == "wikitext":
            docs = _wikitext_articles(raw)
        elif spec.format == "jsonl":
            docs = []
            for i, ln in enumerate(raw.split("\n")):
                if not ln.strip():
                    continue
                try:
                    obj = json.loads(ln)
                except json.JSONDecodeError:
                    raise DataError(f"{spec.path!r} line {i + 1} is not JSON; format jsonl needs one object per line") from None
                if spec.text_field not in obj:
                    raise DataError(f"{spec.path!r} line {i + 1} has no field {spec.text_field!r}; set dataset.text_field")
                docs.append(str(obj[spec.text_field]))
        else:
            raise DataError(f"unknown dataset.format {spec.format!r}")
    detok = DETOKENIZERS[spec.detokenizer]
    docs = [detok(d) for d in docs]
    docs = [d for d in docs if d.strip()]
    if spec.max_documents is not None:
        docs = docs[: spec.max_documents]
    if not docs:
        raise DataError(f"dataset {spec.path!r} is empty (no non-blank documents)")
    return docs


def _embedded(spec) -> list[str]:
    from textdiff.config import DataConfig
    from textdiff.data import load_documents, split_documents

    cfg = DataConfig(source="embedded", val_fraction=spec.val_fraction, shuffle_seed=spec.shuffle_seed)
    if spec.part == "all":
        return list(load_documents("embedded", cfg)["text"])
    train, val = split_documents(cfg)
    return list((val if spec.part == "validation" else train)["text"])


def lambada_pairs(docs: list[str], limit: Optional[int] = None) -> list[tuple[str, str]]:
    """(context, " " + last word) pairs: LAMBADA's target is the passage's last whitespace-separated word."""
    pairs = []
    for d in docs[: limit or len(docs)]:
        d = d.rstrip()
        cut = d.rfind(" ")
        if cut <= 0:
            continue
        pairs.append((d[:cut], d[cut:]))
    if not pairs:
        raise DataError("no (context, last word) pair could be made from the dataset")
    return pairs
