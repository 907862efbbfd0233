"""The engine side of ``textdiff serve`` without HTTP: the batch scheduler's grouping, bounds,
cancellation and shutdown; final prefixes for streaming; answer text (stops, multi-byte
characters); the context rule against ``DiffusionLM.generate``."""
import json
import threading
import time

import pytest
import torch

import textdiff
from textdiff.errors import ConfigError
from textdiff.serve.engine import BatchScheduler, DecodeSettings, Delta, Failed, Finished, QueueFull, Request, ShuttingDown
from textdiff.serve.runner import BatchRunner, final_lengths, tells_noise
from textdiff.serve.text import AnswerText

ANCESTRAL = json.dumps({"name": "ancestral"})


def settings(N=8, steps=None, sampler=ANCESTRAL, block_size=None, cache="auto"):
    return DecodeSettings(max_new_tokens=N, steps=steps, sampler=sampler, block_size=block_size, cache=cache)


class Inbox:
    """Collects a row's events (the sink runs on the worker thread)."""

    def __init__(self):
        self.events, self.done = [], threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if isinstance(event, (Finished, Failed)):
            self.done.set()


def row(prompt=(1, 2, 3), s=None, seed=0, stream=False, stop=()):
    inbox = Inbox()
    r = Request(prompt_ids=list(prompt), settings=s or settings(), seed=seed, stream=stream, stop=stop, sink=inbox)
    r.inbox = inbox
    return r


class Recorder:
    """A runner that records its batches and answers every row (optionally waiting for a gate)."""

    def __init__(self, gate=None, fail=False):
        self.batches, self.gate, self.fail = [], gate, fail

    def run(self, rows, emit, stop):
        while self.gate is not None and not self.gate.wait(0.01):
            if stop():
                return
        self.batches.append(list(rows))
        if self.fail:
            raise RuntimeError("boom")
        for r in rows:
            emit(r, Finished(text="x", delta="x", finish_reason="length", completion_tokens=1, steps=1, model_calls=1,
                             batch_rows=len(rows)))


def wait_for(rows, timeout=30):
    for r in rows:
        assert r.inbox.done.wait(timeout), "no terminal event"


def test_scheduler_groups_equal_settings_in_arrival_order_within_both_bounds():
    gate = threading.Event()
    rec = Recorder(gate)
    sched = BatchScheduler(rec, max_batch=3, max_tokens_in_flight=40, max_queue=32)
    try:
        blocker = row(s=settings(N=2))
        sched.submit([blocker])
        while sched.stats().running == 0:
            time.sleep(0.01)
        a, b = settings(N=8), settings(N=8, steps=4)
        rows = [row(s=a), row(s=b), row(s=a), row(s=a), row(s=a), row(s=b), row(prompt=range(12), s=a)]
        sched.submit(rows)
        assert sched.stats().waiting == len(rows)
        gate.set()
        wait_for(rows)
        batches = rec.batches[1:]
        # the oldest row leads; its settings' rows follow in arrival order, at most 3
        assert batches[0] == [rows[0], rows[2], rows[3]]
        assert batches[1] == [rows[1], rows[5]]
        # rows[4] + rows[6] would pad to 2 x (12 + 8) = 40 positions: fits; rows alone never exceed it
        assert batches[2] == [rows[4], rows[6]]
        assert all(len({r.settings for r in batch}) == 1 for batch in rec.batches)
        assert sched.stats().waiting == 0 and sched.stats().running == 0
    finally:
        gate.set()
        sched.close(10)


def test_token_budget_splits_batches():
    gate = threading.Event()
    rec = Recorder(gate)
    sched = BatchScheduler(rec, max_batch=8, max_tokens_in_flight=30, max_queue=32)
    try:
        rows = [row(prompt=range(7)) for _ in range(5)]  # 7 + 8 = 15 positions each: two per batch
        sched.submit(rows)
        gate.set()
        wait_for(rows)
        assert [len(b) for b in rec.batches] == [2, 2, 1]
    finally:
        sched.close(10)


