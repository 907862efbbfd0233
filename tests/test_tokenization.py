import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from textdiff.config import TokenizerConfig
from textdiff.errors import ConfigError
from textdiff.tokenization import build_tokenizer, ensure_special_tokens, load_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog.\nA second line.", "Pack my box with five dozen liquor jugs."] * 20


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_trained_tokenizers_round_trip_and_have_specials(kind, tmp_path):
    tok = build_tokenizer(TokenizerConfig(train=kind, vocab_size=120), TEXTS)
    assert tok.mask_token is not None and tok.eos_token is not None and tok.pad_token is not None
    assert len({tok.mask_token_id, tok.eos_token_id}) == 2
    ids = tok(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == TEXTS[0]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(TEXTS[0], add_special_tokens=False)["input_ids"] == ids
    assert again.mask_token == tok.mask_token


def test_mask_token_is_added_when_missing(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    raw = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    added = ensure_special_tokens(tok)
    assert tok.mask_token == "[MASK]" and tok.mask_token_id == 3
    assert tok.eos_token is not None and tok.pad_token == tok.eos_token
    assert len(added) == 2 and len(tok) == 5
    tok.save_pretrained(tmp_path)
    assert load_tokenizer(str(tmp_path)).mask_token == "[MASK]"


def test_loading_a_missing_tokenizer_is_one_line():
    with pytest.raises(ConfigError, match="cannot load a tokenizer") as e:
        load_tokenizer("/no/such/tokenizer")
    assert "\n" not in str(e.value)
