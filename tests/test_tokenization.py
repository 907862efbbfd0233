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


# a small corpus in scripts where a byte-level BPE splits characters: Chinese, Japanese, emoji
CJK = ["今天天气很好，我们去公园散步吧。北京欢迎你！", "机器学习是人工智能的一个分支。😀🎉 中文分词是一个难题。",
       "東京は日本の首都です。ひらがなとカタカナ。🍣🍜", "扩散模型逐步去噪，生成文本。Diffusion models denoise text. 🚀"] * 15


def _sampled_texts(tok, pieces, n=200, length=64, seed=0):
    import random

    rng = random.Random(seed)
    return [tok.decode([rng.choice(pieces) for _ in range(length)]) for _ in range(n)]


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_cjk_and_emoji_never_decode_to_replacement_or_unk(kind, tmp_path):
    tok = build_tokenizer(TokenizerConfig(train=kind, vocab_size=600), CJK)
    tok.model_max_length = 64
    tok.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.unk_token == "<unk>" and tok.model_max_length == 64  # both survive the save
    special = set(tok.all_special_ids)
    # every piece a model can emit for covered text spells whole characters, so ANY sequence of them
    # (a diffusion sampler fills positions independently) decodes to valid text
    text_pieces = [i for t, i in tok.get_vocab().items() if i not in special and not (t.startswith("<0x") and t.endswith(">"))]
    for text in _sampled_texts(tok, text_pieces):
        assert "\ufffd" not in text and "<unk>" not in text
    # covered text and uncovered characters (a new emoji, "ü") round-trip exactly, with no <unk> piece
    for text in [*CJK[:4], "新しい🦀と ü"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == (text if kind == "bpe" else text.lstrip())


def test_byte_level_bpe_is_the_cause_of_replacement_characters():
    """The oracle behind the fix: a byte-level BPE on the same corpus has half-character pieces, and
    random sequences of them (what a factorised sampler produces early in training) decode to U+FFFD."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CJK, trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                     show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    bad = sum(text.count("\ufffd") for text in _sampled_texts(tok, list(tok.get_vocab().values()), n=20))
    assert bad > 20 * 5  # several per 64-piece sample, as the probe of issue 14 saw


@pytest.mark.slow
def test_scoring_text_with_unknown_pieces_warns_with_the_count(tiny):
    from textdiff import DiffusionLM
    from textdiff.config import load_recipe
    from textdiff.training.loop import train

    # a SentencePiece vocabulary too small for byte fallback: characters outside the corpus are <unk>
    recipe = load_recipe(raw=tiny(tokenizer={"train": "unigram", "vocab_size": 200}, train={"max_steps": 2, "eval_every": 2}))
    lm = DiffusionLM.from_pretrained(train(recipe))
    assert lm.tokenizer.unk_token == "<unk>"
    # Unigram fuses a run of unknown characters into one <unk>: "🦀🦀" and "☃" are two
    with pytest.warns(UserWarning, match=r"^2 token\(s\) of the scored text are '<unk>'"):
        lm.score(["The list 🦀🦀", "and ☃"], t_samples=2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # covered text: no warning
        lm.score(["The list of things."], t_samples=2)
