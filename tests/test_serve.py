"""``textdiff serve`` with real clients: a server on a free loopback port in a thread (always shut
down), the ``openai`` package for completions, chat, streaming and errors, httpx for raw bad
requests, the queue bound, timeouts, disconnects and graceful shutdown (on both engines). The same
answers under load as alone: tests/test_serve_load.py. The model is the session's tiny trained model (a chat template is added to a copy)."""
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi", reason="needs textdiff[serve]")
openai = pytest.importorskip("openai", reason="needs the openai client (textdiff[dev])")
httpx = pytest.importorskip("httpx")

from textdiff.lm import DiffusionLM  # noqa: E402
from textdiff.serve.admission import ServeOptions  # noqa: E402
from textdiff.serve.calls import ModelCalls  # noqa: E402
from textdiff.serve.continuous import ContinuousScheduler  # noqa: E402
from textdiff.serve.engine import BatchScheduler, ShuttingDown  # noqa: E402
from textdiff.serve.runner import BatchRunner  # noqa: E402
from textdiff.serve.server import ServerThread  # noqa: E402
from textdiff.serve.text import AnswerText  # noqa: E402

TEMPLATE = "{% for m in messages %}{{ m.role[0] }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}a: {% endif %}"


def fresh_lm(tiny_trained, chat=True):
    """A model object of its own (a server's worker thread must not share one)."""
    lm = DiffusionLM.from_pretrained(tiny_trained.final, device="cpu")
    if chat:
        lm.tokenizer.chat_template = TEMPLATE
    return lm


@pytest.fixture(scope="module")
def server(tiny_trained):
    with ServerThread(fresh_lm(tiny_trained), ServeOptions(model_name="tiny", max_batch=8, shutdown_timeout=2)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def complete(client, prompt, seed, max_tokens=10, **textdiff):
    return client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, seed=seed,
                                     extra_body={"textdiff": textdiff} if textdiff else None)


def expected_text(lm, ids, seed, N, **kw):
    """What DiffusionLM.generate gives for one prompt, as the server writes it."""
    _, out = lm.generate([ids], max_new_tokens=N, seed=[seed], return_output=True, **kw)
    return AnswerText(lm.tokenizer, (), [lm.tokenizer.eos_token_id]).decode(out.generated[0])[0], out


# ---- answers ---------------------------------------------------------------------------------------


def test_a_completion_is_generate_s_answer(client, tiny_trained):
    lm = tiny_trained.lm  # another object than the server's: the expected answer comes from outside it
    r = complete(client, "The list", seed=7, max_tokens=10, steps=10)
    ids = lm.tokenizer("The list", add_special_tokens=False)["input_ids"]
    text, out = expected_text(lm, ids, 7, 10, steps=10)
    assert r.object == "text_completion" and r.model == "tiny" and len(r.choices) == 1
    assert r.choices[0].text == text
    assert r.choices[0].finish_reason == ("stop" if len(out.generated[0]) < 10 else "length")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), len(out.generated[0]))
    assert r.usage.total_tokens == len(ids) + len(out.generated[0])
    assert (r.usage.model_extra["steps"], r.usage.model_extra["model_calls"]) == (out.steps, out.model_calls)


def test_prompt_lists_and_n_give_each_row_its_own_seed(client):
    prompts = ["The list", [5, 6, 7]]
    r = client.completions.create(model="tiny", prompt=prompts, n=2, max_tokens=8, seed=100)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for i, p in enumerate(prompts):
        for c in range(2):  # choice c of prompt i: seed + i * n + c, as if asked alone
            alone = complete(client, p, seed=100 + 2 * i + c, max_tokens=8)
            assert r.choices[2 * i + c].text == alone.choices[0].text, (i, c)
    assert len({c.text for c in r.choices}) > 1


def test_chat_answers_through_the_model_s_chat_template(client, server):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, seed=5)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    ids = server.app.state.admission.lm.encode_prompts([messages])[0]
    assert ids == server.app.state.admission.lm.tokenizer("s: be brief\nu: hi\na: ", add_special_tokens=False)["input_ids"]
    assert r.choices[0].message.content == complete(client, ids, seed=5, max_tokens=8).choices[0].text
    assert r.usage.prompt_tokens == len(ids)