def test_queue_bound_cancel_and_shutdown():
    gate = threading.Event()
    sched = BatchScheduler(Recorder(gate), max_batch=1, max_tokens_in_flight=100, max_queue=3)
    running = row()
    sched.submit([running])
    while sched.stats().running == 0:
        time.sleep(0.01)
    waiting = [row(), row(), row()]
    sched.submit(waiting)
    with pytest.raises(QueueFull) as full:
        sched.submit([row()])
    assert full.value.retry_after >= 1
    with pytest.raises(QueueFull):
        sched.submit([row(), row(), row(), row()])  # all or nothing
    sched.cancel(waiting[1])  # a waiting row is freed at once
    assert waiting[1].inbox.done.is_set() and waiting[1].inbox.events[-1].status == 499
    assert sched.stats().waiting == 2
    sched.begin_shutdown(0.3)
    with pytest.raises(ShuttingDown):
        sched.submit([row()])
    sched.close(10)  # the gate never opens: the deadline cancels the running and the waiting rows
    assert not sched._thread.is_alive()
    for r in [running, waiting[0], waiting[2]]:
        assert [type(e) for e in r.inbox.events] == [Failed] and r.inbox.events[0].status == 503
    assert sched.stats().waiting == 0 and sched.stats().running == 0


def test_a_failing_runner_fails_its_rows_and_the_worker_goes_on():
    rec = Recorder(fail=True)
    sched = BatchScheduler(rec, max_batch=2, max_queue=8)
    try:
        bad = [row(), row()]
        sched.submit(bad)
        wait_for(bad)
        assert all(r.inbox.events[-1].status == 500 and "boom" in r.inbox.events[-1].message for r in bad)
        rec.fail = False
        good = [row()]
        sched.submit(good)
        wait_for(good)
        assert isinstance(good[0].inbox.events[-1], Finished)
    finally:
        sched.close(10)


# ---- final prefixes -----------------------------------------------------------------------------


def test_final_lengths_follow_committed_tokens_windows_and_revising_samplers():
    V, M = 10, 9
    masked = textdiff.build_process("masked", vocab_size=V, mask_id=M)
    uniform = textdiff.build_process("uniform", vocab_size=V)
    assert tells_noise(masked) and not tells_noise(uniform)
    x = torch.tensor([[1, 2, M, 4, M, M], [M, 2, 3, M, M, M]])  # [B, N]
    assert final_lengths(x, 0, True, masked) == [2, 0]
    assert final_lengths(x, 4, True, masked) == [4, 4]  # the first window [0, 4) is done: final whatever it holds
    assert final_lengths(x, 4, False, masked) == [4, 4]  # a revising sampler: only finished windows
    assert final_lengths(x, 0, False, masked) == [0, 0]
    assert final_lengths(torch.tensor([[1, 2, 3]]), 0, False, uniform) == [0]  # uniform: nothing before the window ends


@pytest.fixture(scope="module")
def lm(tiny_trained):
    return tiny_trained.lm


def run_rows(runner, rows):
    def emit(r, event):
        r.inbox(event)
    runner.run(rows, emit, lambda: False)
    return [r.inbox.events for r in rows]


