"""Tokenizers: load any Hugging Face tokenizer, or train one on the corpus.

* ``bpe``: byte-level BPE trained with the ``tokenizers`` library (no unknown tokens ever).
* ``unigram``: a SentencePiece unigram model trained with ``sentencepiece``, converted to a fast
  ``tokenizers`` Unigram model (pieces and scores) so it saves and loads like any HF tokenizer.

Every tokenizer leaves here with a mask token (added when missing, for absorbing diffusion), an EOS
token (added when missing) and a PAD token (EOS when missing).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from .config import TokenizerConfig
from .errors import ConfigError

EOS, MASK, PAD = "<|endoftext|>", "[MASK]", "[PAD]"
NEWLINE = "\u21b5"  # "↵": SentencePiece works on lines, so newlines travel as this symbol


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS, MASK, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_unigram(texts: Iterable[str], vocab_size: int):
    """SentencePiece unigram training, then a ``tokenizers`` Unigram model with the same pieces."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        with corpus.open("w", encoding="utf-8") as f:
            for text in texts:  # one document per line, its newlines as a symbol
                f.write(text.replace(NEWLINE, " ").replace("\n", NEWLINE) + "\n")
        prefix = str(Path(tmp) / "sp")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
            character_coverage=1.0, byte_fallback=False, user_defined_symbols=[EOS, MASK, PAD, NEWLINE],
            unk_piece="<unk>", bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, minloglevel=2,
            num_threads=max(1, (os.cpu_count() or 1)), remove_extra_whitespaces=False,
            normalization_rule_name="identity", max_sentence_length=1 << 20,
            hard_vocab_limit=False,  # a small corpus may support fewer pieces than asked for
        )
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.normalizer = normalizers.Replace("\n", NEWLINE)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([
        decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False),
        decoders.Replace(NEWLINE, "\n"),
    ])
    return tok


def wrap_fast(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, mask_token=MASK, pad_token=PAD)


def ensure_special_tokens(tokenizer):
    """Give ``tokenizer`` a mask token and an EOS token (added when missing) and a PAD token.

    Returns the list of tokens that were added (the model's embeddings must grow by that many).
    """
    added = []
    specials = {}
    if tokenizer.mask_token is None:
        specials["mask_token"] = MASK
    if tokenizer.eos_token is None:
        specials["eos_token"] = tokenizer.sep_token or EOS
    if specials:
        try:
            n = tokenizer.add_special_tokens(specials)
        except Exception as e:  # noqa: BLE001 - any failure means it cannot be extended
            raise ConfigError(
                f"the tokenizer has no mask token and cannot be extended ({type(e).__name__}: {e}); "
                "use a tokenizer with a [MASK] token or train one (tokenizer.train: bpe)"
            ) from None
        if tokenizer.mask_token is None:
            raise ConfigError("the tokenizer has no mask token and cannot be extended; use one with a [MASK] token")
        added = list(specials.values())[: n or 0]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return added


def _from_vocab_files(folder: Path):
    """GPT-2 BPE (vocab.json + merges.txt) or BERT WordPiece (vocab.txt) files -> a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    if (folder / "vocab.txt").is_file():
        tok = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True)
        return PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, unk_token="[UNK]", sep_token="[SEP]",
                                       pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    return None


def load_tokenizer(path: str):
    """Load a tokenizer from a local folder (or a hub name when online); one-line error otherwise."""
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.exists() and str(path).startswith((".", "/", "~")):
        raise ConfigError(f"cannot load a tokenizer: folder {str(path)!r} does not exist; check the path")
    if folder.is_file():
        raise ConfigError(f"cannot load a tokenizer: {str(path)!r} is a file; give the folder that holds tokenizer.json")
    try:
        if folder.is_dir() and not (folder / "tokenizer_config.json").is_file() and not (folder / "tokenizer.json").is_file():
            bare = _from_vocab_files(folder)  # bare vocabulary files, as published
            if bare is not None:
                return bare
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001
        where = "folder" if Path(path).exists() else "name"
        raise ConfigError(
            f"cannot load a tokenizer from {where} {path!r} ({type(e).__name__}); give a local folder with "
            "tokenizer.json / vocab files (offline) or train one with tokenizer.train: bpe"
        ) from None


def build_tokenizer(cfg: TokenizerConfig, texts: Sequence[str] | None = None):
    """The recipe's tokenizer: loaded from ``cfg.path`` or trained on ``texts``."""
    if cfg.path is not None:
        tokenizer = load_tokenizer(cfg.path)
    else:
        if not texts:
            raise ConfigError("tokenizer.train needs training text, and the corpus is empty")
        raw = train_bpe(texts, cfg.vocab_size, cfg.min_frequency) if cfg.train == "bpe" else train_unigram(texts, cfg.vocab_size)
        tokenizer = wrap_fast(raw)
    ensure_special_tokens(tokenizer)
    return tokenizer
