"""The continuous-batching engine of ``textdiff serve`` without HTTP: the merged forward gives every
row its own logits, rows join the running batch at step boundaries and leave when they end, rows
with different settings share forwards, and every row's answer is the one it gets alone."""
import json
import threading
import time

import pytest
import torch

from textdiff.serve.calls import Call, ModelCalls, kept_positions
from textdiff.serve.continuous import ContinuousScheduler
from textdiff.serve.engine import DecodeSettings, Delta, Failed, Finished, Request
from textdiff.serve.runner import BatchRunner
from textdiff.serve.text import AnswerText


def settings(N=8, steps=None, sampler="ancestral", block_size=None, cache="auto", **fields):
    return DecodeSettings(max_new_tokens=N, steps=steps, sampler=json.dumps({"name": sampler, **fields}, sort_keys=True),
                          block_size=block_size, cache=cache)


class Inbox:
    def __init__(self):
        self.events, self.done = [], threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if isinstance(event, (Finished, Failed)):
            self.done.set()


def row(prompt, s, seed, stream=False):
    inbox = Inbox()
    r = Request(prompt_ids=list(prompt), settings=s, seed=seed, stream=stream, sink=inbox)
    r.inbox = inbox
    return r


def result(r, timeout=120):
    assert r.inbox.done.wait(timeout), "no terminal event"
    end = r.inbox.events[-1]
    assert isinstance(end, Finished), end
    return end


@pytest.fixture(scope="module")
def lm(tiny_trained):
    return tiny_trained.lm


def engine(lm, **kw):
    return ContinuousScheduler(BatchRunner(lm), ModelCalls(lm), **{"max_batch": 8, **kw})


def test_the_merged_forward_gives_each_call_its_own_logits(lm):
    calls = ModelCalls(lm)
    V = lm.process.vocab_size
    shapes = [(5, 0), (9, 3), (2, torch.tensor([0, 1])), (7, torch.tensor([2, 5, 6]))]  # (width, logits_to_keep)
    gen = torch.Generator().manual_seed(0)
    made = []
    for T, keep in shapes:
        ids = torch.randint(0, V - 1, (1, T), generator=gen)
        args = (ids, torch.rand(1, generator=gen), torch.ones(1, T, dtype=torch.long), torch.arange(T)[None] + 3, None, False)
        made.append((args, keep))
    merged = [Call(a, k) for a, k in made]
    calls.run(merged)
    assert calls.forwards == 1 and all(c.shared == 4 for c in merged)
    for (args, keep), c in zip(made, merged):
        alone = Call(args, keep)
        ModelCalls(lm).run([alone])
        assert c.logits.shape == (1, kept_positions(keep, args[0].shape[1]).numel(), V)
        torch.testing.assert_close(c.logits, alone.logits, rtol=1e-5, atol=1e-5)
    assert kept_positions(0, 4).tolist() == [0, 1, 2, 3] and kept_positions(2, 4).tolist() == [2, 3]


def test_exact_batching_gives_each_row_the_bits_it_gets_alone(lm):
    """--exact-batching: rows of different widths and kept positions, merged, get bit for bit the
    logits of their own forward (also merged alone); widths in different multiples do not merge."""
    V = lm.process.vocab_size
    gen = torch.Generator().manual_seed(1)
    shapes = [(5, 0), (7, 3), (2, torch.tensor([0, 1])), (6, torch.tensor([2, 4, 5])), (9, 4), (16, 0)]
    made = []
    for T, keep in shapes:
        ids = torch.randint(0, V - 1, (1, T), generator=gen)
        made.append(((ids, torch.rand(1, generator=gen), torch.ones(1, T, dtype=torch.long), torch.arange(T)[None],
                      None, False), keep))
    calls = ModelCalls(lm, exact_width=8)
    merged = [Call(a, k) for a, k in made]
    calls.run(merged)
    assert calls.forwards == 2 and [c.shared for c in merged] == [4, 4, 4, 4, 2, 2]  # widths 8 and 16
    for (args, keep), c in zip(made, merged):
        alone = Call(args, keep)
        ModelCalls(lm, exact_width=8).run([alone])
        assert torch.equal(c.logits, alone.logits) and c.logits.shape[1] == kept_positions(keep, args[0].shape[1]).numel()