@pytest.mark.parametrize("sampler,block_size", [("ancestral", 4), ("ancestral", None), ("remdm", 4), ("remdm", None)])
def test_streamed_deltas_add_up_to_the_answer_and_come_only_from_final_prefixes(lm, sampler, block_size):
    spec = json.dumps({"name": sampler})
    runner = BatchRunner(lm)
    r = row(prompt=[5, 6, 7], s=settings(N=16, steps=16, sampler=spec, block_size=block_size), seed=3, stream=True)
    events = run_rows(runner, [r])[0]
    deltas, end = [e for e in events if isinstance(e, Delta)], events[-1]
    assert isinstance(end, Finished) and all(e.text for e in deltas)
    assert "".join(e.text for e in deltas) + end.delta == end.text
    if sampler == "remdm":  # it may remask clean tokens: text only when a window ends (the last with Finished)
        assert len(deltas) <= (16 // block_size if block_size else 1) - 1
    else:  # a masked answer streams as it unmasks, inside a window too
        assert len(deltas) >= 2
    out = lm.generate([[5, 6, 7]], max_new_tokens=16, steps=16, sampler=json.loads(spec), seed=[3], block_size=block_size,
                      return_output=True)[1]
    assert end.completion_tokens == len(out.generated[0])
    assert end.text == AnswerText(lm.tokenizer, (), [lm.tokenizer.eos_token_id]).decode(out.generated[0])[0]


def test_rows_of_a_batch_equal_the_rows_decoded_alone(lm):
    runner = BatchRunner(lm)
    s = settings(N=12, steps=12, block_size=4)
    prompts = [[5, 6, 7], [9], [11, 12, 13, 14, 15], []]
    together = run_rows(runner, [row(prompt=p, s=s, seed=10 + i) for i, p in enumerate(prompts)])
    for i, p in enumerate(prompts):
        alone = run_rows(runner, [row(prompt=p, s=s, seed=10 + i)])[0][-1]
        assert together[i][-1].text == alone.text and together[i][-1].batch_rows == 4 and alone.batch_rows == 1


def test_a_bad_setting_fails_only_its_row(lm):
    runner = BatchRunner(lm)
    bad = settings(N=4, block_size=2, cache="exact")  # exact caches need a block-causal model
    events = run_rows(runner, [row(s=bad), row(s=bad, seed=1)])
    assert all(isinstance(e[-1], Failed) and e[-1].status == 400 and "block-causal" in e[-1].message for e in events)


# ---- answer text ----------------------------------------------------------------------------------


def test_deltas_never_split_a_character_and_stop_before_a_stop_string(lm):
    tok = lm.tokenizer
    text = "café ☕ naïve — done. the end"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) // 2  # byte fallback: the rare characters take several tokens
    stream = AnswerText(tok)
    deltas = [stream.update(ids[:k]) for k in range(1, len(ids) + 1)]
    whole, rest, reason = stream.finish(ids, complete=False)
    assert whole == tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) and whole == text
    assert "".join(deltas) + rest == whole and reason == "length"
    assert not any("\ufffd" in d for d in deltas)
    assert sum(1 for d in deltas if d) > 5

    stopped = AnswerText(tok, stop=["done", "xyz"])
    deltas = [stopped.update(ids[:k]) for k in range(1, len(ids) + 1)]
    whole, rest, reason = stopped.finish(ids, complete=False)
    assert whole == "café ☕ naïve — " and "".join(deltas) + rest == whole and reason == "stop"
    assert all("d" not in d for d in deltas[-10:])  # "d..." could begin "done": held back, then cut

    eos = tok.eos_token_id
    ended = AnswerText(tok, stop_token_ids=[eos])
    whole, _, reason = ended.finish(ids[:4] + [eos] + ids[4:], complete=True)
    assert whole == tok.decode(ids[:4]) and reason == "stop"


# ---- the context rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("defaults", [{}, {"block_size": 4, "blocks_from": "sequence_start"}])
@pytest.mark.parametrize("block_size", [None, 3, 4])
def test_positions_needed_is_what_generate_accepts(tiny_trained, defaults, block_size):
    pytest.importorskip("pydantic")
    from textdiff.lm import DiffusionLM
    from textdiff.serve.admission import Admission, ServeOptions

    lm = DiffusionLM.from_pretrained(tiny_trained.final, device="cpu")
    lm.generation_defaults = dict(defaults)
    adm = Admission(lm, ServeOptions(model_name="m"))
    limit = adm.context
    for prompt_len in (0, 1, 5, 7):
        for N in range(limit - prompt_len - 6, limit - prompt_len + 3):
            need = adm.positions_needed(prompt_len, N, block_size)
            try:
                lm.generate([[7] * prompt_len], max_new_tokens=N, steps=1, block_size=block_size, seed=0)
                accepted = True
            except ConfigError:
                accepted = False
            assert accepted == (need <= limit), (prompt_len, N, need)
