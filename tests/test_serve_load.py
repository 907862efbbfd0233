"""``textdiff serve`` under load with real clients: seeded requests of mixed settings sent at once get
the texts and token counts they get one at a time (continuous batching: rows of every setting share
forwards), with the ``openai`` client and with raw httpx (streams reassembled)."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="needs textdiff[serve]")
openai = pytest.importorskip("openai", reason="needs the openai client (textdiff[dev])")
httpx = pytest.importorskip("httpx")

from textdiff.lm import DiffusionLM  # noqa: E402
from textdiff.serve.admission import ServeOptions  # noqa: E402
from textdiff.serve.server import ServerThread  # noqa: E402


def fresh_lm(tiny_trained):
    """A model object of its own (a server's worker thread must not share one)."""
    return DiffusionLM.from_pretrained(tiny_trained.final, device="cpu")


def scrape(url) -> dict:
    """/metrics as {name + labels (JSON): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics").text
    return {s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# ---- the same answer under load ----------------------------------------------------------------------


def mixed_requests():
    """20 seeded requests: 2 samplers x 2 block sizes x prompts of different lengths, n = 1 or 2, some streamed."""
    prompts = ["The list", "a", "Some longer prompt here", [5, 6, 7], "x"]
    out = []
    for i in range(20):
        textdiff = {"sampler": ["ancestral", "confidence"][i % 2]}
        if i % 4 >= 2:
            textdiff["block_size"] = 4
        out.append({"model": "tiny", "prompt": prompts[i % 5], "max_tokens": 8, "seed": 1000 + i,
                    "n": 2 if i % 7 == 0 else 1, "stream": i % 3 == 0, "textdiff": textdiff})
    return out


def ask(url, body):
    """The texts of one request's choices (streamed requests are reassembled from their chunks)."""
    if not body["stream"]:
        r = httpx.post(url + "/v1/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return [c["text"] for c in r.json()["choices"]]
    texts = [""] * body["n"]
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for c in json.loads(line[6:])["choices"]:
                    texts[c["index"]] += c["text"]
    return texts


@pytest.mark.slow
def test_the_same_answer_under_load_as_alone(tiny_trained):
    """20 mixed requests, under --exact-batching (the openai-client test below runs the default)."""
    requests = mixed_requests()
    options = ServeOptions(model_name="tiny", max_batch=8, shutdown_timeout=2, exact_batching=True)
    with ServerThread(fresh_lm(tiny_trained), options) as s:
        assert s.app.state.engine.calls.exact_width is not None
        alone = [ask(s.url, body) for body in requests]  # one at a time: every batch holds one request
        with ThreadPoolExecutor(len(requests)) as pool:
            loaded = list(pool.map(lambda body: ask(s.url, body), requests))
        metrics = scrape(s.url)
    assert loaded == alone
    assert metrics["textdiff_batch_rows_sum{}"] > metrics["textdiff_batch_rows_count{}"]  # some rows shared a batch


MIX = [  # (sampler fields, other textdiff fields, max_tokens, temperature)
    ({"sampler": "ancestral"}, {}, 8, None),
    ({"sampler": "confidence"}, {"steps": 4}, 8, 0.0),
    ({"sampler": "first_hitting"}, {}, 6, 0.8),
    ({"sampler": "remdm"}, {"steps": 10}, 10, None),
    ({"sampler": "threshold"}, {"block_size": 4}, 12, None),
    ({"sampler": "ancestral"}, {"block_size": 2, "steps": 6}, 6, 0.7),
]


@pytest.mark.slow
def test_openai_clients_get_the_same_tokens_under_continuous_batching_as_alone(tiny_trained):
    """18 concurrent requests from the openai client: 5 samplers, steps, block sizes, lengths,
    temperatures, n = 2 and streams mixed in one running batch; each gets the text and token count it
    gets alone, and rows of different settings shared forwards."""
    prompts = ["The list", "a", "Files are closed", [5, 6, 7, 8, 9, 10, 11]]
    jobs = []
    for i in range(18):
        sampler, extra, max_tokens, temperature = MIX[i % len(MIX)]
        jobs.append(dict(prompt=prompts[i % len(prompts)], max_tokens=max_tokens, seed=500 + i, n=2 if i % 5 == 0 else 1,
                         stream=i % 3 == 1, temperature=temperature, textdiff={**sampler, **extra}))

    def ask_openai(client, job):
        kw = dict(model="tiny", prompt=job["prompt"], max_tokens=job["max_tokens"], seed=job["seed"], n=job["n"],
                  extra_body={"textdiff": job["textdiff"]}, **({} if job["temperature"] is None else {"temperature": job["temperature"]}))
        if not job["stream"]:
            r = client.completions.create(**kw)
            return [c.text for c in r.choices], r.usage.completion_tokens
        texts, tokens = [""] * job["n"], None
        for chunk in client.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
            for c in chunk.choices:
                texts[c.index] += c.text
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return texts, tokens

    with ServerThread(fresh_lm(tiny_trained), ServeOptions(model_name="tiny", max_batch=16, shutdown_timeout=2)) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        alone = [ask_openai(client, job) for job in jobs]
        before = scrape(s.url)
        with ThreadPoolExecutor(len(jobs)) as pool:
            loaded = list(pool.map(lambda job: ask_openai(client, job), jobs))
        after = scrape(s.url)
        stats = s.app.state.engine.stats()
        assert stats.running == 0 and stats.waiting == 0
    assert loaded == alone
    rows = after["textdiff_batch_rows_count{}"] - before["textdiff_batch_rows_count{}"]
    mean_shared = (after["textdiff_batch_rows_sum{}"] - before["textdiff_batch_rows_sum{}"]) / rows
    assert rows == sum(job["n"] for job in jobs) and mean_shared >= 3  # rows of all settings shared forwards
