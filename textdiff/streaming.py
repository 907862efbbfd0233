"""Streaming data (``data.streaming: true``): documents read lazily from a ``datasets.IterableDataset``
(a hub corpus such as OpenWebText or FineWeb, local files, a ``save_to_disk`` folder), tokenized on
the fly (in ``data.num_workers`` DataLoader workers), packed into rows of L tokens, and served by
global row index like the in-memory :class:`textdiff.training.setup.RowStream`.

Order, a function of the seed and the row index only:

* documents come in the source's own order (``datasets``' shuffle buffer is not used: its state
  cannot be restored exactly). They are dealt in chunks of :data:`CHUNK` documents: chunk c belongs to
  process ``c mod P``, so P processes read disjoint documents that together cover the stream;
* a process's chunks are tokenized round-robin by its workers and torch's DataLoader hands them back
  in that order, so the tokens a process sees do not depend on the number of workers;
* tokens are packed into rows as in :mod:`textdiff.data` (``wrap`` / ``pad``), and the rows are
  shuffled in windows of ``data.shuffle_buffer`` rows by a permutation seeded by (seed, window);
* the training loop gives row blocks of ``batch_size`` rows to processes round-robin: global row g is
  local row ``(g // b // P) * b + g % b`` of process ``(g // b) mod P``.

Resume: the start of every window is a position (epoch, document, token offset). Checkpoints keep
the position of the window that holds the next row, one per process; the stream seeks there
(skipping documents without tokenizing them) and rebuilds that window, so a resumed run reads the
rows an uninterrupted one reads. A run resumed on another number of processes replays its stream.
"""
from __future__ import annotations

from collections import deque
from typing import Iterator, Optional

import torch

from .config import DataConfig
from .data import open_source, text_column
from .errors import DataError

CHUNK = 64  # documents per unit of work (a DataLoader item)
SAMPLE_DOCUMENTS = 20_000  # training documents read up front to train the tokenizer and count unigrams


def stream_documents(source: str, cfg: DataConfig, split: Optional[str] = None):
    """An ``IterableDataset`` with one column ``text`` (blank documents dropped), checked on its first row."""
    raw = open_source(source, cfg, split or cfg.split, streaming=True)
    first = next(iter(raw.take(1)), None)
    if first is None:
        raise DataError(f"the corpus {source!r} is empty; check data.source")
    if cfg.text_field not in first:
        raise DataError(f"{source!r} has no column {cfg.text_field!r} (columns: {sorted(first)}); set data.text_field")
    docs = text_column(raw, source, cfg)
    return docs.take(cfg.max_documents) if cfg.max_documents is not None else docs


def stream_split(cfg: DataConfig):
    """(training document stream, validation ``Dataset`` or None, sample of training texts).

    Without ``val_source`` the first ``data.val_documents`` documents are held out and the training
    stream starts after them; the sample (the first :data:`SAMPLE_DOCUMENTS` training documents)
    trains the tokenizer and gives the unigram baseline."""
    import datasets

    from .data import load_documents

    docs = stream_documents(cfg.source, cfg)
    everything = docs
    val = None
    if cfg.val_source is not None:
        val = load_documents(cfg.val_source, cfg, split="validation")
    elif cfg.val_fraction > 0 and cfg.val_documents > 0:
        val = datasets.Dataset.from_dict({"text": [d["text"] for d in docs.take(cfg.val_documents)]})
        docs = docs.skip(cfg.val_documents)
    sample = [d["text"] for d in docs.take(SAMPLE_DOCUMENTS)]
    if not sample and next(iter(everything.take(1)), None) is None:  # not the hold-out: nothing but blank text
        raise DataError(f"every document of {cfg.source!r} is blank (column {cfg.text_field!r}); check data.source "
                        "and data.text_field")
    if not sample:
        raise DataError(f"no training documents are left in {cfg.source!r} after the {cfg.val_documents} held out; "
                        "lower data.val_documents or give data.val_source")
    return docs, val, sample


def owner(chunk: int, world: int) -> int:
    """The process that reads chunk ``chunk`` (of :data:`CHUNK` documents)."""
    return chunk % world


