"""Phase 2 engine: continuous batching at step boundaries (:class:`ContinuousScheduler`).

Every admitted row is decoded by its own ``lm.generate`` (:class:`~textdiff.serve.runner.BatchRunner`
with one row) on a thread of its own, whose model call is parked (:class:`~textdiff.serve.calls.Parked`)
instead of run. One engine thread owns the model::

    running = []
    while open or running or waiting:
        running += admit(waiting)              # FIFO, up to max_batch rows and max_tokens_in_flight positions
        wait until every running row has parked its next model call, or ended
        retire(running)                        # ended rows leave; a row that ended without a result gets 499 / 503
        stop the cancelled rows' calls         # (and every row's once the shutdown deadline passed)
        ModelCalls.run(parked calls)           # ONE forward for the rows without a cache, the others one by one

So rows join the running batch at the next step boundary after they arrive and leave as soon as
they end; rows with different samplers, steps, block sizes, lengths or prompt lengths share the
forward (the model call does not depend on the sampler; each row's sampler steps on its own logits,
from its own generator), and a row's answer is the answer it gets alone. Between two forwards the
rows' sampler steps run on their own threads (torch releases the GIL in its kernels).

``stats().batches`` counts engine steps (merged forwards rounds).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Optional

from .calls import Call, ModelCalls, Parked, Stopped
from .engine import EngineStats, Event, Failed, Finished, QueuedEngine, Request, _shutting_down


class _Lane:
    """A running row: its decoding thread, the call it has parked, what it shared."""

    def __init__(self, row: Request, number: int):
        self.row, self.number = row, number
        self.call: Optional[Call] = None  # parked, not yet answered
        self.ended = False  # its thread returned
        self.parked: Optional[Parked] = None  # its model-call hook (counts the rows it shared forwards with)


class ContinuousScheduler(QueuedEngine):
    """A bounded queue of rows, admitted into the running batch at every step boundary."""

    def __init__(self, runner, calls: ModelCalls, max_batch: int = 8, max_tokens_in_flight: int = 8192,
                 max_queue: int = 64):
        self.runner, self.calls = runner, calls
        self.max_batch, self.max_tokens_in_flight, self.max_queue = max_batch, max_tokens_in_flight, max_queue
        self._waiting: deque[Request] = deque()
        self._lanes: list[_Lane] = []
        self._cond = threading.Condition()
        self._open = True
        self._deadline: Optional[float] = None
        self._steps = 0
        self._admitted = 0
        self._row_seconds = 1.0  # moving average of a row's time in the engine, for Retry-After
        self._thread = threading.Thread(target=self._work, name="textdiff-engine", daemon=True)
        self._thread.start()

    # ---- the boundary (the queue, cancelling and shutdown: QueuedEngine) ------------------------
    def stats(self) -> EngineStats:
        with self._cond:
            return EngineStats(waiting=len(self._waiting), running=len(self._lanes), batches=self._steps,
                               accepting=self._open)

    # ---- the engine thread ----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._lanes and self._open:
                    self._cond.wait()
                if self._past_deadline():
                    for row in list(self._waiting):
                        self._finish(row, _shutting_down())
                    self._waiting.clear()
                if not self._open and not self._lanes and not self._waiting:
                    return
                self._admit()
                while not all(lane.call is not None or lane.ended for lane in self._lanes):
                    self._cond.wait(0.5)
                self._retire()
                taken = [(lane, lane.call) for lane in self._lanes if lane.call is not None]
                for lane, _ in taken:
                    lane.call = None  # taken before it is answered: the lane may then park its next call
            stopping, live = self._past_deadline(), []
            for lane, call in taken:
                if stopping or lane.row.cancelled:
                    call.answer(error=Stopped())
                else:
                    live.append(call)
            if live:
                self.calls.run(live)
                with self._cond:
                    self._steps += 1

    def _admit(self) -> None:
        """Start waiting rows, oldest first, while both bounds allow (lock held)."""
        held = sum(lane.row.cost() for lane in self._lanes)
        while self._waiting and len(self._lanes) < self.max_batch:
            row = self._waiting[0]
            if self._lanes and held + row.cost() > self.max_tokens_in_flight:
                return
            self._waiting.popleft()
            self._admitted += 1
            lane = _Lane(row, self._admitted)
            self._lanes.append(lane)
            held += row.cost()
            threading.Thread(target=self._decode, args=(lane,), name=f"textdiff-row-{lane.number}", daemon=True).start()

    def _retire(self) -> None:
        """Ended lanes leave; a row without a terminal event gets one (lock held)."""
        for lane in [lane for lane in self._lanes if lane.ended]:
            self._lanes.remove(lane)
            if not lane.row.done:
                self._finish(lane.row, _shutting_down() if self._past_deadline()
                             else Failed(499, "the request was cancelled", "cancelled"))

    def _decode(self, lane: _Lane) -> None:
        """A lane's thread: the row through the runner, its model calls parked for the engine."""
        started = time.monotonic()

        def park(call: Call) -> None:
            with self._cond:
                lane.call = call
                self._cond.notify_all()

        def emit(row: Request, event: Event) -> None:
            if row.cancelled or row.done:
                return
            if isinstance(event, Finished):  # the mean rows of the forwards it took part in; its own calls
                shared = lane.parked.shared or [1]
                event = replace(event, batch_rows=max(1, round(sum(shared) / len(shared))), batch=-lane.number)
            if isinstance(event, (Finished, Failed)):
                self._finish(row, event)
            else:
                row.sink(event)

        lane.parked = Parked(park)
        try:
            self.runner.run([lane.row], emit, lambda: lane.row.cancelled or self._past_deadline(), denoise=lane.parked)
        except Exception as e:  # noqa: BLE001  a bug must not kill the engine: the row gets a 500
            emit(lane.row, Failed(500, f"decoding failed: {type(e).__name__}: {e}"))
        finally:
            with self._cond:
                lane.ended = True
                self._row_seconds = 0.8 * self._row_seconds + 0.2 * (time.monotonic() - started)
                self._cond.notify_all()

    def _finish(self, row: Request, event: Event) -> None:
        """The row's terminal event; its lane leaves the running rows first (stats never lag the
        client; a lane that sent its result parks no further call)."""
        with self._cond:  # re-entrant
            if row.done:
                return
            row.done = True
            self._lanes = [lane for lane in self._lanes if lane.row is not row]
            self._cond.notify_all()
        row.sink(event)

    def _retry_after(self) -> int:
        """Seconds until the queue has likely moved by a batch's worth of rows (lock held)."""
        rounds = len(self._waiting) / max(1, self.max_batch) + 1
        return max(1, math.ceil(self._row_seconds * rounds))
