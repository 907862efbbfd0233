"""Hugging Face integration: Auto classes, tokenizer files, external denoisers (parity, training,
sampling, scoring, resume) and one-line errors for folders textdiff cannot use."""
import json
import string
from pathlib import Path

import pytest
import torch
from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM,
                          BertTokenizerFast, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, ModernBertConfig,
                          ModernBertForMaskedLM, PretrainedConfig, PreTrainedModel, RobertaConfig, RobertaForMaskedLM)
from transformers.modeling_outputs import MaskedLMOutput

import textdiff.models  # noqa: F401  (import textdiff: the Auto classes learn its networks when transformers loads them)
from textdiff.config import DenoiserConfig, load_recipe
from textdiff.errors import ConfigError, TextDiffError
from textdiff.lm import DiffusionLM
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff.models.external import ExternalDenoiser, build_external_denoiser
from textdiff import build_process
from textdiff.tokenization import train_bpe, wrap_fast
from textdiff.training.loop import train


def tiny_bert_folder(path: Path, seed: int = 0) -> Path:
    """A character-level WordPiece tokenizer and a random 1-layer BERT masked LM, saved locally."""
    path.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(path)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # resume is exact without dropout
    torch.manual_seed(seed)
    BertForMaskedLM(cfg).save_pretrained(path)
    return path


def one_line(err) -> bool:
    return "\n" not in str(err.value) and len(str(err.value)) < 400


# ---- textdiff checkpoints in the Hugging Face layout ----------------------------------------------


def test_textdiff_folder_loads_with_auto_classes_and_auto_tokenizer(tmp_path):
    tok = wrap_fast(train_bpe(["the quick brown fox jumps over the lazy dog"] * 20, vocab_size=300))
    model = TextDiffModel(TextDiffConfig(vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2,
                                         max_position_embeddings=32, mask_token_id=tok.mask_token_id)).eval()
    process = build_process("masked", vocab_size=len(tok), mask_id=tok.mask_token_id)
    DiffusionLM(model, tok, process, seq_len=32).save_pretrained(tmp_path / "m")
    folder = tmp_path / "m"
    saved = json.loads((folder / "config.json").read_text())
    assert saved["model_type"] == "textdiff" and "AutoModel" in saved["auto_map"]  # for trust_remote_code users
    ids = torch.tensor([[1, 5, 7, tok.mask_token_id]])
    assert AutoConfig.from_pretrained(folder).model_type == "textdiff"
    for auto in (AutoModel, AutoModelForMaskedLM):
        again = auto.from_pretrained(folder).eval()
        assert isinstance(again, TextDiffModel)  # the package's class (textdiff is imported), not the folder's code
        assert torch.equal(again(ids).logits, model(ids).logits)
    tok2 = AutoTokenizer.from_pretrained(folder)
    assert tok2.mask_token_id == tok.mask_token_id and tok2.eos_token_id == tok.eos_token_id
    assert tok2("the lazy dog")["input_ids"] == tok("the lazy dog")["input_ids"]
    assert hasattr(DiffusionLM, "push_to_hub")


# ---- external denoisers: parity ------------------------------------------------------------------


def test_bert_roberta_and_modernbert_wrappers_give_the_hf_models_logits(tmp_path):
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=40)).eval()
    roberta = RobertaForMaskedLM(RobertaConfig(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=64, max_position_embeddings=42, pad_token_id=1)).eval()
    modernbert = ModernBertForMaskedLM(ModernBertConfig(vocab_size=90, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                        num_attention_heads=2, max_position_embeddings=40, pad_token_id=0,
                                                        sep_token_id=3, cls_token_id=2, bos_token_id=2, eos_token_id=3)).eval()
    ids = torch.randint(3, 90, (3, 12))
    pad = torch.ones(3, 12, dtype=torch.long)
    pad[0, :4] = 0  # left padding as generate() lays it out
    positions = (pad.cumsum(-1) - 1).clamp_min(0)  # textdiff positions: 0 at the first real token
    for hf, offset in ((bert, 0), (roberta, 2), (modernbert, 0)):
        wrapper = ExternalDenoiser(hf, DenoiserConfig(path="unused"), 90, 4).eval()
        assert wrapper.position_offset == offset and wrapper.config.max_position_embeddings == 40
        alone = wrapper(ids[:1, 4:]).logits  # the padded row without its padding
        assert torch.allclose(wrapper(ids, attention_mask=pad, position_ids=positions).logits[:1, 4:], alone, atol=1e-5)
        assert torch.equal(wrapper(ids).logits, hf(ids).logits)
        got = wrapper(ids, attention_mask=pad, position_ids=positions).logits
        assert torch.equal(got, hf(ids, attention_mask=pad, position_ids=positions + offset).logits)
        if offset:  # RoBERTa numbers positions from padding_idx + 1: ours map onto its default numbering
            assert torch.equal(wrapper(ids, position_ids=torch.arange(12).expand(3, 12)).logits, hf(ids).logits)
        with pytest.raises(TextDiffError, match="no KV cache"):
            wrapper(ids, cache=object())


