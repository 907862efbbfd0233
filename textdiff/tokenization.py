"""Tokenizers: load any Hugging Face tokenizer, or train one on the corpus.

* ``bpe``: character-level BPE with byte fallback, trained with the ``tokenizers`` library. Every
  piece but the ``<0xNN>`` byte pieces is a string of whole characters, so any sequence of pieces a
  model samples decodes to valid text (a byte-level BPE has pieces that are half a character: a
  masked diffusion model fills positions independently and so pairs them into invalid UTF-8, which
  decodes to U+FFFD). A character the corpus never showed is spelled in UTF-8 byte pieces: no text
  becomes ``<unk>``.
* ``unigram``: a SentencePiece unigram model trained with ``sentencepiece`` (``byte_fallback``),
  converted to a fast ``tokenizers`` Unigram model (pieces and scores) so it saves and loads like any
  HF tokenizer.

Every tokenizer leaves here with a mask token (added when missing, for absorbing diffusion), an EOS
token (added when missing) and a PAD token (EOS when missing).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Optional, Sequence

from .dataclass_io import at_least, not_blank
from .errors import ConfigError

EOS, MASK, PAD, UNK = "<|endoftext|>", "[MASK]", "[PAD]", "<unk>"
NEWLINE = "\u21b5"  # "↵": SentencePiece works on lines, so newlines travel as this symbol


@dataclass
class TokenizerConfig:
    """Where the tokenizer comes from: a local folder / hub name, or trained on the corpus."""

    path: Optional[str] = None  # local folder or hub name of a Hugging Face tokenizer
    train: Optional[Literal["bpe", "unigram"]] = None  # train one on the training corpus
    vocab_size: int = 4096  # size of a trained tokenizer (special tokens included)
    min_frequency: int = 2  # BPE merges need at least this many occurrences

    def validate(self) -> None:
        if (self.path is None) == (self.train is None):
            raise ConfigError("tokenizer: give exactly one of 'path' (a tokenizer folder) or 'train' (bpe|unigram)")
        not_blank("tokenizer.path", self.path)
        if self.vocab_size < 64:
            raise ConfigError(f"tokenizer.vocab_size={self.vocab_size} is too small; use at least 64")
        at_least("tokenizer", self, 1, "min_frequency")


WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""  # GPT-2's word pattern


def byte_pieces(alphabet: set[str]) -> list[str]:
    """The ``<0xNN>`` byte-fallback pieces a character vocabulary needs to spell any UTF-8 text: every
    byte of a multi-byte character (lead 0xC2-0xF4, continuation 0x80-0xBF) and the ASCII bytes whose
    character is not already a piece."""
    needed = [b for b in range(0x80) if chr(b) not in alphabet] + list(range(0x80, 0xC0)) + list(range(0xC2, 0xF5))
    return [f"<0x{b:02X}>" for b in needed]


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """Character-level BPE over words, with byte fallback.

    ``vocab_size`` counts the special and byte pieces; the characters kept (``limit_alphabet``) are
    the most frequent ones that fit, and at least 256 of them (all of a small alphabet, even when
    that makes the vocabulary larger than asked); the rest are spelled in bytes."""
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = [t for t in texts if t]
    chars: dict[str, int] = {}
    for text in texts:
        for c in set(text):
            chars[c] = chars.get(c, 0) + 1
    specials = [EOS, MASK, PAD, UNK]
    n_bytes = len(byte_pieces(set(chars)))
    tok = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=True))
    # words as GPT-2 splits them (a leading space stays on the word; numbers, punctuation and newlines
    # apart), but on characters, not bytes; pieces hold their spaces, so decoding is concatenation
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORDS), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - n_bytes, len(specials) + 1), min_frequency=min_frequency, special_tokens=specials,
        limit_alphabet=max(vocab_size - n_bytes - len(specials), min(len(chars), 256)), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # the trainer knows nothing of byte pieces: append those the kept characters leave uncovered
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for piece in byte_pieces({p for p in vocab if len(p) == 1}):
        vocab.setdefault(piece, len(vocab))
    return Tokenizer.from_str(json.dumps(spec))


def train_unigram(texts: Iterable[str], vocab_size: int, byte_fallback: bool = True):
    """SentencePiece unigram training, then a ``tokenizers`` Unigram model with the same pieces.

    ``byte_fallback``: characters outside the pieces are spelled as ``<0xNN>`` byte pieces instead of
    ``<unk>`` (SentencePiece then needs a vocabulary of at least 256 + the characters)."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    texts = [t for t in texts if t]
    required = len({c for t in texts for c in t.replace("\n", "")}) + 5  # characters, the specials and <unk>
    if byte_fallback and vocab_size < required + 256:
        print(f"warning: tokenizer.vocab_size={vocab_size} leaves no room for SentencePiece byte fallback "
              f"(needs at least {required + 256}); characters outside the corpus will become {UNK}")
        byte_fallback = False
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        with corpus.open("w", encoding="utf-8") as f:
            for text in texts:  # one document per line, its newlines as a symbol
                f.write(text.replace(NEWLINE, " ").replace("\n", NEWLINE) + "\n")
        prefix = str(Path(tmp) / "sp")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
            character_coverage=1.0, byte_fallback=byte_fallback, user_defined_symbols=[EOS, MASK, PAD, NEWLINE],
            unk_piece=UNK, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, minloglevel=2,
            num_threads=max(1, (os.cpu_count() or 1)), remove_extra_whitespaces=False,
            normalization_rule_name="identity", max_sentence_length=1 << 20,
            hard_vocab_limit=False,  # a small corpus may support fewer pieces than asked for
        )
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=byte_fallback))
    tok.normalizer = normalizers.Replace("\n", NEWLINE)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([
        decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False),
        decoders.Replace(NEWLINE, "\n"),
        decoders.ByteFallback(), decoders.Fuse(),  # runs of <0xNN> pieces -> the characters they spell
    ])
    return tok


