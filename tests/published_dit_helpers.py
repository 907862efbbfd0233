"""Shared by the MDLM / BD3-LM tests: the fixture folders and a tokenizer of the fixtures' vocabulary."""
from pathlib import Path

import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures" / "published"
MDLM = {name: FIXTURES / "mdlm" / name for name in ("owt", "timecond")}
BD3LM = {name: FIXTURES / "bd3lm" / name for name in ("owt-block4", "noadaln-block8")}
VOCAB = 64  # the fixtures' vocabulary: 62 words, EOS, and [MASK] = 63 last (as GPT-2's 50257 of 50258)


def tiny_tokenizer():
    """A word-level tokenizer of exactly the fixtures' 64 ids: w0..w61, <|endoftext|> = 62, [MASK] = 63."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB - 2)}
    vocab.update({"<|endoftext|>": VOCAB - 2, "[MASK]": VOCAB - 1})
    raw = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="w0", eos_token="<|endoftext|>", mask_token="[MASK]",
                                  pad_token="<|endoftext|>")
    assert len(tok) == VOCAB and tok.mask_token_id == VOCAB - 1
    return tok


def expected(folder: Path) -> dict:
    return load_file(str(folder.parent / f"{folder.name}.expected.safetensors"))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got − want| / max |want| (the parity figure)."""
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())
