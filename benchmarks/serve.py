"""``textdiff serve`` under load: N concurrent clients against one-at-a-time serving of the same
requests, on the same server, interleaved in rounds; and a bounded soak.

    OMP_NUM_THREADS=1 python benchmarks/serve.py --model runs/quickstart/final --clients 8 --requests 48
    OMP_NUM_THREADS=1 python benchmarks/serve.py --model runs/quickstart/final --soak 10      # 10 minutes
    OMP_NUM_THREADS=1 python benchmarks/serve.py --in-process 6x384 --clients 8 --requests 24  # random weights, no HTTP

``gpu_benchmark(concurrency, *, device, dry_run, max_seconds)`` is ``benchmarks/gpu.py``'s serving
hook (:mod:`serve_engine`: the continuous engine in process, random weights). ``--in-process SHAPE``
runs the same comparison here on the CPU (shapes: ``quickstart``, ``6x384`` = 6 layers x 384, V = 50,257).

(The server inherits OMP_NUM_THREADS. On a busy machine give it 1: with more OpenMP threads than
free cores the quickstart model's forward ran 10-20x slower here.)

The server is started here as ``textdiff serve`` in a subprocess on 127.0.0.1 (loopback only) and
stopped at the end. The request mix is fixed by ``--seed``: prompts cut from a fixed text, every
request seeded, half of them streamed. Each round runs the requests one at a time (the baseline)
and then from ``--clients`` clients at once; both phases must give the same answers (mismatches are
counted). Reported: aggregate answer tokens/s and its ratio, latency and time-to-first-text
percentiles (a non-streamed answer's first text is its whole answer).

``--soak MINUTES``: the clients send requests until the time is up (or ``--requests`` in all), 5%
of them malformed (each must get a 4xx) and 5% streamed and dropped after the first chunk; the
report gives the 5xx count, rows left in the server at the end (``/metrics``) and its RSS over time.

Timings are wall-clock on whatever machine runs this; compare only ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's textdiff (as the server gets it)
from report import machine, save  # noqa: E402
from serve_engine import gpu_benchmark  # noqa: E402,F401  (benchmarks/gpu.py's serving hook)

try:  # the GPU image may lack httpx: only the HTTP modes need it
    import httpx
except ImportError:  # pragma: no cover
    httpx = None

TEXT = ("The list type is a mutable sequence. Dictionaries map keys to values. A function returns a value "
        "to its caller. Strings are immutable sequences of characters. The module defines a class and "
        "several helper functions. Exceptions are raised when an error occurs. The loop runs until the "
        "condition is false. Files are opened with a mode and closed when done.").split()
MALFORMED = [b"{", b"[]", b'{"model": "m", "prompt": "a", "max_tokens": -1}', b'{"model": "m", "prompt": "a", "bogus": 1}',
             b'{"model": "m", "prompt": "a", "temperature": 9}', b'{"model": "m", "prompt": 5}']


def request_mix(count: int, seed: int, max_tokens: int, steps: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        start = rng.randrange(len(TEXT) - 8)
        prompt = " ".join(TEXT[start: start + rng.randint(1, 8)])
        out.append({"model": "m", "prompt": prompt, "max_tokens": max_tokens, "seed": seed * 100_000 + i,
                    "stream": i % 2 == 1, "textdiff": {"steps": steps}})
    return out


# ---- the server ----------------------------------------------------------------------------------


class Server:
    """``textdiff serve`` in a subprocess on a free loopback port."""

    def __init__(self, args):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        cmd = [sys.executable, "-m", "textdiff.cli", "serve", args.model, "--host", "127.0.0.1", "--port", str(self.port),
               "--model-name", "m", "--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue),
               "--device", "cpu", "--quiet", "--shutdown-timeout", "10"] + (["--exact-batching"] if args.exact_batching else [])
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                self.stop()
                raise SystemExit("the server did not come up in 300 s")
            time.sleep(0.3)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metrics(self) -> dict:
        out = {}
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- one request ---------------------------------------------------------------------------------


def send(client: httpx.Client, url: str, body: dict, drop_after_first: bool = False) -> dict:
    """Timings, status, text and answer tokens of one request."""
    started = time.perf_counter()
    first, text, tokens = None, "", 0
    if not body["stream"]:
        r = client.post(url + "/v1/completions", json=body)
        end = time.perf_counter()
        if r.status_code == 200:
            data = r.json()
            text, tokens = data["choices"][0]["text"], data["usage"]["completion_tokens"]
        return {"status": r.status_code, "latency": end - started, "ttft": end - started, "text": text, "tokens": tokens}
    with client.stream("POST", url + "/v1/completions", json=body) as r:
        status = r.status_code
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            for c in chunk.get("choices", []):
                if c["text"] and first is None:
                    first = time.perf_counter()
                text += c["text"]
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if drop_after_first and chunk.get("choices"):
                return {"status": status, "dropped": True}
    end = time.perf_counter()
    return {"status": status, "latency": end - started, "ttft": (first or end) - started, "text": text, "tokens": tokens}


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))] if values else float("nan")


def phase(url: str, requests: list[dict], clients: int, cap_s: float) -> dict:
    """Send ``requests`` from ``clients`` threads (each its own connection); stop taking new ones after ``cap_s``."""
    results: list = [None] * len(requests)
    index, lock, deadline = iter(range(len(requests))), threading.Lock(), time.monotonic() + cap_s

    def worker():
        with httpx.Client(timeout=600) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(index, None)
                if i is None:
                    return
                results[i] = send(client, url, requests[i])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - started
    done = [r for r in results if r is not None]
    return {"results": results, "wall": wall, "tokens": sum(r["tokens"] for r in done), "done": len(done),
            "errors": sum(r["status"] != 200 for r in done)}


# ---- modes ---------------------------------------------------------------------------------------


def load_test(server: Server, args) -> None:
    requests = request_mix(args.requests, args.seed, args.max_tokens, args.steps)
    rows, mismatches, compared, per = [], 0, 0, args.duration / (2 * args.rounds)
    for rnd in range(args.rounds):
        solo = phase(server.url, requests, 1, per)
        many = phase(server.url, requests, args.clients, per)
        both = [i for i in range(len(requests)) if solo["results"][i] and many["results"][i]]
        mismatches += sum(solo["results"][i]["text"] != many["results"][i]["text"] for i in both)
        compared += len(both)
        for name, p in (("sequential", solo), (f"{args.clients} clients", many)):
            done = [r for r in p["results"] if r]
            rows.append({"section": "load", "round": rnd + 1, "serving": name, "requests": p["done"], "errors": p["errors"],
                         "answer tokens": p["tokens"], "tokens/s": round(p["tokens"] / p["wall"], 1),
                         "p50 latency s": round(percentile([r["latency"] for r in done], 0.5), 3),
                         "p90 latency s": round(percentile([r["latency"] for r in done], 0.9), 3),
                         "p50 TTFT s": round(percentile([r["ttft"] for r in done], 0.5), 3),
                         "p90 TTFT s": round(percentile([r["ttft"] for r in done], 0.9), 3)})
        rows[-1]["x sequential tokens/s"] = round(rows[-1]["tokens/s"] / rows[-2]["tokens/s"], 2)
        rows[-1]["p50 latency / solo"] = round(rows[-1]["p50 latency s"] / rows[-2]["p50 latency s"], 2)
    ceiling = forward_ceiling(args.model, args.clients)
    meta = {"machine": machine(), "model": args.model, "clients": args.clients, "requests": args.requests,
            "max_tokens": args.max_tokens, "steps": args.steps, "max_batch": args.max_batch, "rounds": args.rounds,
            "exact_batching": args.exact_batching,
            "mismatches": mismatches, "compared": compared, "threads": os.environ.get("OMP_NUM_THREADS"),
            "load average (1 min) at the end": os.getloadavg()[0], "batching ceiling": ceiling}
    keys = [k for k in rows[-1] if k != "section"]
    lines = [f"# textdiff serve: {args.clients} clients vs one at a time ({meta['machine']})", "",
             f"Model `{args.model}`, {args.requests} seeded requests (max_tokens={args.max_tokens}, steps={args.steps}, "
             f"half streamed), --max-batch {args.max_batch}, {args.rounds} interleaved rounds. Answers that differ from "
             f"the sequential ones: {mismatches} of {compared}. Load average at the end: {os.getloadavg()[0]:.1f} "
             f"(OMP_NUM_THREADS={meta['threads']}). Batching ceiling here (after the run, same process "
             f"settings): one forward of {ceiling['rows']} rows x {ceiling['width']} positions took "
             f"{ceiling['batched_forward_ms']:.1f} ms against {ceiling['one_row_forward_ms']:.1f} ms per row alone: "
             f"at most {ceiling['ceiling_x']:.2f}x from merging forwards.", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    save(args.name, rows, meta, "\n".join(lines))


def forward_ceiling(model: str, rows: int) -> dict:
    """:func:`serve_engine.batching_ceiling` for the served model, loaded in this process."""
    import torch
    from serve_engine import batching_ceiling

    from textdiff.lm import DiffusionLM

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()))
    out = batching_ceiling(DiffusionLM.from_pretrained(model, device="cpu"), rows=rows)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def soak(server: Server, args) -> None:
    rng = random.Random(args.seed)
    requests = request_mix(args.requests, args.seed, args.max_tokens, args.steps)
    counts: dict = {}
    rss = [(0.0, round(server.rss_mib(), 1))]
    lock, sent, started = threading.Lock(), [0], time.monotonic()
    deadline = started + 60 * args.soak

    def worker(k: int):
        local = random.Random(rng.random())
        with httpx.Client(timeout=600) as client:
            while time.monotonic() < deadline:
                with lock:
                    if sent[0] >= args.requests:
                        return
                    i, sent[0] = sent[0], sent[0] + 1
                roll = local.random()
                if roll < 0.05:
                    r = client.post(server.url + "/v1/completions", content=local.choice(MALFORMED))
                    key = f"malformed {r.status_code}"
                elif roll < 0.10:
                    try:
                        out = send(client, server.url, {**requests[i], "stream": True}, drop_after_first=True)
                        key = f"dropped {out['status']}"
                    except httpx.HTTPError:
                        key = "dropped (connection)"
                else:
                    key = f"ok {send(client, server.url, requests[i])['status']}"
                with lock:
                    counts[key] = counts.get(key, 0) + 1

    with ThreadPoolExecutor(args.clients) as pool:
        futures = [pool.submit(worker, k) for k in range(args.clients)]
        while not all(f.done() for f in futures):
            time.sleep(0.2)
            if time.monotonic() - started >= rss[-1][0] + 10:  # a sample every 10 s
                rss.append((round(time.monotonic() - started, 1), round(server.rss_mib(), 1)))
        for f in futures:
            f.result()
    time.sleep(2.0)  # dropped streams are freed when their batch ends
    rss.append((round(time.monotonic() - started, 1), round(server.rss_mib(), 1)))
    m = server.metrics()
    leaked = m.get("textdiff_running_rows", 0) + m.get("textdiff_queue_rows", 0)
    five = sum(v for k, v in counts.items() if k.split()[-1].startswith("5"))
    bad_malformed = sum(v for k, v in counts.items() if k.startswith("malformed") and not k.endswith(("400", "404")))
    rows = [{"section": "soak", "minutes": round((time.monotonic() - started) / 60, 2), "requests": sum(counts.values()),
             "5xx": five, "malformed not 4xx": bad_malformed, "rows left": leaked,
             "RSS MiB start": rss[0][1], "RSS MiB max": max(v for _, v in rss), "RSS MiB end": rss[-1][1]}]
    meta = {"machine": machine(), "model": args.model, "clients": args.clients, "counts": counts, "rss": rss}
    keys = list(rows[0])[1:]
    lines = [f"# textdiff serve: soak ({meta['machine']})", "",
             f"Model `{args.model}`, {args.clients} clients, 5% malformed requests, 5% streams dropped after the first "
             f"chunk. Outcomes: {json.dumps(counts, sort_keys=True)}.", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
             "| " + " | ".join(str(rows[0][k]) for k in keys) + " |", "",
             "RSS (s, MiB): " + ", ".join(f"({t:g}, {v:g})" for t, v in rss)]
    save(args.name + "_soak", rows, meta, "\n".join(lines))


def in_process(args) -> None:
    """The continuous engine in this process (random weights of ``--in-process`` shape), no HTTP."""
    import serve_engine as se

    lm = se.random_lm(args.in_process)
    requests = se.jobs(args.requests, args.seed, se.SHAPES[args.in_process]["vocab"], args.max_tokens, args.steps)
    rows = []
    for rnd in range(args.rounds):
        r = se.compare(lm, requests, args.clients, args.max_batch, args.duration / args.rounds)
        rows.append({"section": "in-process", "round": rnd + 1, **{k: round(v, 3) if isinstance(v, float) else v
                                                                      for k, v in r.items()}})
    ceiling = {k: round(v, 3) if isinstance(v, float) else v for k, v in se.batching_ceiling(lm, rows=args.clients).items()}
    meta = {"batching ceiling": ceiling, "machine": machine(), "shape": args.in_process, "clients": args.clients, "requests": args.requests,
            "max_tokens": args.max_tokens, "steps": args.steps, "max_batch": args.max_batch,
            "threads": os.environ.get("OMP_NUM_THREADS"), "load average (1 min) at the end": os.getloadavg()[0]}
    keys = [k for k in rows[-1] if k != "section"]
    lines = [f"# textdiff serve engine in process: {args.clients} clients vs one at a time ({meta['machine']})", "",
             f"Random-weight masked-diffusion model `{args.in_process}` ({se.SHAPES[args.in_process]}), {args.requests} "
             f"seeded requests (max_tokens={args.max_tokens}, steps={args.steps}, half streamed), --max-batch "
             f"{args.max_batch}; no HTTP. Load average at the end: {os.getloadavg()[0]:.1f} "
             f"(OMP_NUM_THREADS={meta['threads']}). Batching ceiling: one forward of {ceiling['rows']} rows x "
             f"{ceiling['width']} positions {ceiling['batched_forward_ms']:.1f} ms against "
             f"{ceiling['one_row_forward_ms']:.1f} ms per row alone ({ceiling['ceiling_x']:.2f}x).", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    save(args.name + "_engine_" + args.in_process, rows, meta, "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a model folder textdiff serve can load")
    p.add_argument("--in-process", choices=["quickstart", "6x384"], default=None,
                   help="the engine in this process with a random-weight model of this shape (no HTTP, no --model)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=None, help="requests per phase (default 48); soak: in all (default 100000)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2, help="interleaved sequential / concurrent rounds")
    p.add_argument("--exact-batching", action="store_true", help="serve with --exact-batching (bit-for-bit rows)")
    p.add_argument("--duration", type=float, default=900.0, help="cap in seconds on all phases together")
    p.add_argument("--soak", type=float, default=None, metavar="MINUTES", help="run the soak instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="serve", help="results/<name>.md (and <name>_soak.md)")
    args = p.parse_args()
    if args.requests is None:
        args.requests = 100_000 if args.soak is not None else 48
    if args.in_process:
        return in_process(args)
    if args.model is None or httpx is None:
        p.error("give --model (and install httpx), or --in-process SHAPE")
    server = Server(args)
    try:
        soak(server, args) if args.soak is not None else load_test(server, args)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