def test_causal_lm_adapted_with_the_shifted_logits_of_dream():
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=2)).eval()
    ids = torch.randint(3, 59, (2, 9))
    causal = ExternalDenoiser(hf, DenoiserConfig(path="x", kind="causal", full_attention=False), 60, 59).eval()
    ref = hf(ids).logits
    out = causal(ids).logits
    assert torch.equal(out[:, 1:], ref[:, :-1]) and torch.equal(out[:, 0], ref[:, 0])  # position i read at i - 1
    full = ExternalDenoiser(hf, DenoiserConfig(path="x", kind="causal", full_attention=True), 60, 59).eval()
    changed = ids.clone()
    changed[:, -1] = 3 + (changed[:, -1] - 2) % 56
    assert not torch.allclose(full(ids).logits[:, 2], full(changed).logits[:, 2])  # attends to later tokens
    assert torch.equal(causal(ids).logits[:, 2], causal(changed).logits[:, 2])  # the causal mask does not
    pad = torch.ones(2, 9, dtype=torch.long)
    pad[0, :3] = 0
    padded = full(ids, attention_mask=pad, position_ids=(pad.cumsum(-1) - 1).clamp_min(0)).logits
    alone = full(ids[:1, 3:]).logits
    assert torch.allclose(padded[0, 4:], alone[0, 1:], atol=1e-5)  # left padding is invisible (after the shift)


# ---- external denoisers: training, sampling, scoring, resume -------------------------------------


def metrics(run):
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_bert_denoiser_trains_resumes_samples_and_scores(tiny, tmp_path):
    bert = tiny_bert_folder(tmp_path / "bert")
    raw = tiny(denoiser={"path": str(bert)}, train={"max_steps": 6, "eval_every": 3, "save_every": 3})
    raw["tokenizer"] = {"path": str(bert)}
    full = load_recipe(raw={**raw, "output_dir": str(tmp_path / "full")})
    final = train(full)
    cut = load_recipe(raw={**raw, "output_dir": str(tmp_path / "cut")})
    train(cut, stop_at=3)
    train(cut, resume=True)  # the checkpoint holds BERT's own key names: the wrapper loads them
    a = [m["train_loss"] for m in metrics(tmp_path / "full") if "train_loss" in m]
    b = [m["train_loss"] for m in metrics(tmp_path / "cut") if "train_loss" in m]
    assert a == pytest.approx(b, rel=1e-5)

    assert json.loads((final / "config.json").read_text())["model_type"] == "bert"
    plain = AutoModelForMaskedLM.from_pretrained(final).eval()  # an ordinary BERT folder
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.mask_token == "[MASK]"
    lm = DiffusionLM.from_pretrained(final, device="cpu")
    assert isinstance(lm.model, ExternalDenoiser) and lm.process.mask_id == tok.mask_token_id
    ids = torch.tensor([tok("a list")["input_ids"]])
    assert torch.equal(lm.model(ids).logits, plain(ids).logits)
    trained = plain.bert.embeddings.word_embeddings.weight
    start = BertForMaskedLM.from_pretrained(bert).bert.embeddings.word_embeddings.weight
    assert not torch.equal(trained, start)  # the run changed BERT's weights
    texts, out = lm.generate(["a list"], max_new_tokens=6, steps=6, seed=0, return_output=True)
    assert texts[0].startswith("a list") and tok.mask_token_id not in out.sequences.tolist()[0]
    assert lm.generate(["a list"], max_new_tokens=6, steps=6, seed=0) == texts  # seeded
    nelbo = lm.score(["a test"], t_samples=4)[0]
    assert 0 < nelbo < 1e4


# ---- bad input ------------------------------------------------------------------------------------


def test_unsupported_architectures_raise_one_line_errors(tiny, tmp_path):
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(gpt2)
    (gpt2 / "textdiff.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds a 'gpt2' model") as e:
        DiffusionLM.from_pretrained(gpt2)
    assert one_line(e)
    bert = tiny_bert_folder(tmp_path / "bert")
    tok = AutoTokenizer.from_pretrained(bert)
    process = build_process("masked", vocab_size=len(tok), mask_id=tok.mask_token_id)
    with pytest.raises(ConfigError, match="does not support the 'gpt2' architecture") as e:
        build_external_denoiser({"path": str(gpt2), "kind": "masked_lm"}, tok, process)
    assert one_line(e)
    with pytest.raises(ConfigError, match="no config.json") as e:
        build_external_denoiser({"path": str(tmp_path)}, tok, process)
    assert one_line(e)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(ConfigError, match="cannot read the model config") as e:
        build_external_denoiser({"path": str(tmp_path / "odd")}, tok, process)
    assert one_line(e)
    with pytest.raises(ConfigError, match="holds a 'gpt2' model") as e:
        train(load_recipe(raw=tiny(train={"max_steps": 1, "init_from": str(gpt2)})))
    assert one_line(e)