def local_row(g: int, batch_size: int, world: int) -> tuple[int, int]:
    """(process, local row index) of global row ``g``: blocks of ``batch_size`` rows go round-robin."""
    block = g // batch_size
    return block % world, (block // world) * batch_size + g % batch_size


class TokenChunks(torch.utils.data.IterableDataset):
    """This process's chunks of documents from document ``start`` on, tokenized: items are
    ``(first document index, [ids of each document])``; each DataLoader worker takes every n-th chunk."""

    def __init__(self, docs, tokenizer, start: int, rank: int, world: int):
        super().__init__()
        self.docs, self.tokenizer, self.start, self.rank, self.world = docs, tokenizer, start, rank, world

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        first = self.start // CHUNK
        first_mine = first + (self.rank - first) % self.world  # this process's first chunk from `start`
        texts, index, current = [], None, None
        docs = self.docs.skip(self.start) if self.start else self.docs
        # ``iter`` (not ``__iter__``): datasets would otherwise split the stream by shard among workers itself
        texts_of = (text for batch in docs.iter(batch_size=CHUNK) for text in batch["text"])
        for i, text in enumerate(texts_of):
            d = self.start + i
            c = d // CHUNK
            if owner(c, self.world) != self.rank or ((c - first_mine) // self.world) % workers != worker:
                continue
            if c != current and texts:
                yield index, self._encode(texts)
                texts = []
            if not texts:
                index, current = d, c
            texts.append(text)
        if texts:
            yield index, self._encode(texts)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


class StreamRows:
    """Rows of one process by global index (see the module docstring); ``rows`` is called with
    increasing indices, as the training loop does."""

    def __init__(self, docs, tokenizer, cfg: DataConfig, seed: int, batch_size: int, rank: int = 0, world: int = 1,
                 position: Optional[dict] = None):
        self.docs, self.tokenizer, self.cfg = docs, tokenizer, cfg
        self.seed, self.batch_size, self.rank, self.world = seed, batch_size, rank, world
        self.size = max(1, cfg.shuffle_buffer)
        self.windows: dict[int, dict] = {}  # built windows (the last two)
        self.starts: dict[int, dict] = {}  # window -> position of its first row
        start = position or {"window": 0, "epoch": 0, "doc": 0, "offset": 0}
        self.next_window = start["window"]
        self.starts[start["window"]] = start
        self._packed = self._pack(start["epoch"], start["doc"], start["offset"])
        self._pending = None  # a row read ahead to learn where the next window starts

    # -- the public side ------------------------------------------------------------------------
    def rows(self, start: int, count: int) -> dict:
        """Rows ``start .. start + count - 1`` (global indices, all of this process)."""
        picked: dict[str, list] = {}
        for g in range(start, start + count):
            rank, r = local_row(g, self.batch_size, self.world)
            if rank != self.rank:
                raise ValueError(f"global row {g} belongs to process {rank}, not {self.rank}")
            window = self._window(r // self.size)
            k = int(window["perm"][r % self.size])
            for name, value in window["rows"].items():
                picked.setdefault(name, []).append(value[k])
        return {name: torch.stack(values) for name, values in picked.items()}

    def position(self, g: int) -> dict:
        """Where this process's stream resumes to serve global rows from ``g`` (a step boundary) on."""
        first = -(-g // (self.batch_size * self.world)) * self.batch_size  # its next local row
        window = first // self.size
        if window not in self.starts:
            self._window(window - 1)
        return dict(self.starts[window])

    # -- windows --------------------------------------------------------------------------------
    def _window(self, w: int) -> dict:
        if w in self.windows:
            return self.windows[w]
        if w < self.next_window:
            raise ValueError(f"row window {w} was already passed (the stream only moves forward)")
        while self.next_window <= w:  # also replays windows from the start when resumed without a position
            rows = [self._next_row() for _ in range(self.size)]
            self._pending = next(self._packed)
            self.starts[self.next_window + 1] = {"window": self.next_window + 1, **self._pending[2]}
            g = torch.Generator().manual_seed(self.seed * 7919 + 104_729 * self.next_window + 17)
            data = {"input_ids": torch.tensor([r[0] for r in rows])}  # [W, L]
            if rows[0][1] is not None:
                data["loss_mask"] = torch.tensor([r[1] for r in rows])  # [W, L]
            self.windows[self.next_window] = {"rows": data, "perm": torch.randperm(self.size, generator=g)}
            for old in [k for k in self.windows if k < self.next_window - 1]:
                del self.windows[old]
            for old in [k for k in self.starts if k < self.next_window - 1]:
                del self.starts[old]
            self.next_window += 1
        return self.windows[w]

    def _next_row(self):
        row, self._pending = self._pending, None
        return row if row is not None else next(self._packed)

    # -- documents -> rows ----------------------------------------------------------------------
    def _documents(self, start: int) -> Iterator[tuple[int, list[int]]]:
        chunks = TokenChunks(self.docs, self.tokenizer, start, self.rank, self.world)
        workers = self.cfg.num_workers
        loader = torch.utils.data.DataLoader(chunks, batch_size=None, num_workers=workers,
                                             prefetch_factor=4 if workers else None)
        for first, ids in loader:
            for j, doc_ids in enumerate(ids):
                yield first + j, list(doc_ids)

    def _pack(self, epoch: int, doc: int, offset: int) -> Iterator[tuple[list[int], Optional[list[int]], dict]]:
        L, eos, pad = self.cfg.seq_len, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        while True:
            made = 0
            buf: list[int] = []
            segs: deque = deque()  # [document, offset of its first token in buf, tokens of it in buf]
            for d, ids in self._documents(doc):
                if self.cfg.layout == "pad":
                    ids = ids[: L - 1] + [eos]
                    made += 1
                    yield ids + [pad] * (L - len(ids)), [1] * len(ids) + [0] * (L - len(ids)), {"epoch": epoch, "doc": d, "offset": 0}
                    continue
                ids = ids + [eos]
                start = offset if d == doc else 0
                buf.extend(ids[start:])
                segs.append([d, start, len(ids) - start])
                while len(buf) >= L:
                    where = {"epoch": epoch, "doc": segs[0][0], "offset": segs[0][1]}
                    row, buf = buf[:L], buf[L:]
                    n = L
                    while n:
                        take = min(n, segs[0][2])
                        segs[0][1] += take
                        segs[0][2] -= take
                        n -= take
                        if segs[0][2] == 0:
                            segs.popleft()
                    made += 1
                    yield row, None, where
            if made == 0 and doc == 0 and offset == 0:
                raise DataError(f"the stream gives no row of seq_len={L} (the corpus is shorter than one row); "
                                "lower data.seq_len or add text")
            epoch, doc, offset = epoch + 1, 0, 0  # the next epoch reads the stream again from its start
