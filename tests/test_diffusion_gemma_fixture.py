"""The tiny DiffusionGemma fixture (tests/fixtures/published/diffusion_gemma/) is self-consistent:
transformers' own classes, loading the folder in its released layout, reproduce the logits and the
seeded ``generate`` outputs stored beside it by tests/fixtures/published/make_diffusion_gemma.py.
These are the targets textdiff's DiffusionGemma support will be held to."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

try:
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig
except ImportError:
    pytest.skip("this transformers has no models/diffusion_gemma (DiffusionGemma arrived in transformers 5.8)",
                allow_module_level=True)

from published_llm_helpers import FIXTURES, relative

FOLDER = FIXTURES / "diffusion_gemma"
EOS = (1, 6, 7)  # generation_config.json's eos_token_id
PAD = 0


@pytest.fixture(scope="module")
def model():
    return DiffusionGemmaForBlockDiffusion.from_pretrained(str(FOLDER), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def model64():
    """generate is recorded in float64 (see make_diffusion_gemma.py: in float32, near-equal entropies of
    a tiny random network order differently on different CPUs); the grouped expert matmul takes no
    float64, so the experts run in transformers' eager loop."""
    return DiffusionGemmaForBlockDiffusion.from_pretrained(str(FOLDER), dtype=torch.float64,
                                                           experts_implementation="eager").eval()


@pytest.fixture(scope="module")
def expected():
    return load_file(str(FOLDER / "expected.safetensors"))


def recorded_settings():
    with safe_open(str(FOLDER / "expected.safetensors"), "pt") as f:
        return json.loads(f.metadata()["generate"])


def test_folder_is_in_the_released_layout(model):
    config = json.loads((FOLDER / "config.json").read_text())
    text = config["text_config"]
    assert config["model_type"] == "diffusion_gemma" and config["canvas_length"] == 256
    assert config["architectures"] == ["DiffusionGemmaForBlockDiffusion"]
    assert "per_layer_config" not in text and text["num_experts"] == 4 and text["top_k_experts"] == 2
    # the full layer reads its head size and kv heads from the released global_* keys
    attention = model.model.decoder.layers[1].self_attn
    assert (attention.head_dim, attention.k_proj.out_features) == (text["global_head_dim"], text["global_head_dim"])
    assert attention.v_proj is None and model.model.decoder.layers[0].self_attn.v_proj is not None
    decoding = json.loads((FOLDER / "generation_config.json").read_text())
    assert decoding["sampler_config"] == {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1}
    assert (decoding["max_denoising_steps"], decoding["t_max"], decoding["t_min"]) == (48, 0.8, 0.4)
    assert tuple(decoding["eos_token_id"]) == EOS and decoding["pad_token_id"] == PAD
    with safe_open(str(FOLDER / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    # the encoder's text weights are the decoder's (tied); only its layer scalars are stored apart
    assert {n for n in names if n.startswith("model.encoder.language_model")} == {
        f"model.encoder.language_model.layers.{i}.layer_scalar" for i in range(2)}
    encoder, decoder = model.model.encoder.language_model, model.model.decoder
    assert encoder.layers[0].mlp.up_proj.weight is decoder.layers[0].mlp.up_proj.weight
    assert not torch.equal(encoder.layers[0].layer_scalar, decoder.layers[0].layer_scalar)


@pytest.mark.parametrize("name", ["logits", "logits_self_conditioning", "logits_self_conditioning_masked",
                                  "logits_padded"])
def test_logits_match_the_recording(model, expected, name):
    x = expected
    kwargs = dict(decoder_input_ids=x["canvas"])
    if name.startswith("logits_self_conditioning"):
        kwargs["self_conditioning_logits"] = x["self_conditioning_logits"]
    if name == "logits_self_conditioning_masked":
        kwargs["self_conditioning_mask"] = x["self_conditioning_mask"]
    prompt = x["prompt"]
    if name == "logits_padded":
        prompt, kwargs["attention_mask"] = x["padded_prompt"], x["padded_mask"]
        kwargs["decoder_attention_mask"] = torch.nn.functional.pad(x["padded_mask"], (0, x["canvas"].shape[1]),
                                                                   value=True)
    with torch.no_grad():
        logits = model(prompt, **kwargs).logits
    assert logits.dtype == torch.float32 and logits.shape == x[name].shape
    assert relative(logits, x[name]) < 1e-5


def test_recorded_logits_show_self_conditioning_and_its_row_mask(expected):
    """Self-conditioning changes the logits; a row masked off gets exactly the plain logits."""
    plain, cond, masked = expected["logits"], expected["logits_self_conditioning"], expected[
        "logits_self_conditioning_masked"]
    assert relative(cond, plain) > 0.1
    assert relative(masked[1], plain[1]) < 1e-6 and relative(masked[0], cond[0]) < 1e-6


def test_left_padding_is_invisible(model, expected):
    """The left-padded row (generate's positions: column indices, pads included) gives the logits of its
    unpadded prompt: RoPE sees only relative offsets and the pads are masked."""
    row = expected["padded_prompt"][1][expected["padded_mask"][1]][None]
    with torch.no_grad():
        alone = model(row, decoder_input_ids=expected["canvas"][1:]).logits
    assert relative(alone[0], expected["logits_padded"][1]) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(recorded_settings()))
def test_generate_matches_the_recording(model64, expected, name):
    model = model64
    setting = recorded_settings()[name]
    kwargs = dict(setting["kwargs"])
    if "entropy_bound" in kwargs:
        kwargs["sampler_config"] = EntropyBoundSamplerConfig(entropy_bound=kwargs.pop("entropy_bound"))
    prompt, mask = expected[f"prompt_{setting['prompt']}"], expected[f"prompt_{setting['prompt']}_mask"]
    saved, model.config.canvas_length = model.config.canvas_length, setting["canvas_length"]
    try:
        torch.manual_seed(setting["seed"])
        out = model.generate(prompt.clone(), attention_mask=mask.long(), **kwargs)
    finally:
        model.config.canvas_length = saved
    assert torch.equal(out.sequences, expected[f"generate_{name}"])
    assert torch.allclose(out.tokens_per_forward.float(), expected[f"generate_{name}_tokens_per_forward"])


@pytest.mark.parametrize("name", sorted(recorded_settings()))
def test_recorded_outputs_are_whole_canvases_padded_after_eos(expected, name):
    setting = recorded_settings()[name]
    prompt = expected[f"prompt_{setting['prompt']}"]
    out = expected[f"generate_{name}"]
    assert torch.equal(out[:, :prompt.shape[1]], prompt)
    new = out[:, prompt.shape[1]:]
    assert new.shape[1] % setting["canvas_length"] == 0 and new.shape[1] > 0
    for row in new.tolist():
        ends = [i for i, tok in enumerate(row) if tok in EOS]
        if ends:
            assert all(tok == PAD for tok in row[ends[0] + 1:])


def test_tokenizer_and_chat_template(expected):
    tok = AutoTokenizer.from_pretrained(str(FOLDER))
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2) and len(tok) == 64
    ids = tok.apply_chat_template([{"role": "user", "content": "w3 w4"}], add_generation_prompt=True, tokenize=True,
                                  return_dict=False)
    w3, w4 = tok.convert_tokens_to_ids(["w3", "w4"])
    assert ids == [2, 5, 11, w3, w4, 6, 5, 12]  # <bos> <|turn> user ... <turn|> <|turn> model
    assert expected["prompt_one"][0, :3].tolist() == [2, 5, 11]