def wrap_fast(tok, model_max_length: int | None = None):
    """A ``PreTrainedTokenizerFast`` around a trained tokenizer, with its special tokens named."""
    from transformers import PreTrainedTokenizerFast

    unk = {"unk_token": UNK} if tok.token_to_id(UNK) is not None else {}
    length = {"model_max_length": model_max_length} if model_max_length else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, mask_token=MASK, pad_token=PAD, **unk, **length)


def count_unknown(tokenizer, ids: Sequence[int]) -> int:
    """How many of ``ids`` are the tokenizer's unknown piece (text it cannot represent)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    return 0 if unk is None else sum(1 for i in ids if i == unk)


def ensure_special_tokens(tokenizer, source: Optional[str] = None):
    """Give ``tokenizer`` a mask token and an EOS token (added when missing) and a PAD token.

    Returns the list of tokens that were added (the model's embeddings must grow by that many).
    source: where the caller's tokenizer came from; a token added to it is said in one warning line.
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
        if source is not None and added:
            from .errors import warn

            names = ", ".join(f"{tok!r} (id {tokenizer.convert_tokens_to_ids(tok)})" for tok in added)
            warn(f"the tokenizer from {source} had no {' / '.join(k.split('_')[0] for k in specials)} token; added "
                 f"{names}, so the model's vocabulary grows to {len(tokenizer)}")
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
        # trust_remote_code=False, said explicitly: left unset, transformers ASKS on the terminal whether to run
        # the Python files of a folder whose config.json maps its classes to them (a prompt a folder triggers)
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001
        where = "folder" if Path(path).exists() else "name"
        why = "it ships Python code, which textdiff never runs; " if "custom code" in str(e) else ""
        raise ConfigError(
            f"cannot load a tokenizer from {where} {path!r} ({type(e).__name__}); {why}give a local folder with "
            "tokenizer.json / vocab files (offline) or train one with tokenizer.train: bpe"
        ) from None


def build_tokenizer(cfg: TokenizerConfig, texts: Sequence[str] | None = None):
    """The recipe's tokenizer: loaded from ``cfg.path`` or trained on ``texts``."""
    if cfg.path is not None:
        tokenizer = load_tokenizer(cfg.path)
        ensure_special_tokens(tokenizer, source=f"tokenizer.path={cfg.path}")  # added to the caller's: said
    else:
        if not texts:
            raise ConfigError("tokenizer.train needs training text, and the corpus is empty")
        raw = train_bpe(texts, cfg.vocab_size, cfg.min_frequency) if cfg.train == "bpe" else train_unigram(texts, cfg.vocab_size)
        tokenizer = wrap_fast(raw)
    ensure_special_tokens(tokenizer)
    return tokenizer


def encode_text(tokenizer, text: str, mask_id: Optional[int] = None, where: str = "the prompt") -> list[int]:
    """Token ids of ``text`` (no special tokens added), where the mask token's spelling (``[MASK]``,
    ``<|mdm_mask|>``) is TEXT, never mask ids: a prompt that mentions it is not a request to fill
    positions (infilling is asked for with token ids or ``template=``). When it occurs, one warning
    line says so; a tokenizer that cannot spell it as text is a one-line error."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if mask_id is None or mask_id not in ids:
        return ids
    spelling = tokenizer.convert_ids_to_tokens(int(mask_id))
    pieces = text.split(spelling) if spelling else [text]
    literal = tokenizer(spelling, add_special_tokens=False, split_special_tokens=True)["input_ids"] if spelling else []
    out = []
    for k, piece in enumerate(pieces):
        if k:
            out += literal
        out += tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
    if mask_id in out:
        raise ConfigError(f"{where} contains the mask token {spelling!r}, which this tokenizer cannot encode as text; "
                          "remove it (to fill positions, pass token ids with the mask id or use template=)")
    from .errors import warn

    warn(f"{where} contains the text {spelling!r}: it is encoded as text, not as positions to fill; to fill "
         "positions pass token ids with the mask id (or template=)")
    return out
