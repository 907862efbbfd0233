import json

import pytest

from textdiff.config import DataConfig, TokenizerConfig
from textdiff.data import load_documents, split_documents, tokenize_rows, unigram_log_probs, unigram_ppl
from textdiff.errors import DataError
from textdiff.tokenization import build_tokenizer

DOCS = [f"Document number {i} talks about topic {i % 7} and ends here." * (1 + i % 3) for i in range(30)]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TokenizerConfig(train="bpe", vocab_size=300), DOCS)


def test_embedded_corpus_is_real_prose_and_large():
    from textdiff.corpus import embedded_documents

    docs = embedded_documents()
    assert sum(map(len, docs)) > 300_000
    assert any("statement" in d for d in docs)  # the language reference is there


def test_wrap_layout_concatenates_with_eos_and_cuts(tokenizer, tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    cfg = DataConfig(source=str(path), seq_len=16)
    docs = load_documents(cfg.source, cfg)
    rows = tokenize_rows(docs, tokenizer, cfg)
    flat = [i for d in DOCS for i in tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]
    ids = rows[:]["input_ids"]  # [N, 16]
    assert ids.shape == (len(flat) // 16, 16)
    assert ids.reshape(-1).tolist() == flat[: len(rows) * 16]
    assert "loss_mask" not in rows.column_names


def test_pad_layout_one_document_per_row(tokenizer, tmp_path):
    cfg = DataConfig(source="embedded", layout="pad", seq_len=24)
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(DOCS[:5]))  # paragraphs are documents
    cfg = DataConfig(source=str(path), layout="pad", seq_len=24)
    rows = tokenize_rows(load_documents(cfg.source, cfg), tokenizer, cfg)
    assert len(rows) == 5
    for r, d in zip(rows, DOCS[:5]):
        ids = tokenizer(d, add_special_tokens=False)["input_ids"][:23] + [tokenizer.eos_token_id]
        n = len(ids)
        assert r["input_ids"][:n].tolist() == ids
        assert r["loss_mask"].tolist() == [1] * n + [0] * (24 - n)
        assert set(r["input_ids"][n:].tolist()) <= {tokenizer.pad_token_id}


def test_split_is_deterministic_and_disjoint(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(DOCS))
    cfg = DataConfig(source=str(path), lines_are_documents=True, val_fraction=0.2, shuffle_seed=3)
    a_train, a_val = split_documents(cfg)
    b_train, b_val = split_documents(cfg)
    assert a_val["text"] == b_val["text"] and len(a_val) == 6
    assert not set(a_val["text"]) & set(a_train["text"])


def test_unigram_baseline(tokenizer):
    cfg = DataConfig(seq_len=8)
    from datasets import Dataset

    rows = tokenize_rows(Dataset.from_dict({"text": DOCS}), tokenizer, cfg)
    lp = unigram_log_probs(rows, len(tokenizer))
    ppl = unigram_ppl(rows, lp)
    assert 1.0 < ppl < len(tokenizer)


def test_missing_file_empty_corpus_and_offline_hub(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_documents("data/missing.txt", DataConfig())
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(DataError, match="empty"):
        load_documents(str(empty), DataConfig())
    with pytest.raises(DataError, match="local .txt/.jsonl/.parquet"):
        load_documents("someone/some-dataset-that-is-not-cached", DataConfig())


def test_wrong_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"body": "hello"}) + "\n")
    with pytest.raises(DataError, match="no column 'text'"):
        load_documents(str(path), DataConfig())


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_dict({"body": DOCS[:10], "n": list(range(10))}).save_to_disk(str(tmp_path / "ds"))
    docs = load_documents(str(tmp_path / "ds"), DataConfig(text_field="body"))
    assert docs["text"] == DOCS[:10] and docs.column_names == ["text"]
    DatasetDict({"train": Dataset.from_dict({"text": DOCS[:20]}),
                 "validation": Dataset.from_dict({"text": DOCS[20:]})}).save_to_disk(str(tmp_path / "dd"))
    cfg = DataConfig(source=str(tmp_path / "dd"), val_source=str(tmp_path / "dd"))
    train_docs, val_docs = split_documents(cfg)  # the recipe's split for training, 'validation' for val_source
    assert train_docs["text"] == DOCS[:20] and val_docs["text"] == DOCS[20:]
    with pytest.raises(DataError, match=r"has no split 'test' \(splits: \['train', 'validation'\]\)"):
        load_documents(str(tmp_path / "dd"), DataConfig(split="test"))
