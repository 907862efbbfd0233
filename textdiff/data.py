"""Data: text sources -> documents -> token rows of length L, with the ``datasets`` library.

Sources (``data.source``): ``embedded`` (see :mod:`textdiff.corpus`), a local ``.txt`` / ``.jsonl``
/ ``.json`` / ``.parquet`` / ``.csv`` file or a folder of them, a folder written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (the split named by ``data.split``; a
``val_source`` reads its ``validation`` split), or a hub dataset name (needs a network; offline it
fails with a one-line error naming the local-file alternative). With ``data.streaming`` the same
sources are read lazily (:mod:`textdiff.streaming`).

Layouts (``data.layout``):

* ``wrap``: documents are concatenated with EOS after each and cut into rows of L tokens (the last
  partial row is dropped). Every token counts.
* ``pad``: one document per row, truncated to L − 1 tokens plus EOS, then padded with PAD. A
  ``loss_mask`` column marks the real tokens (and the EOS).

The held-out validation split is a seeded random fraction of the documents (or ``val_source``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from .config import DataConfig
from .errors import DataError, warn

FILE_TYPES = {".txt": "text", ".raw": "text", ".tokens": "text", ".md": "text", ".jsonl": "json",
              ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FILE_TYPES or os.sep + os.sep in source


def _files(path: Path) -> list[str]:
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in FILE_TYPES and p.is_file())
        if not files:
            raise DataError(f"folder {str(path)!r} holds no .txt/.jsonl/.json/.parquet/.csv files")
        return files
    return [str(path)]


def _first_bad_json_line(files: list[str]) -> Optional[str]:
    """``file:line`` of the first line of a JSON Lines file that does not parse (None if all do)."""
    import json

    for f in files:
        if not f.endswith(".jsonl"):
            continue
        with open(f, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except ValueError:
                        return f"{f}:{n}"
    return None


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _saved_split(path: Path, source: str, split: str):
    """The ``split`` of a ``save_to_disk`` folder (a Dataset folder is its own single split)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read the saved dataset {source!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"the saved DatasetDict {source!r} has no split {split!r} (splits: {list(ds)}); "
                            "set data.split (or, for val_source, give a folder with a 'validation' split)")
        ds = ds[split]
    return ds


