"""Gradient checkpointing recomputes each layer in backward and gives the same gradients as
training without it: the textdiff transformer (with dropout), an external Hugging Face denoiser,
and LoRA adapters on a frozen network."""
import copy

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from textdiff.config import DenoiserConfig
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff.models.checkpointing import enable_gradient_checkpointing
from textdiff.models.external import ExternalDenoiser


def grads_and_layer_calls(model, ids, t, inner_type, seed=0):
    """(gradients by name, forward calls of the first ``inner_type`` module, inside the first layer)."""
    calls = []
    layer = next(m for m in model.modules() if type(m).__name__ == inner_type)
    hook = layer.register_forward_pre_hook(lambda *a: calls.append(1))
    model.train()
    torch.manual_seed(seed)  # the same dropout masks in both runs
    logits = model(ids, t=t).logits  # [B, L, V]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())
    loss.backward()
    hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads, len(calls)


def assert_same(a, b):
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7, msg=name)


def test_textdiff_transformer_with_dropout_gets_the_same_gradients():
    torch.manual_seed(0)
    model = TextDiffModel(TextDiffConfig(vocab_size=60, hidden_size=32, num_layers=2, num_heads=2, cond_dim=16,
                                         time_conditioning=True, dropout=0.1))
    ids, t = torch.randint(0, 60, (3, 12)), torch.rand(3)
    plain = copy.deepcopy(model)
    want, calls = grads_and_layer_calls(plain, ids, t, "Attention")
    assert enable_gradient_checkpointing(model) == ["Block"]
    got, calls_gc = grads_and_layer_calls(model, ids, t, "Attention")
    assert calls == 1 and calls_gc == 2  # the layer ran again in backward
    assert_same(want, got)
    with torch.no_grad():  # evaluation and cached decoding are untouched
        model.eval()
        torch.testing.assert_close(model(ids, t=t).logits, plain.eval()(ids, t=t).logits)


def bert_denoiser(seed=0):
    torch.manual_seed(seed)
    hf = BertForMaskedLM(BertConfig(vocab_size=70, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.1))
    return ExternalDenoiser(hf, DenoiserConfig(path="unused"), 70, 4)


def test_external_hf_denoiser_and_lora_adapters_get_the_same_gradients():
    pytest.importorskip("peft")
    from textdiff.lora import apply_lora

    ids = torch.randint(5, 70, (2, 10))
    want, calls = grads_and_layer_calls(bert_denoiser(), ids, None, "BertAttention")
    model = bert_denoiser()
    assert enable_gradient_checkpointing(model) == ["BertLayer"]
    got, calls_gc = grads_and_layer_calls(model, ids, None, "BertAttention")
    assert calls == 1 and calls_gc == 2
    assert_same(want, got)

    def adapted(gc):
        model = apply_lora(bert_denoiser(), {"r": 2, "alpha": 4, "target_modules": ["query", "value"]})
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:  # B = 0 at the start would hide a wrong gradient of A
                    p.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(n)))
        if gc:
            enable_gradient_checkpointing(model)
        return model

    want, _ = grads_and_layer_calls(adapted(False), ids, None, "BertAttention")
    got, calls_gc = grads_and_layer_calls(adapted(True), ids, None, "BertAttention")
    assert calls_gc == 2 and all("lora_" in n for n in got)  # only adapters train, through frozen layers
    assert_same(want, got)


FIXTURES = __import__("pathlib").Path(__file__).resolve().parent / "fixtures" / "published"


@pytest.mark.parametrize("family", [f for f in ("llada", "dream") if (FIXTURES / f / "config.json").is_file()])
def test_native_published_denoisers_get_the_same_gradients(family):
    """LLaDA / Dream on transformers' Llama / Qwen2 layers: transformers' own checkpointing, made
    non-reentrant, recomputes every decoder layer and leaves the gradients unchanged."""
    from textdiff.lm import DiffusionLM

    def model():
        return DiffusionLM.from_pretrained(str(FIXTURES / family)).model

    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    plain, checkpointed = model(), model()
    inner = "LlamaAttention" if family == "llada" else "Qwen2Attention"
    want, calls = grads_and_layer_calls(plain, ids, None, inner)
    layers = enable_gradient_checkpointing(checkpointed)
    assert layers == ["LlamaDecoderLayer" if family == "llada" else "Qwen2DecoderLayer"]
    got, calls_gc = grads_and_layer_calls(checkpointed, ids, None, inner)
    assert calls == 1 and calls_gc == 2
    assert_same(want, got)
