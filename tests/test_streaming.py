"""Streaming data (textdiff.streaming): rows by global index, exact resume, process shards, workers."""
import json

import pytest
import torch

from textdiff.config import DataConfig, TokenizerConfig, load_recipe
from textdiff.data import load_documents, tokenize_rows
from textdiff.streaming import CHUNK, StreamRows, TokenChunks, stream_split
from textdiff.tokenization import build_tokenizer

DOCS = [f"Line {i}: topic {i % 11} says {'more ' * (i % 5)}and stops." for i in range(400)]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(TokenizerConfig(train="bpe", vocab_size=300), DOCS)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(DOCS) + "\n")
    return path


def test_unshuffled_stream_packs_the_rows_of_the_in_memory_path(tok, text_file):
    cfg = DataConfig(source=str(text_file), lines_are_documents=True, seq_len=16, streaming=True, shuffle_buffer=1, val_documents=20)
    docs, val, sample = stream_split(cfg)
    assert val["text"] == DOCS[:20] and sample == DOCS[20:]  # the first documents are held out
    memory = tokenize_rows(load_documents(str(text_file), cfg).select(range(20, 400)), tok, cfg)[:]["input_ids"]  # [N, 16]
    n = memory.shape[0]
    streamed = StreamRows(docs, tok, cfg, seed=0, batch_size=4).rows(0, n + 5)["input_ids"]  # into the 2nd epoch
    assert torch.equal(streamed[:n], memory)
    assert torch.equal(streamed[n:], memory[:5])  # epoch 2 reads the stream again from its start


@pytest.mark.parametrize("layout", ["wrap", "pad"])
def test_resuming_from_a_saved_position_gives_the_same_rows(tok, text_file, layout):
    cfg = DataConfig(source=str(text_file), lines_are_documents=True, seq_len=16, layout=layout, streaming=True,
                     shuffle_buffer=13, val_documents=0, val_fraction=0.0)
    docs, _, _ = stream_split(cfg)
    whole = StreamRows(docs, tok, cfg, seed=3, batch_size=4)
    first = whole.rows(0, 96)
    position = whole.position(96)  # a checkpoint after 24 steps of 4 rows
    rest = whole.rows(96, 400)  # crosses windows and the epoch boundary
    resumed = StreamRows(docs, tok, cfg, seed=3, batch_size=4, position=position)
    again = resumed.rows(96, 400)
    for name in rest:
        assert torch.equal(rest[name], again[name]), name
    replayed = StreamRows(docs, tok, cfg, seed=3, batch_size=4).rows(96, 400)  # no position: replays, same rows
    assert torch.equal(replayed["input_ids"], rest["input_ids"])
    assert not torch.equal(first["input_ids"][:13], tokenize_rows(load_documents(str(text_file), cfg), tok, cfg)[:13]["input_ids"])  # shuffled
    other_seed = StreamRows(docs, tok, cfg, seed=4, batch_size=4).rows(0, 96)["input_ids"]
    assert not torch.equal(other_seed, first["input_ids"])


def test_two_processes_read_disjoint_documents_that_cover_the_stream(tok, text_file):
    cfg = DataConfig(source=str(text_file), lines_are_documents=True, seq_len=16, streaming=True, val_documents=0, val_fraction=0.0)
    docs, _, _ = stream_split(cfg)
    seen = {}
    for rank in (0, 1):
        seen[rank] = [first + j for first, ids in TokenChunks(docs, tok, 0, rank, 2) for j in range(len(ids))]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(len(DOCS)))
    assert {d // CHUNK % 2 for d in seen[1]} == {1}  # chunks of CHUNK documents are dealt round-robin
    # the loop's global rows: blocks of batch_size rows alternate between the processes
    ranks = [StreamRows(docs, tok, cfg, seed=0, batch_size=4, rank=r, world=2) for r in (0, 1)]
    a, b = ranks[0].rows(0, 4)["input_ids"], ranks[1].rows(4, 4)["input_ids"]
    with pytest.raises(ValueError, match="belongs to process 1"):
        ranks[0].rows(4, 4)
    assert a.shape == b.shape == (4, 16) and not torch.equal(a, b)


def test_workers_tokenize_the_same_rows_as_the_main_process(tok, tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    cfg = DataConfig(source=str(path), text_field="body", seq_len=16, streaming=True, shuffle_buffer=50, val_documents=10)
    docs, _, _ = stream_split(cfg)
    serial = StreamRows(docs, tok, cfg, seed=0, batch_size=8).rows(0, 600)["input_ids"]  # > 1 epoch
    workers = DataConfig(**{**cfg.__dict__, "num_workers": 2})
    parallel = StreamRows(docs, tok, workers, seed=0, batch_size=8).rows(0, 600)["input_ids"]
    assert torch.equal(serial, parallel)


@pytest.mark.slow
def test_a_streamed_run_stopped_and_resumed_matches_an_uninterrupted_one(tiny, tmp_path):
    from tests.test_training import metrics
    from textdiff.training.loop import train

    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    data = {"source": str(path), "max_documents": None, "streaming": True, "shuffle_buffer": 16, "val_documents": 20}
    full = load_recipe(raw=tiny(output_dir=str(tmp_path / "full"), data=data, train={"max_steps": 20, "eval_every": 10}))
    train(full)
    cut = load_recipe(raw=tiny(output_dir=str(tmp_path / "cut"), data=data, train={"max_steps": 20, "eval_every": 10}))
    train(cut, stop_at=10)
    state = json.loads((tmp_path / "cut" / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["streams"]["positions"][0]["window"] == 80 // 16  # 10 steps x 8 rows: the 6th window is next
    train(cut, resume=True)
    a = [m for m in metrics(tmp_path / "full") if "train_loss" in m or "val_nelbo" in m]
    b = [m for m in metrics(tmp_path / "cut") if "train_loss" in m or "val_nelbo" in m]
    assert [m["step"] for m in a] == [m["step"] for m in b] and len(a) > 4
    for x, y in zip(a, b):
        key = "train_loss" if "train_loss" in x else "val_nelbo"
        assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), x["step"]