def test_a_call_with_a_cache_runs_alone_and_a_failing_call_fails_only_itself(lm):
    calls = ModelCalls(lm)
    T = 4
    good = Call((torch.ones(1, T, dtype=torch.long), torch.rand(1), torch.ones(1, T, dtype=torch.long),
                 torch.arange(T)[None], None, False), 0)
    bad = Call((torch.full((1, T), 10**6), torch.rand(1), torch.ones(1, T, dtype=torch.long),
                torch.arange(T)[None], None, False), 0)  # an id outside the embedding
    cached = Call((torch.ones(1, T, dtype=torch.long), torch.rand(1), torch.ones(1, T, dtype=torch.long),
                   torch.arange(T)[None], object(), False), 0)
    assert not cached.mergeable and good.mergeable
    calls.run([good, bad])
    assert good.logits is not None and good.error is None
    assert bad.logits is None and isinstance(bad.error, Exception)


def test_rows_join_at_step_boundaries_share_forwards_and_get_their_answers_alone(lm):
    e = engine(lm)
    try:
        long = row([5, 6, 7], settings(N=24, steps=24, sampler="confidence"), seed=1, stream=True)
        e.submit([long])
        deadline = time.monotonic() + 60
        while e.stats().batches < 2:  # it is running: two of its 24 steps taken
            assert time.monotonic() < deadline and not long.inbox.done.is_set()
            time.sleep(0.005)
        later = [row([9] * (1 + i), settings(N=6 + i, steps=3 + i, sampler=["ancestral", "confidence"][i % 2],
                                             block_size=[None, 2][i % 2]), seed=20 + i) for i in range(3)]
        e.submit(later)
        ends = [result(r) for r in later]
        assert not long.inbox.done.is_set()  # the short rows joined the running row and left before it
        end = result(long)
        assert max(x.batch_rows for x in ends) >= 2 and end.batch_rows >= 1  # they ran in forwards together
        assert e.stats().running == 0 and e.stats().waiting == 0
    finally:
        e.close(10)
    alone = engine(lm)
    try:
        for r in [long, *later]:
            again = row(r.prompt_ids, r.settings, r.seed)
            alone.submit([again])
            solo = result(again)
            got = r.inbox.events[-1]
            assert (got.text, got.completion_tokens) == (solo.text, solo.completion_tokens) and solo.batch_rows == 1
        streamed = "".join(ev.text for ev in long.inbox.events if isinstance(ev, Delta)) + long.inbox.events[-1].delta
        assert streamed == long.inbox.events[-1].text
    finally:
        alone.close(10)


def test_admission_keeps_both_bounds_and_arrival_order(lm):
    e = engine(lm, max_batch=2, max_tokens_in_flight=40)
    seen = []
    try:
        rows = [row([5] * 3, settings(N=16, steps=8), seed=i) for i in range(5)]  # cost 19: two fit the budget
        original = e._admit

        def watch():
            original()
            seen.append(len(e._lanes))

        e._admit = watch
        e.submit(rows)
        for r in rows:
            result(r)
    finally:
        e.close(10)
    assert max(seen) == 2 and e.stats().batches > 0


def test_llada2_streams_final_prefixes_under_continuous_batching():
    """LLaDA 2.0 (blocks counted from the sequence start): text arrives before the end, adds up to
    the answer, and equals DiffusionLM.generate's answer."""
    from pathlib import Path

    from textdiff.lm import DiffusionLM

    folder = Path(__file__).parent / "fixtures" / "published" / "llada2"
    lm2 = DiffusionLM.from_pretrained(folder, device="cpu")
    e = engine(lm2)
    try:
        rows = [row(list(range(3, 3 + n)), settings(N=10, block_size=4, sampler="confidence", temperature=0.0), seed=n,
                    stream=True) for n in (1, 3, 6)]
        e.submit(rows)
        early = 0
        for r, n in zip(rows, (1, 3, 6)):
            end = result(r)
            deltas = [ev.text for ev in r.inbox.events if isinstance(ev, Delta)]
            assert "".join(deltas) + end.delta == end.text
            early += sum(1 for d in deltas if d)
            _, out = lm2.generate([list(range(3, 3 + n))], max_new_tokens=10, block_size=4, seed=[n],
                                  sampler={"name": "confidence", "temperature": 0.0}, return_output=True)
            assert end.completion_tokens == len(out.generated[0])
            assert end.text == AnswerText(lm2.tokenizer, (), BatchRunner(lm2).stop_token_ids).decode(out.generated[0])[0]
        assert early >= 2  # text before the end (phase 1 sent LLaDA 2.0 answers only at the end)
    finally:
        e.close(10)
