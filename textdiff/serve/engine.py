"""The engine boundary of ``textdiff serve``: what the HTTP layer hands over and what it gets back.

The HTTP layer (:mod:`textdiff.serve.app`) knows nothing about batches, windows or caches. It turns
an API request into one :class:`Request` per answer row (token ids, :class:`DecodeSettings`, a
seed, stop strings), gives them to an :class:`Engine` and reads the row's :class:`Event` objects::

    engine.submit([row, ...])      # all rows admitted, or none: QueueFull (429) / ShuttingDown (503)
    row.sink(Delta(text))          # 0+ times, only for ``row.stream``: text of a FINAL prefix
    row.sink(Finished(...))        # exactly one terminal event per row: Finished or Failed
    engine.cancel(row)             # client gone or timed out: the row is freed
    engine.stats()                 # waiting / running rows (metrics, Retry-After)
    engine.begin_shutdown(seconds); engine.close()

``sink`` is called from the engine's worker thread; the HTTP layer hops back onto its event loop.

Phase 1 (this module): :class:`BatchScheduler` keeps a bounded FIFO of waiting rows and, on ONE
worker thread (the model is not thread-safe), repeatedly takes the oldest row plus every waiting
row with the same :class:`DecodeSettings` (in arrival order, up to ``max_batch`` rows and
``max_tokens_in_flight`` padded positions) and hands that batch to a runner
(:class:`~textdiff.serve.runner.BatchRunner`), which decodes it to the end. Rows carry their own
seeds, so a row's answer is the answer it gets alone (batch invariance of
:func:`textdiff.generation.generate`).

Phase 2 (continuous batching, :mod:`textdiff.serve.continuous`, the engine ``textdiff serve`` uses)
keeps this boundary and replaces "one batch to the end" with a step-level engine, without touching
the HTTP layer::

    running = []
    while open or running or waiting:
        running += admit(waiting)            # at a step (or block) boundary: settings groups, budget
        events = step_engine.step(running)   # one model call per group of compatible rows
        retire(running, events)              # finished / cancelled rows leave; their caches free

``submit``, ``cancel``, ``stats``, the events and their order stay as they are; ``cancel`` then
frees a running row at the next step (phase 1: a waiting row at once, a running row when its batch
ends, or at the next step when every row of its batch is cancelled).
"""
from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence, Union

# ---------------------------------------------------------------------------------------------
# Rows and events
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeSettings:
    """Everything that must be equal for rows to share a batch (all but the seed and the stops)."""

    max_new_tokens: int
    steps: Optional[int]  # None: one step per new token
    sampler: str  # the sampler spec as canonical JSON (name + config fields)
    block_size: Optional[int]  # None: the model's released decoding
    cache: str  # "auto" | "none" | "exact" | "prefix" | "dual"


@dataclass
class Delta:
    """New text of the row's final prefix (never a split character, never past a stop)."""

    text: str


@dataclass
class Finished:
    text: str  # the whole answer
    delta: str  # what no Delta carried yet (the end of a streamed answer, or all of it)
    finish_reason: str  # "stop" (EOS, stop token or stop string) | "length"
    completion_tokens: int
    steps: int  # sampler steps of the batch the row ran in
    model_calls: int  # network forwards of that batch
    batch_rows: int
    batch: int = 0  # which batch (rows of one request may share one: count its model calls once)


@dataclass
class Failed:
    status: int  # the HTTP status the row's request gets
    message: str
    type: str = "server_error"
    code: Optional[str] = None


Event = Union[Delta, Finished, Failed]


@dataclass(eq=False)
class Request:
    """One answer row: prompt token ids and how to decode them."""

    prompt_ids: list[int]
    settings: DecodeSettings
    seed: int
    stop: tuple[str, ...] = ()
    stream: bool = False  # send Delta events
    sink: Callable[[Event], None] = lambda event: None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    done: bool = False  # a terminal event was sent

    def cost(self) -> int:
        """Positions the row holds alone (prompt + new tokens)."""
        return len(self.prompt_ids) + self.settings.max_new_tokens


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    pass


@dataclass
class EngineStats:
    waiting: int  # rows in the queue
    running: int  # rows in the model (cancelled ones too, until they are freed)
    batches: int  # batches (phase 2: steps) run so far
    accepting: bool = True  # False once shutdown began


class Engine(Protocol):
    def submit(self, rows: Sequence[Request]) -> None: ...
    def cancel(self, row: Request) -> None: ...
    def stats(self) -> EngineStats: ...
    def begin_shutdown(self, seconds: float) -> None: ...
    def close(self, timeout: Optional[float] = None) -> None: ...


class Runner(Protocol):
    def run(self, rows: list[Request], emit: Callable[[Request, Event], None], stop: Callable[[], bool]) -> None:
        """Decode ``rows`` (equal settings) and ``emit`` each row's events; give up (rows stay
        without a terminal event) as soon as ``stop()`` is true at a step boundary."""


