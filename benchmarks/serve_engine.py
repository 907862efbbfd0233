"""The continuous engine under load IN PROCESS (no HTTP): N closed-loop clients hand seeded rows to
:class:`textdiff.serve.continuous.ContinuousScheduler` against one client at a time, the same
requests on the same engine, in one process; answers compared token for token.

Used by ``benchmarks/gpu.py``'s serving section (:func:`gpu_benchmark`, random weights: nothing to
download) and by ``benchmarks/serve.py --in-process SHAPE`` on a CPU. It measures the engine (the
scheduler, the merged forwards, the rows' sampler steps), not the HTTP layer: ``benchmarks/serve.py``
without ``--in-process`` measures the whole server with real clients.

Imports only torch and textdiff (no httpx / FastAPI): the GPU machine's image may lack them.
"""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

#: model shapes (random weights): the quickstart recipe's, the issue's 6 x 384 with V = 50k, and a dry-run toy
SHAPES = {
    "dry": dict(hidden=32, layers=1, heads=2, vocab=64, context=64),
    "quickstart": dict(hidden=128, layers=2, heads=2, vocab=512, context=128),
    "6x384": dict(hidden=384, layers=6, heads=6, vocab=50_257, context=1024),
}


class ByteTokenizer:
    """Token i <-> one printable character; pad / eos / mask are the last three ids."""

    def __init__(self, vocab: int):
        self.vocab_size = vocab
        self.pad_token_id, self.eos_token_id, self.mask_token_id = vocab - 3, vocab - 2, vocab - 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [(ord(c) - 33) % (self.vocab_size - 3) for c in text]}

    def decode(self, ids, skip_special_tokens=True, **_):
        return "".join(chr(33 + (i % 90)) for i in ids if i < self.vocab_size - 3)


def random_lm(shape: str, device: str = "cpu", seed: int = 0):
    """A DiffusionLM (masked diffusion, random weights) of one of :data:`SHAPES`."""
    from textdiff.lm import DiffusionLM
    from textdiff.models.configuration_textdiff import TextDiffConfig
    from textdiff.models.modeling_textdiff import TextDiffModel
    from textdiff.processes.base import build_process

    s = SHAPES[shape]
    tok = ByteTokenizer(s["vocab"])
    torch.manual_seed(seed)
    model = TextDiffModel(TextDiffConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_layers=s["layers"],
                                         num_heads=s["heads"], max_position_embeddings=s["context"])).to(device).eval()
    process = build_process("masked", vocab_size=s["vocab"], mask_id=tok.mask_token_id)
    return DiffusionLM(model, tok, process)


def jobs(count: int, seed: int, vocab: int, max_tokens: int, steps: int, longest_prompt: int = 24) -> list[dict]:
    """Seeded requests: prompts of 1..longest_prompt random tokens, half streamed."""
    rng = random.Random(seed)
    return [{"prompt": [rng.randrange(vocab - 3) for _ in range(rng.randint(1, longest_prompt))], "seed": seed * 100_000 + i,
             "max_tokens": max_tokens, "steps": steps, "stream": i % 2 == 1} for i in range(count)]


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))] if values else float("nan")


def phase(engine, lm, requests: list[dict], clients: int, cap_s: float) -> dict:
    """Send ``requests`` from ``clients`` closed-loop threads; no new request after ``cap_s`` seconds."""
    from textdiff.dataclass_io import to_dict
    from textdiff.serve.engine import DecodeSettings, Delta, Failed, Finished, QueueFull, Request

    sampler = json.dumps(to_dict(lm.sampler_config), sort_keys=True)
    results: list = [None] * len(requests)
    index, lock, deadline = iter(range(len(requests))), threading.Lock(), time.monotonic() + cap_s

    def one(job) -> dict:
        done, first, out = threading.Event(), [None], {}

        def sink(event):
            if isinstance(event, Delta) and first[0] is None:
                first[0] = time.perf_counter()
            if isinstance(event, (Finished, Failed)):
                out["event"] = event
                done.set()

        s = DecodeSettings(max_new_tokens=job["max_tokens"], steps=job["steps"], sampler=sampler, block_size=None, cache="auto")
        row = Request(prompt_ids=job["prompt"], settings=s, seed=job["seed"], stream=job["stream"], sink=sink)
        started = time.perf_counter()
        while True:
            try:
                engine.submit([row])
                break
            except QueueFull:
                time.sleep(0.01)
        done.wait()
        end, event = time.perf_counter(), out["event"]
        ok = isinstance(event, Finished)
        return {"ok": ok, "latency": end - started, "ttft": (first[0] or end) - started,
                "text": event.text if ok else None, "tokens": event.completion_tokens if ok else 0}

    def worker():
        while time.monotonic() < deadline:
            with lock:
                i = next(index, None)
            if i is None:
                return
            results[i] = one(requests[i])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - started
    done = [r for r in results if r is not None]
    return {"results": results, "wall": wall, "tokens": sum(r["tokens"] for r in done), "done": len(done),
            "errors": sum(not r["ok"] for r in done)}