def test_streamed_chunks_add_up_to_the_answer(client, server):
    whole = complete(client, "The list", seed=3, max_tokens=16, block_size=4).choices[0].text
    chunks = list(client.completions.create(model="tiny", prompt="The list", max_tokens=16, seed=3, stream=True,
                                            extra_body={"textdiff": {"block_size": 4}}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole and sum(1 for t in texts if t) >= 2  # text before the end
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0  # usage in the last chunk
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")

    messages = [{"role": "user", "content": "hi"}]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, seed=4).choices[0].message.content
    parts = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, seed=4, stream=True))
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == chat

    raw = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 4, "stream": True})
    events = [line for line in raw.text.split("\n\n") if line]
    assert raw.headers["content-type"].startswith("text/event-stream") and events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert json.loads(events[-2][6:])["usage"]["prompt_tokens"] == 1


def test_models_and_health(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"] and models.data[0].model_extra["context_length"] == 32
    health = httpx.get(server.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


# ---- bad requests ------------------------------------------------------------------------------------

GOOD = {"model": "tiny", "prompt": "a", "max_tokens": 4}
BAD = [  # (body, status, param, code)
    (b"{not json", 400, None, "invalid_json"),
    (b"[1, 2]", 400, None, "invalid_json"),
    (b'{"model": "tiny", "prompt": "a", "max_tokens": NaN}', 400, None, "invalid_json"),
    ({**GOOD, "foo": 1}, 400, "foo", "unknown_field"),
    ({**GOOD, "textdiff": {"stepz": 3}}, 400, "textdiff.stepz", "unknown_field"),
    ({**GOOD, "temperature": 2.5}, 400, "temperature", "invalid_value"),
    ({**GOOD, "max_tokens": "8"}, 400, "max_tokens", "invalid_value"),
    ({**GOOD, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    ({**GOOD, "n": 17}, 400, "n", "invalid_value"),
    ({**GOOD, "seed": -1}, 400, "seed", "invalid_value"),
    ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "invalid_value"),
    ({**GOOD, "prompt": "x" * 40}, 400, "max_tokens", "context_length_exceeded"),
    ({**GOOD, "prompt": [[5, 99999]]}, 400, "prompt", "invalid_value"),
    ({**GOOD, "prompt": [1.5]}, 400, "prompt", "invalid_value"),
    ({"model": "tiny", "max_tokens": 4}, 400, "prompt", "missing_required_parameter"),
    ({**GOOD, "textdiff": {"sampler": "nope"}}, 400, "textdiff.sampler", "invalid_value"),
    ({**GOOD, "textdiff": {"sampler_options": {"bogus": 1}}}, 400, "textdiff.sampler", "invalid_value"),
    ({**GOOD, "textdiff": {"steps": 0}}, 400, "textdiff.steps", "invalid_value"),
    ({**GOOD, "textdiff": {"cache": "exact", "block_size": 2}}, 400, None, "invalid_decoding_settings"),
    ({**GOOD, "model": "other"}, 404, "model", "model_not_found"),
]


@pytest.mark.parametrize("body,status,param,code", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_one_line_openai_errors(server, body, status, param, code):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and (error["param"], error["code"]) == (param, code)
    assert error["message"] and "\n" not in error["message"]


def test_bad_chats_paths_and_sizes(server, client):
    def post(path, body):
        return httpx.post(server.url + path, json=body)

    chat = {"model": "tiny", "max_tokens": 4}
    r = post("/v1/chat/completions", {**chat, "messages": [{"role": "robot", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].role"
    assert post("/v1/chat/completions", {**chat, "messages": []}).status_code == 400
    assert post("/v1/chat/completions", {**chat, "messages": [{"role": "user", "content": "hi"}],
                                         "max_tokens": 4, "max_completion_tokens": 5}).status_code == 400
    huge = httpx.post(server.url + "/v1/completions", content=b'{"prompt": "' + b"a" * (5 << 20) + b'"}')
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    wrong_method = httpx.get(server.url + "/v1/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.completions.create(model="tiny", prompt="x" * 40, max_tokens=4)
    assert complete(client, "a", seed=0, max_tokens=4).choices[0].text is not None  # still serving


def test_an_api_key_guards_the_api(tiny_trained):
    options = ServeOptions(model_name="tiny", api_key="sesame", shutdown_timeout=2)
    with ServerThread(fresh_lm(tiny_trained), options) as s:
        wrong = openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.completions.create(model="tiny", prompt="a", max_tokens=4)
        assert httpx.get(s.url + "/v1/models").status_code == 401
        assert httpx.post(s.url + "/v1/completions", json=GOOD).json()["error"]["code"] == "invalid_api_key"
        right = openai.OpenAI(base_url=s.url + "/v1", api_key="sesame", max_retries=0)
        assert right.completions.create(model="tiny", prompt="a", max_tokens=4, seed=0).choices[0].finish_reason
        assert httpx.get(s.url + "/health").status_code == 200  # load balancers probe without the key


# ---- under pressure -----------------------------------------------------------------------------------


class Gate:
    """A runner that holds the worker until ``open`` is set (it still honours ``stop``)."""

    def __init__(self, inner):
        self.inner, self.open, self.entered = inner, threading.Event(), threading.Event()

    def run(self, rows, emit, stop, denoise=None):
        self.entered.set()
        while not self.open.wait(0.02):
            if stop():
                return
        self.inner.run(rows, emit, stop, denoise=denoise)


@pytest.fixture(params=["continuous", "batch"])
def engine_kind(request):
    """The pressure tests run against both engines: the continuous one (the default) and phase 1's."""
    return request.param


@contextmanager
def gated_server(tiny_trained, kind="continuous", **options):
    lm = fresh_lm(tiny_trained)
    options = ServeOptions(model_name="tiny", **{"max_batch": 1, "shutdown_timeout": 2, **options})
    gate = Gate(BatchRunner(lm))
    if kind == "continuous":
        engine = ContinuousScheduler(gate, ModelCalls(lm), options.max_batch, options.max_tokens_in_flight,
                                     options.max_queue)
    else:
        engine = BatchScheduler(gate, options.max_batch, options.max_tokens_in_flight, options.max_queue)
    s = ServerThread(lm, options, engine=engine)
    s.gate, s.engine = gate, engine
    with s:
        try:
            yield s
        finally:
            gate.open.set()


def until(condition, timeout=20.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)


def test_a_full_queue_gives_429_with_retry_after_and_then_serves_everyone(tiny_trained, engine_kind):
    with gated_server(tiny_trained, engine_kind, max_queue=2) as s, ThreadPoolExecutor(3) as pool:
        post = lambda seed: httpx.post(s.url + "/v1/completions", json={**GOOD, "seed": seed}, timeout=60)  # noqa: E731
        first = pool.submit(post, 0)
        until(s.gate.entered.is_set)
        queued = [pool.submit(post, 1), pool.submit(post, 2)]
        until(lambda: s.engine.stats().waiting == 2)
        full = post(3)
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        never = httpx.post(s.url + "/v1/completions", json={**GOOD, "n": 3})  # could never fit: not a 429
        assert never.status_code == 400 and never.json()["error"]["param"] == "n"
        assert full.json()["error"]["type"] == "rate_limit_error"
        s.gate.open.set()
        assert [f.result().status_code for f in [first, *queued]] == [200, 200, 200]
        stats = s.engine.stats()
        assert (stats.waiting, stats.running) == (0, 0)


def test_timeouts_and_disconnects_free_their_rows(tiny_trained, engine_kind):
    with gated_server(tiny_trained, engine_kind, request_timeout=3.0) as s, ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        held = pool.submit(httpx.post, s.url + "/v1/completions", json={**GOOD, "seed": 1}, timeout=60)
        until(s.gate.entered.is_set)

        def gone():  # a streaming client that hangs up while its row waits
            with pytest.raises(httpx.ReadTimeout):
                with httpx.stream("POST", s.url + "/v1/completions", json={**GOOD, "stream": True}, timeout=0.5) as r:
                    r.read()

        pool.submit(gone).result()
        until(lambda: s.engine.stats().waiting == 0, timeout=5)  # freed while the first row still runs
        assert s.engine.stats().running == 1
        r = held.result()
        assert r.status_code == 408 and r.json()["error"]["code"] == "request_timeout"
        assert 2.5 < time.monotonic() - started < 20
        until(lambda: s.engine.stats().running == 0, timeout=5)  # the gate saw every row of its batch cancelled


def test_graceful_shutdown_finishes_running_rows_and_cancels_them_past_the_deadline(tiny_trained, engine_kind):
    with gated_server(tiny_trained, engine_kind, shutdown_timeout=30) as s, ThreadPoolExecutor(2) as pool:
        held = pool.submit(httpx.post, s.url + "/v1/completions", json={**GOOD, "seed": 1}, timeout=60)
        until(s.gate.entered.is_set)
        stopping = pool.submit(s.stop)
        until(lambda: not s.engine.stats().accepting)
        with pytest.raises(ShuttingDown):
            s.engine.submit([])
        s.gate.open.set()  # the running row finishes within the deadline
        assert held.result().status_code == 200
        stopping.result(timeout=30)
    with gated_server(tiny_trained, engine_kind, shutdown_timeout=1) as s, ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.post, s.url + "/v1/completions", json={**GOOD, "seed": 1}, timeout=60)
        until(s.gate.entered.is_set)
        started = time.monotonic()
        s.stop()  # the gate never opens: at the deadline the row is cancelled
        r = held.result()
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
        assert time.monotonic() - started < 10 and not s._thread.is_alive()


def test_a_draining_server_refuses_new_requests_with_503(tiny_trained, engine_kind):
    with gated_server(tiny_trained, engine_kind) as s:
        s.engine.begin_shutdown(30)
        r = httpx.post(s.url + "/v1/completions", json=GOOD)
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
        health = httpx.get(s.url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "shutting_down"


def scrape(url) -> dict:
    """/metrics as {name + labels (JSON): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics").text
    return {s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_what_happened(server, client):
    before = scrape(server.url)
    complete(client, "The list", seed=1, max_tokens=6)
    httpx.post(server.url + "/v1/completions", json={**GOOD, "foo": 1})
    after = scrape(server.url)

    def grew(name, **labels):
        key = name + json.dumps(labels, sort_keys=True)
        return after.get(key, 0) - before.get(key, 0)

    assert grew("textdiff_requests_total", endpoint="/v1/completions", status="200") == 1
    assert grew("textdiff_requests_total", endpoint="/v1/completions", status="400") == 1
    assert grew("textdiff_request_latency_seconds_count") == 1 and grew("textdiff_time_to_first_token_seconds_count") == 1
    assert 0 < grew("textdiff_generated_tokens_total") <= 6
    assert after["textdiff_queue_rows{}"] == 0 and after["textdiff_running_rows{}"] == 0
    assert after["textdiff_tokens_per_second{}"] > 0


# ---- the command line ----------------------------------------------------------------------------------


def test_cli_flags_are_checked_before_the_model_loads(tmp_path, capsys):
    from textdiff.cli import main

    assert main(["serve", str(tmp_path / "missing"), "--max-batch", "0"]) == 2
    assert "--max-batch 0 must be at least 1" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing"), "--request-timeout", "-1"]) == 2


@pytest.mark.slow
def test_textdiff_serve_answers_and_stops_gracefully_on_sigterm(tiny_trained):
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:  # a free port (released just before the server takes it)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "textdiff.cli", "serve", str(tiny_trained.final), "--port", str(port),
                             "--model-name", "tiny", "--quiet", "--shutdown-timeout", "5"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 180  # importing torch + transformers on a busy 2-core machine: up to a minute or more
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < end, "the server did not come up"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert client.completions.create(model="tiny", prompt="a", max_tokens=4, seed=0).usage.completion_tokens >= 0
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert "serving 'tiny' on http://127.0.0.1" in err
        assert re.search(r"stopped after [1-9][0-9]* model steps; 0 rows left", err), err  # the graceful path ran to its end
        assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn raises the signal again once it has stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