# ---------------------------------------------------------------------------------------------
# Phase 1: whole batches on one worker thread
# ---------------------------------------------------------------------------------------------


class QueuedEngine:
    """What every engine shares at its boundary: a bounded queue of waiting rows under one condition,
    cancelling, and the shutdown deadline. A subclass sets ``_waiting``, ``_cond``, ``_open``,
    ``_deadline``, ``max_queue`` and ``_thread``, and defines ``stats``, ``_finish`` and ``_retry_after``."""

    def submit(self, rows: Sequence[Request]) -> None:
        with self._cond:
            if not self._open:
                raise ShuttingDown()
            if len(self._waiting) + len(rows) > self.max_queue:
                raise QueueFull(self._retry_after())
            self._waiting.extend(rows)
            self._cond.notify_all()

    def cancel(self, row: Request) -> None:
        with self._cond:
            row.cancelled = True
            if row in self._waiting:
                self._waiting.remove(row)
                self._finish(row, Failed(499, "the request was cancelled", "cancelled"))
            self._cond.notify_all()

    def begin_shutdown(self, seconds: float) -> None:
        """Admit nothing new; decode what is queued until ``seconds`` from now, then cancel the rest."""
        with self._cond:
            self._open = False
            self._deadline = time.monotonic() + max(0.0, seconds)
            self._cond.notify_all()

    def close(self, timeout: Optional[float] = None) -> None:
        if self._deadline is None:
            self.begin_shutdown(0.0)
        self._thread.join(timeout)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline


class BatchScheduler(QueuedEngine):
    """A bounded queue of rows and one worker thread that decodes batches of compatible rows."""

    def __init__(self, runner: Runner, max_batch: int = 8, max_tokens_in_flight: int = 8192, max_queue: int = 64):
        self.runner = runner
        self.max_batch, self.max_tokens_in_flight, self.max_queue = max_batch, max_tokens_in_flight, max_queue
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._cond = threading.Condition()
        self._open = True
        self._deadline: Optional[float] = None  # shutdown: cancel what is left at this time
        self._batches = 0
        self._batch_seconds = 1.0  # moving average, for Retry-After
        self._thread = threading.Thread(target=self._work, name="textdiff-engine", daemon=True)
        self._thread.start()

    # ---- the boundary ------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        with self._cond:
            return EngineStats(waiting=len(self._waiting), running=len(self._running), batches=self._batches,
                               accepting=self._open)

    # ---- the worker --------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and self._open:
                    self._cond.wait()
                if self._past_deadline() or (not self._open and not self._waiting):
                    for row in list(self._waiting):
                        self._finish(row, _shutting_down())
                    self._waiting.clear()
                    return
                batch = self._pick()
                self._running = list(batch)
            started = time.monotonic()
            try:
                self.runner.run(batch, self._emit, lambda: self._past_deadline() or all(r.cancelled for r in batch))
            except Exception as e:  # noqa: BLE001  a bug must not kill the worker: the batch's rows get a 500
                self._fail(batch, Failed(500, f"decoding failed: {type(e).__name__}: {e}"))
            with self._cond:
                self._running = []
                self._batches += 1
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.monotonic() - started)
            reason = _shutting_down() if self._past_deadline() else Failed(499, "the request was cancelled", "cancelled")
            self._fail(batch, reason)  # rows left without a result (cancelled, or cut by the deadline)

    def _pick(self) -> list[Request]:
        """The oldest waiting row and the later ones with its settings, within both bounds (lock held)."""
        head = self._waiting[0]
        batch, longest = [], 0
        for row in list(self._waiting):
            if row.settings != head.settings:
                continue
            wide = max(longest, len(row.prompt_ids))
            if batch and (len(batch) == self.max_batch
                          or (len(batch) + 1) * (wide + head.settings.max_new_tokens) > self.max_tokens_in_flight):
                break
            batch.append(row)
            longest = wide
            self._waiting.remove(row)
        return batch

    def _emit(self, row: Request, event: Event) -> None:
        if row.cancelled or row.done:
            return
        if isinstance(event, (Finished, Failed)):
            self._finish(row, event)
        else:
            row.sink(event)

    def _fail(self, rows, event: Failed) -> None:
        for row in rows:
            if not row.done:
                self._finish(row, event)

    def _finish(self, row: Request, event: Event) -> None:
        """The row's terminal event; it leaves the running rows first (so stats never lag the client)."""
        with self._cond:  # re-entrant
            row.done = True
            if row in self._running:
                self._running.remove(row)
        row.sink(event)

    def _retry_after(self) -> int:
        """Seconds until the queue has likely moved by a batch (lock held)."""
        batches_ahead = len(self._waiting) / max(1, self.max_batch) + 1
        return max(1, math.ceil(self._batch_seconds * batches_ahead))


def _shutting_down() -> Failed:
    return Failed(503, "the server is shutting down; retry on another replica", "server_error", "shutting_down")