def compare(lm, requests: list[dict], clients: int, max_batch: int, max_seconds: float) -> dict:
    """One client at a time, then ``clients`` at once, on one engine; figures and mismatches."""
    from textdiff.serve.calls import ModelCalls
    from textdiff.serve.continuous import ContinuousScheduler
    from textdiff.serve.runner import BatchRunner

    engine = ContinuousScheduler(BatchRunner(lm), ModelCalls(lm), max_batch=max_batch, max_queue=4 * max_batch + 64)
    try:
        solo = phase(engine, lm, requests, 1, 0.4 * max_seconds)
        many = phase(engine, lm, requests, clients, 0.6 * max_seconds)
        steps = engine.stats().batches
    finally:
        engine.close(30)
    both = [i for i in range(len(requests)) if solo["results"][i] and many["results"][i]]
    solo_tps, many_tps = solo["tokens"] / solo["wall"], many["tokens"] / many["wall"]
    p50 = _percentile([r["latency"] for r in many["results"] if r], 0.5)
    solo_p50 = _percentile([r["latency"] for r in solo["results"] if r], 0.5)
    return {"requests": many["done"], "errors": many["errors"] + solo["errors"], "tokens_per_s": many_tps,
            "sequential_tokens_per_s": solo_tps, "x_sequential": many_tps / solo_tps,
            "latency_p50_s": p50, "latency_p90_s": _percentile([r["latency"] for r in many["results"] if r], 0.9),
            "solo_latency_p50_s": solo_p50, "latency_p50_vs_solo": p50 / solo_p50,
            "ttft_p50_s": _percentile([r["ttft"] for r in many["results"] if r], 0.5),
            "compared": len(both), "mismatches": sum(solo["results"][i]["text"] != many["results"][i]["text"] for i in both),
            "engine_steps": steps}


def batching_ceiling(lm, rows: int = 8, width: int = 80, repeats: int = 5) -> dict:
    """The most any batching can gain on this machine: one forward of ``rows`` rows against ``rows``
    forwards of one row (``width`` positions, no padding), medians of interleaved repeats. When the
    forward is compute-bound (a small model on a busy CPU) the ratio is near 1 and concurrency cannot
    raise throughput much; on a GPU it is large."""
    from textdiff.serve.calls import Call, ModelCalls

    calls = ModelCalls(lm)
    device = next(lm.model.parameters()).device
    ids = torch.randint(0, lm.process.vocab_size - 3, (rows, width), device=device)
    mask = torch.ones(rows, width, dtype=torch.long, device=device)
    pos = torch.arange(width, device=device)[None].expand(rows, width)
    t = torch.full((rows,), 0.5, device=device)

    def one(b0, b1):
        calls.run([Call((ids[b0:b1], t[b0:b1], mask[b0:b1], pos[b0:b1], None, False), 0)])

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    one(0, rows)  # warm-up
    alone, together = [], []
    for _ in range(repeats):
        alone.append(timed(lambda: [one(b, b + 1) for b in range(rows)]))
        together.append(timed(lambda: one(0, rows)))
    a, b = sorted(alone)[repeats // 2], sorted(together)[repeats // 2]
    return {"rows": rows, "width": width, "one_row_forward_ms": 1000 * a / rows, "batched_forward_ms": 1000 * b,
            "ceiling_x": a / b}


_LMS: dict = {}


def gpu_benchmark(concurrency: int, *, device: str, dry_run: bool, max_seconds: float) -> dict:
    """``benchmarks/gpu.py``'s serving hook: the continuous engine at ``concurrency`` clients against
    one at a time, random weights (6 x 384, V = 50,257; the dry run: a toy on the CPU), 64 answer
    tokens in 64 steps (dry: 8 in 4), ``--max-batch`` = max(8, concurrency)."""
    shape = "dry" if dry_run else "6x384"
    if (shape, device) not in _LMS:
        _LMS[(shape, device)] = random_lm(shape, device)
    lm = _LMS[(shape, device)]
    N, steps = (8, 4) if dry_run else (64, 64)
    count = concurrency + 2 if dry_run else max(2 * concurrency, 16)
    requests = jobs(count, seed=concurrency, vocab=SHAPES[shape]["vocab"], max_tokens=N, steps=steps)
    row = compare(lm, requests, concurrency, max(8, concurrency), max_seconds)
    row["model"] = f"random {shape}"
    ceiling = batching_ceiling(lm, rows=max(2, min(concurrency, 32)), width=16 if dry_run else 80,
                               repeats=2 if dry_run else 5)
    row["batched_forward_ceiling_x"] = ceiling["ceiling_x"]
    return row
