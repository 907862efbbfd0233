"""``/metrics``: the server's figures in Prometheus' text format (one registry per server).

==========================================  ======================================================
``textdiff_queue_rows``                     rows waiting for the model
``textdiff_running_rows``                   rows in the model (0 when idle: nothing leaked)
``textdiff_requests_total{endpoint,status}`` answered requests by HTTP status
``textdiff_prompt_tokens_total``            prompt tokens of answered requests
``textdiff_generated_tokens_total``         answer tokens
``textdiff_tokens_per_second``              answer tokens per second over the last 30 s
``textdiff_time_to_first_token_seconds``    arrival -> first answer text sent (histogram)
``textdiff_request_latency_seconds``        arrival -> last byte (histogram)
``textdiff_batch_rows``                     rows of the batch each answer row ran in (histogram)
==========================================  ======================================================
"""
from __future__ import annotations

import threading
import time
from collections import deque

RATE_WINDOW = 30.0  # seconds of history behind textdiff_tokens_per_second
SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self, engine):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        Gauge("textdiff_queue_rows", "Rows waiting for the model", registry=r).set_function(lambda: engine.stats().waiting)
        Gauge("textdiff_running_rows", "Rows in the model", registry=r).set_function(lambda: engine.stats().running)
        Gauge("textdiff_tokens_per_second", f"Answer tokens per second over the last {RATE_WINDOW:g} s",
              registry=r).set_function(self.tokens_per_second)
        self.requests = Counter("textdiff_requests", "Answered requests", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("textdiff_prompt_tokens", "Prompt tokens of answered requests", registry=r)
        self.generated_tokens = Counter("textdiff_generated_tokens", "Answer tokens", registry=r)
        self.ttft = Histogram("textdiff_time_to_first_token_seconds", "Arrival to the first answer text",
                              buckets=SECONDS, registry=r)
        self.latency = Histogram("textdiff_request_latency_seconds", "Arrival to the last byte", buckets=SECONDS, registry=r)
        self.batch_rows = Histogram("textdiff_batch_rows", "Rows of the batch an answer row ran in",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self._recent: deque = deque()  # (time, tokens) of the last RATE_WINDOW seconds
        self._lock = threading.Lock()

    def answered(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()

    def tokens(self, prompt: int, generated: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.generated_tokens.inc(generated)
        with self._lock:
            self._recent.append((time.monotonic(), generated))

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / RATE_WINDOW

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