# ---- LLaDA-style and causal networks through a recipe ------------------------------------------


class TinyBidirectionalConfig(PretrainedConfig):
    model_type = "tiny-bidirectional-test"

    def __init__(self, vocab_size=300, hidden_size=32, max_position_embeddings=64, **kwargs):
        self.vocab_size, self.hidden_size, self.max_position_embeddings = vocab_size, hidden_size, max_position_embeddings
        super().__init__(**kwargs)


class TinyBidirectionalLM(PreTrainedModel):
    """Stands in for LLaDA's remote code: AutoModel, bidirectional, forward(input_ids, attention_mask) -> logits."""

    config_class = TinyBidirectionalConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.pos = torch.nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layer = torch.nn.TransformerEncoderLayer(config.hidden_size, 2, 64, dropout=0.0, batch_first=True)
        self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids) + self.pos(torch.arange(input_ids.shape[1]))
        pad = None if attention_mask is None else ~attention_mask.bool()
        return MaskedLMOutput(logits=self.lm_head(self.layer(h, src_key_padding_mask=pad)))


def _tokenizer_without_mask(extra):
    """A byte-level BPE with EOS and PAD but no [MASK], like most causal LMs' tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from textdiff.corpus import embedded_documents
    from textdiff.tokenization import EOS, PAD

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(list(embedded_documents()[:40]), trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS, pad_token=PAD)
    assert tok.mask_token is None
    tok.add_special_tokens({"additional_special_tokens": extra})
    return tok


@pytest.mark.slow
def test_llada_style_and_causal_networks_train_and_sample_through_recipes(tiny, tmp_path):
    AutoConfig.register("tiny-bidirectional-test", TinyBidirectionalConfig, exist_ok=True)
    AutoModel.register(TinyBidirectionalConfig, TinyBidirectionalLM, exist_ok=True)
    llada = tmp_path / "llada"
    tok = _tokenizer_without_mask(["<|mdm_mask|>"])
    tok.save_pretrained(llada)
    TinyBidirectionalLM(TinyBidirectionalConfig(vocab_size=len(tok))).save_pretrained(llada)
    gpt = tmp_path / "causal"
    tok2 = _tokenizer_without_mask([])
    tok2.save_pretrained(gpt)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok2), n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(gpt)

    for name, denoiser, mask in (("llada", {"path": str(llada), "kind": "bidirectional", "mask_token": "<|mdm_mask|>"}, "<|mdm_mask|>"),
                                 ("causal", {"path": str(gpt), "kind": "causal"}, "[MASK]")):
        raw = tiny(output_dir=str(tmp_path / f"run-{name}"), denoiser=denoiser, train={"max_steps": 3, "eval_every": 3})
        raw["tokenizer"] = {"path": denoiser["path"]}
        final = train(load_recipe(raw=raw))
        lm = DiffusionLM.from_pretrained(final, device="cpu")
        assert lm.tokenizer.mask_token == mask and lm.process.mask_id == lm.tokenizer.convert_tokens_to_ids(mask)
        assert isinstance(lm.model, ExternalDenoiser) and lm.model.spec.kind == denoiser["kind"]
        if name == "llada":  # the model's own mask token: the vocabulary did not grow
            assert lm.model.config.vocab_size == len(tok)
        else:  # a causal LM gains a [MASK] token: its embeddings grew by one and were saved so
            assert lm.model.config.vocab_size == len(tok2) + 1 == json.loads((final / "config.json").read_text())["vocab_size"]
        texts, out = lm.generate(["The"], max_new_tokens=5, steps=5, seed=0, return_output=True)
        assert texts[0].startswith("The") and lm.process.mask_id not in out.sequences[0].tolist()


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:  # records what would go to the hub (tests never touch the network)
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
            calls["repo"] = (repo_id, private, exist_ok)
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message, revision=None):
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    tok = wrap_fast(train_bpe(["some text to train on"] * 10, vocab_size=280))
    model = TextDiffModel(TextDiffConfig(vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=16))
    lm = DiffusionLM(model, tok, build_process("masked", vocab_size=len(tok), mask_id=tok.mask_token_id), seq_len=16)
    url = lm.push_to_hub("me/tiny-mdlm", private=True, token="t")
    assert url == "https://huggingface.co/me/tiny-mdlm" and calls["repo"] == ("me/tiny-mdlm", True, True)
    assert {"config.json", "model.safetensors", "textdiff.json", "tokenizer.json", "tokenizer_config.json", "README.md",
            "configuration_textdiff.py", "modeling_textdiff.py"} <= set(calls["files"])