def open_source(source: str, cfg: DataConfig, split: str, streaming: bool = False):
    """The raw ``datasets.Dataset`` (or ``IterableDataset`` when ``streaming``) of ``source``, any columns."""
    import datasets

    if source == "embedded":
        from .corpus import embedded_documents

        ds = datasets.Dataset.from_dict({"text": list(embedded_documents())})
        return ds.to_iterable_dataset() if streaming else ds
    path = Path(source).expanduser()
    if is_saved_dataset(path):
        ds = _saved_split(path, source, split)
        return ds.to_iterable_dataset() if streaming else ds
    if path.exists():
        files = _files(path)
        kinds = {FILE_TYPES.get(Path(f).suffix.lower(), "text") for f in files}
        if len(kinds) > 1:
            raise DataError(f"{source!r} mixes file types {sorted(kinds)}; keep one type per source")
        kind = kinds.pop()
        kwargs = {"sample_by": "line" if cfg.lines_are_documents else "paragraph"} if kind == "text" else {}
        if all(os.path.getsize(f) == 0 for f in files):
            raise DataError(f"the corpus {source!r} is empty (0 bytes); check data.source")
        try:
            return datasets.load_dataset(kind, data_files=files, split="train", streaming=streaming, **kwargs)
        except Exception as e:  # noqa: BLE001 - datasets raises many types for unreadable files
            where = _first_bad_json_line(files) if kind == "json" else None
            if where:
                raise DataError(f"{where}: not valid JSON; fix or remove that line") from None
            raise DataError(f"cannot read {source!r} as {kind} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if _looks_like_path(source):
        raise DataError(f"data file {source!r} does not exist; check data.source (a .txt/.jsonl/.parquet path, 'embedded' or a hub name)")
    try:
        return datasets.load_dataset(source, cfg.hub_config, split=split, streaming=streaming)
    except Exception as e:  # noqa: BLE001
        raise DataError(
            f"cannot load hub dataset {source!r} ({type(e).__name__}); offline or unknown name? "
            "save it as a local .txt/.jsonl/.parquet file and set data.source to its path"
        ) from None


def _check_text_field(ds, source: str, cfg: DataConfig) -> None:
    """An in-memory ``Dataset``'s text column: present, of strings, not all missing (a warning when some are)."""
    if cfg.text_field not in ds.column_names:
        raise DataError(f"{source!r} has no column {cfg.text_field!r} (columns: {ds.column_names}); set data.text_field")
    feature = getattr(ds.features[cfg.text_field], "dtype", None)
    if feature not in ("string", "large_string"):
        raise DataError(f"{source!r}: column {cfg.text_field!r} holds {feature or 'nested'} values, not text; "
                        "set data.text_field to the text column")
    lacking = ds.data.column(cfg.text_field).null_count  # rows without the field (JSON) or with null
    if lacking == len(ds):
        raise DataError(f"no row of {source!r} has a {cfg.text_field!r} value; set data.text_field to the text column")
    if lacking:
        warn(f"{lacking} of {len(ds)} rows of {source!r} have no {cfg.text_field!r} value and are skipped")


def text_column(ds, source: str, cfg: DataConfig):
    """Only the ``text`` column (renamed from ``data.text_field``), blank documents dropped."""
    columns = ds.column_names
    if columns is not None and cfg.text_field not in columns:
        raise DataError(f"{source!r} has no column {cfg.text_field!r} (columns: {columns}); set data.text_field")
    if cfg.text_field != "text":
        ds = ds.rename_column(cfg.text_field, "text")
    return ds.select_columns(["text"]).filter(lambda b: [bool(t and t.strip()) for t in b["text"]], batched=True)


def load_documents(source: str, cfg: DataConfig, split: Optional[str] = None):
    """A ``datasets.Dataset`` with one column ``text``, one document per row."""
    ds = open_source(source, cfg, split or cfg.split)
    _check_text_field(ds, source, cfg)
    try:
        ds = text_column(ds, source, cfg)
    except UnicodeDecodeError as e:
        raise DataError(f"{source!r} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    if cfg.max_documents is not None:
        ds = ds.select(range(min(cfg.max_documents, len(ds))))
    if len(ds) == 0:
        raise DataError(f"the corpus {source!r} is empty (no non-blank documents); check data.source")
    return ds


def split_documents(cfg: DataConfig):
    """(train, validation) document datasets, split by a seeded shuffle unless ``val_source`` is given."""
    docs = load_documents(cfg.source, cfg)
    if cfg.val_source is not None:
        return docs, load_documents(cfg.val_source, cfg, split="validation")
    if cfg.val_fraction == 0:
        return docs, None
    if len(docs) < 2:
        raise DataError("the corpus has a single document; give data.val_source or more documents")
    n_val = max(1, int(round(cfg.val_fraction * len(docs))))
    order = np.random.default_rng(cfg.shuffle_seed).permutation(len(docs))
    return docs.select(sorted(order[n_val:].tolist())), docs.select(sorted(order[:n_val].tolist()))


def tokenize_rows(docs, tokenizer, cfg: DataConfig):
    """Documents -> rows [N, L] in the configured layout (``input_ids`` and, for pad, ``loss_mask``)."""
    L, eos, pad = cfg.seq_len, tokenizer.eos_token_id, tokenizer.pad_token_id

    def encode(batch):
        return {"ids": tokenizer(batch["text"], add_special_tokens=False, verbose=False)["input_ids"]}

    tok = docs.map(encode, batched=True, remove_columns=["text"], num_proc=cfg.num_proc)

    def wrap(batch):
        flat = [i for ids in batch["ids"] for i in ids + [eos]]
        n = len(flat) // L
        return {"input_ids": [flat[k * L:(k + 1) * L] for k in range(n)]}

    def pad_rows(batch):
        rows, masks = [], []
        for ids in batch["ids"]:
            ids = ids[: L - 1] + [eos]
            rows.append(ids + [pad] * (L - len(ids)))
            masks.append([1] * len(ids) + [0] * (L - len(ids)))
        return {"input_ids": rows, "loss_mask": masks}

    fn = wrap if cfg.layout == "wrap" else pad_rows
    rows = tok.map(fn, batched=True, batch_size=1000, remove_columns=["ids"], num_proc=cfg.num_proc)
    if len(rows) == 0:
        raise DataError(
            f"no row of seq_len={L} could be made (the corpus is shorter than one row); lower data.seq_len or add text"
        )
    return rows.with_format("torch")


def unigram_log_probs(rows, vocab_size: int) -> np.ndarray:
    """Add-one smoothed unigram log-frequencies [V] of the counted tokens of ``rows``."""
    counts = np.ones(vocab_size, dtype=np.float64)
    for batch in rows.iter(batch_size=4096):
        ids = batch["input_ids"].numpy()
        if "loss_mask" in batch:
            ids = ids[batch["loss_mask"].numpy().astype(bool)]
        counts += np.bincount(ids.reshape(-1), minlength=vocab_size)[:vocab_size]
    return np.log(counts / counts.sum())


def unigram_ppl(rows, log_probs: np.ndarray) -> float:
    """Perplexity of the counted tokens of ``rows`` under a unigram model (the baseline to beat)."""
    total, n = 0.0, 0
    for batch in rows.iter(batch_size=4096):
        ids = batch["input_ids"].numpy()
        if "loss_mask" in batch:
            ids = ids[batch["loss_mask"].numpy().astype(bool)]
        total -= float(log_probs[ids].sum())
        n += ids.size
    return float(np.exp(total / max(n, 1)))
