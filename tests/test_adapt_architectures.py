"""Which transformers causal LMs take a custom 4-D mask (textdiff.adapt.architectures), on tiny random models."""
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from textdiff.adapt.architectures import check_adaptable, config_problems, mask_problem, sliding_window
from textdiff.errors import IncompatibleError

V = 64
SMALL = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
FAMILIES = {  # model_type: extra config; windows are wider than the rows here
    "llama": {}, "qwen2": {}, "qwen3": {"head_dim": 8}, "gemma": {"head_dim": 8},
    "gemma2": {"head_dim": 8, "sliding_window": 64}, "gemma3_text": {"head_dim": 8, "sliding_window": 64},
    "mistral": {"sliding_window": 64}, "phi3": {}, "olmo2": {},
    "gpt_neox": {"num_key_value_heads": None},
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64},
}
EAGER_ONLY = {"gemma2"}  # transformers refuses SDPA for Gemma 2 (attention soft-capping)


def tiny(model_type, impl="sdpa", **extra):
    kw = {**SMALL, **FAMILIES.get(model_type, {}), **extra}
    if model_type == "gpt2":
        kw = {k: v for k, v in kw.items() if k in ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions")}
        kw.update(bos_token_id=1, eos_token_id=2)
    kw = {k: v for k, v in kw.items() if v is not None}
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **kw)
    return AutoModelForCausalLM.from_config(config, attn_implementation=impl)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_family_honours_a_custom_mask(model_type, impl):
    if impl == "sdpa" and model_type in EAGER_ONLY:
        pytest.skip("transformers offers this family no SDPA path")
    model = tiny(model_type, impl)
    assert mask_problem(model, block_layout=True) is None
    check_adaptable(model, seq_len=32, target="block")
    assert model.training  # the probe restores the mode it found


def test_sliding_windows_are_found():
    assert sliding_window(AutoConfig.for_model("llama")) is None
    assert sliding_window(AutoConfig.for_model("qwen2")) is None  # use_sliding_window is off by default
    assert sliding_window(AutoConfig.for_model("qwen2", use_sliding_window=True, sliding_window=128,
                                               max_window_layers=0)) == 128
    assert sliding_window(AutoConfig.for_model("mistral", sliding_window=256)) == 256
    assert sliding_window(AutoConfig.for_model("gemma3_text", sliding_window=512)) == 512


def test_short_windows_are_refused_with_the_fix():
    model = tiny("mistral", sliding_window=16)
    assert config_problems(model.config, seq_len=16) == []
    with pytest.raises(IncompatibleError, match=r"sliding_window=16.*data.seq_len=32; use data.seq_len <= 16") as err:
        check_adaptable(model, seq_len=32)
    assert "\n" not in str(err.value) and "'mistral'" in str(err.value)


def test_a_short_window_really_changes_the_logits():
    """Why the refusal: past the window, a custom full-causal mask is not what the model computes."""
    from textdiff.adapt.attention import additive_mask

    model = tiny("mistral", sliding_window=4).eval()
    ids = torch.arange(12)[None] % V
    with torch.no_grad():
        native = model(ids).logits
        custom = model(ids, attention_mask=additive_mask(torch.ones(12, 12, dtype=torch.bool).tril())).logits
    assert (native - custom).abs().max() > 1e-3


def test_kernels_without_a_4d_mask_are_refused():
    config = AutoConfig.for_model("llama")
    config._attn_implementation = "flash_attention_2"
    assert "attn_implementation='sdpa'" in config_problems(config, 64)[0]
    assert "encoder-decoder" in config_problems(AutoConfig.for_model("t5"), 64)[0]


class CausalOnly(LlamaForCausalLM):
    """A model that drops any mask it is given (what the probe must catch)."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return super().forward(input_ids=input_ids, **kwargs)


class NoPositions(torch.nn.Module):
    """A causal LM whose forward takes no position_ids."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_probe_catches_a_model_that_ignores_the_mask():
    model = CausalOnly(LlamaConfig(**SMALL))
    assert "stays causal" in mask_problem(model)
    with pytest.raises(IncompatibleError, match="cannot adapt the 'llama' model to diffusion: a full 4-D mask"):
        check_adaptable(model, 32)
    wrapped = NoPositions(LlamaForCausalLM(LlamaConfig(**SMALL)))
    assert mask_problem(wrapped) is None
    assert "position_ids" in mask_problem(wrapped, block_layout=True)
