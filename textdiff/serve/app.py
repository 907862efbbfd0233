"""The HTTP layer: OpenAI's ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models``, plus
``/health`` and ``/metrics``, on FastAPI.

A request goes: API key -> body (at most ``max_body_bytes``, strict JSON, :mod:`.protocol`) ->
rows (:mod:`.admission`) -> ``engine.submit`` -> events -> one JSON answer, or server-sent events
(``stream: true``; OpenAI's chunk format, usage in the last chunk, then ``data: [DONE]``). The
answer waits for the rows' first event, so an error found while decoding still gets its own
status code; a stream that fails later ends with an ``{"error": ...}`` event.

Every failure is an OpenAI error body: 400 bad request, 401 wrong key, 404 unknown model or path,
408 past ``request_timeout``, 413 body too large, 429 queue full (``Retry-After``), 503 shutting
down; a client that goes away cancels its rows.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Optional

from starlette.requests import Request

from .admission import Admission, Plan, ServeOptions
from .calls import ModelCalls
from .continuous import ContinuousScheduler
from .engine import Delta, Failed, Finished, QueueFull, ShuttingDown
from .metrics import Metrics
from .protocol import ApiError, ChatRequest, CompletionRequest, parse_body
from .runner import BatchRunner

logger = logging.getLogger("textdiff.serve")
EXACT_WIDTH = 32  # --exact-batching: forwards fed at widths rounded up to a multiple of this


class _Gone(Exception):
    """The client disconnected."""


class Answer:
    """The events of one request's rows, in arrival order, with its timeout and disconnect watch."""

    def __init__(self, engine, plan: Plan, request, deadline: float):
        self.engine, self.rows, self.request, self.deadline = engine, plan.rows, request, deadline
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.open = set(range(len(self.rows)))  # rows without a terminal event
        loop = asyncio.get_running_loop()
        for i, row in enumerate(self.rows):
            row.sink = lambda event, i=i: _post(loop, self.inbox, (i, event))
        self._gone: Optional[asyncio.Task] = None

    async def next(self):
        """(row index, event); raises ApiError (a failed row, the timeout) or _Gone."""
        if self._gone is None:
            self._gone = asyncio.ensure_future(_wait_disconnect(self.request))
        get = asyncio.ensure_future(self.inbox.get())
        done, _ = await asyncio.wait({get, self._gone}, timeout=max(0.0, self.deadline - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)
        if get not in done:
            get.cancel()
            if self._gone in done:
                raise _Gone()
            raise ApiError(408, "the request timed out before its answer was complete; raise the server's "
                                "--request-timeout or ask for fewer tokens", type="timeout_error", code="request_timeout")
        i, event = get.result()
        if isinstance(event, Failed):
            raise ApiError(event.status, event.message, type=event.type, code=event.code)
        if isinstance(event, Finished):
            self.open.discard(i)
        return i, event

    def close(self) -> None:
        """Cancel every row still open (error, timeout, disconnect) and stop watching."""
        for i in sorted(self.open):
            self.engine.cancel(self.rows[i])
        self.open.clear()
        if self._gone is not None:
            self._gone.cancel()


def _post(loop, inbox: asyncio.Queue, item) -> None:
    """Hand an engine event (worker thread) to the request's event loop."""
    try:
        loop.call_soon_threadsafe(inbox.put_nowait, item)
    except RuntimeError:  # the loop is closed: the server is gone
        pass


async def _wait_disconnect(request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Api:
    """The routes' work for one server: the API key, the body, rows in, events out, errors."""

    def __init__(self, lm, options: ServeOptions, engine):
        self.options, self.engine = options, engine
        self.admission, self.metrics = Admission(lm, options), Metrics(engine)

    def error(self, err: ApiError, endpoint: str):
        from fastapi.responses import JSONResponse

        self.metrics.answered(endpoint, err.status)
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    def authorize(self, request) -> None:
        key = self.options.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ApiError(401, "Incorrect API key provided" if token else "Missing API key: send 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    async def body(self, request) -> bytes:
        chunks, size, limit = [], 0, self.options.max_body_bytes
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes", code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def submit(self, plan: Plan) -> None:
        try:
            self.engine.submit(plan.rows)
        except QueueFull as e:
            raise ApiError(429, f"the server is at capacity ({self.options.max_queue} waiting rows); retry after "
                                f"{e.retry_after} s", type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(e.retry_after)}) from None
        except ShuttingDown:
            raise ApiError(503, "the server is shutting down; retry on another replica", type="server_error",
                           code="shutting_down") from None

    async def respond(self, request, schema, chat: bool):
        """One completions / chat request, from its bytes to its JSON answer or its event stream."""
        from fastapi.responses import JSONResponse, Response, StreamingResponse
        from starlette.background import BackgroundTask

        arrived, endpoint, metrics = time.monotonic(), request.url.path, self.metrics
        self.authorize(request)
        req = parse_body(await self.body(request), schema)
        plan = self.admission.chat(req) if chat else self.admission.completion(req)
        answer = Answer(self.engine, plan, request, arrived + self.options.request_timeout)  # sinks before submit
        self.submit(plan)
        shape, streaming = _Shape(chat, req.model), False
        try:
            first = await answer.next()  # errors found while decoding still get their status
            if req.stream:
                streaming = True  # the stream owns the answer from here on
                return StreamingResponse(_events(answer, first, shape, plan, metrics, endpoint, arrived),
                                         media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                                         background=BackgroundTask(answer.close))  # also if the stream never starts
            results = await _collect(answer, first)
        except _Gone:
            metrics.answered(endpoint, 499)
            return Response(status_code=499)
        finally:
            if not streaming:
                answer.close()
        metrics.ttft.observe(time.monotonic() - arrived)
        return JSONResponse(_whole(shape, plan, results, metrics, endpoint, arrived))


def create_app(lm, options: ServeOptions, engine=None):
    """The ASGI app serving ``lm``; ``engine`` defaults to the continuous-batching
    :class:`~textdiff.serve.continuous.ContinuousScheduler`."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    if engine is None:
        calls = ModelCalls(lm, exact_width=EXACT_WIDTH if options.exact_batching else None)
        engine = ContinuousScheduler(BatchRunner(lm), calls, options.max_batch, options.max_tokens_in_flight,
                                     options.max_queue)
    api = Api(lm, options, engine)

    @asynccontextmanager
    async def lifespan(app):
        yield
        engine.close(options.shutdown_timeout + 5)

    app = FastAPI(title="textdiff", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.admission, app.state.metrics = engine, api.admission, api.metrics

    @app.exception_handler(ApiError)
    async def on_api_error(request, err: ApiError):
        return api.error(err, request.url.path)

    @app.exception_handler(HTTPException)
    async def on_http_error(request, err: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return api.error(ApiError(err.status_code, f"{request.method} {request.url.path}: {err.detail}", code=code), "other")

    @app.exception_handler(RequestValidationError)
    async def on_validation(request, err):
        return api.error(ApiError(400, f"invalid request: {err.errors()[0].get('msg')}"), request.url.path)

    @app.exception_handler(Exception)
    async def on_bug(request, err: Exception):
        logger.exception("unexpected error on %s", request.url.path)
        return api.error(ApiError(500, f"internal error: {type(err).__name__}", type="server_error"), request.url.path)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await api.respond(request, CompletionRequest, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await api.respond(request, ChatRequest, chat=True)

    @app.get("/v1/models")
    async def models(request: Request):
        api.authorize(request)
        return {"object": "list", "data": [{"id": options.model_name, "object": "model", "created": int(time.time()),
                                            "owned_by": "textdiff", "context_length": api.admission.context}]}

    @app.get("/health")
    async def health():
        stats = engine.stats()
        body = {"status": "ok" if stats.accepting else "shutting_down", "waiting": stats.waiting, "running": stats.running}
        return JSONResponse(body, status_code=200 if stats.accepting else 503)

    @app.get("/metrics")
    async def prometheus():
        data, content_type = api.metrics.render()
        return Response(data, media_type=content_type)

    return app


class _Shape:
    """OpenAI's object names and ids for one answer."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def envelope(self, choices: list, usage: Optional[dict] = None, chunk: bool = False) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        out = {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out

    def choice(self, index: int, text: str, finish_reason: Optional[str], chunk: bool) -> dict:
        if not self.chat:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        key = "delta" if chunk else "message"
        body = ({"content": text} if text or finish_reason is None else {}) if chunk else {"role": "assistant", "content": text}
        return {"index": index, key: body, "logprobs": None, "finish_reason": finish_reason}


async def _collect(answer: Answer, first) -> dict:
    results, pending = {}, first
    while True:
        i, event = pending
        if isinstance(event, Finished):
            results[i] = event
        if not answer.open:
            return results
        pending = await answer.next()


def _usage(plan: Plan, results: dict) -> dict:
    finished = list(results.values())
    completion = sum(e.completion_tokens for e in finished)
    batches = {(e.batch, e.model_calls) for e in finished}
    return {"prompt_tokens": plan.prompt_tokens, "completion_tokens": completion,
            "total_tokens": plan.prompt_tokens + completion, "steps": max((e.steps for e in finished), default=0),
            "model_calls": sum(calls for _, calls in batches)}


def _account(metrics: Metrics, endpoint: str, plan: Plan, results: dict, arrived: float) -> dict:
    usage = _usage(plan, results)
    metrics.answered(endpoint, 200)
    metrics.tokens(usage["prompt_tokens"], usage["completion_tokens"])
    metrics.latency.observe(time.monotonic() - arrived)
    for e in results.values():
        metrics.batch_rows.observe(e.batch_rows)
    return usage


def _whole(shape: _Shape, plan: Plan, results: dict, metrics: Metrics, endpoint: str, arrived: float) -> dict:
    usage = _account(metrics, endpoint, plan, results, arrived)
    choices = [shape.choice(i, results[i].text, results[i].finish_reason, chunk=False) for i in sorted(results)]
    return shape.envelope(choices, usage)


def _sse(payload: dict) -> bytes:
    import json

    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


async def _events(answer: Answer, first, shape: _Shape, plan: Plan, metrics: Metrics, endpoint: str, arrived: float):
    """Server-sent events of one streamed answer."""
    results, pending, first_text = {}, first, True
    try:
        if shape.chat:
            for i in range(len(plan.rows)):
                yield _sse(shape.envelope([{"index": i, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}], chunk=True))
        while pending is not None:
            i, event = pending
            text = event.text if isinstance(event, Delta) else event.delta
            if text and first_text:
                metrics.ttft.observe(time.monotonic() - arrived)
                first_text = False
            if isinstance(event, Delta):
                yield _sse(shape.envelope([shape.choice(i, text, None, chunk=True)], chunk=True))
            else:
                results[i] = event
                yield _sse(shape.envelope([shape.choice(i, text, event.finish_reason, chunk=True)], chunk=True))
            pending = await answer.next() if answer.open else None
        if first_text:
            metrics.ttft.observe(time.monotonic() - arrived)
        yield _sse(shape.envelope([], usage=_account(metrics, endpoint, plan, results, arrived), chunk=True))
        yield b"data: [DONE]\n\n"
    except ApiError as err:  # a row failed or timed out after the stream began
        metrics.answered(endpoint, err.status)
        yield _sse(err.body())
    except _Gone:
        metrics.answered(endpoint, 499)
    finally:
        answer.close()
