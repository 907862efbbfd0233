"""LLaDA-MoE checkpoints in their published layout, on transformers' Qwen3-MoE modules.

tests/fixtures/published/llada_moe/ was made ONCE by running the publisher's modeling_lladamoe.py
and LLaDA's generate.py on tiny random weights (make_llada_moe.py): a dense first layer, 4 experts
top-2, a shared expert, q/k norms and the router's expert bias, in the released layout (per-expert
tensors, sharded safetensors + index, config.json with its auto_map, a tiny tokenizer), with the
logits that code gave on fixed inputs and its greedy decoding. Nothing here runs a file from there.
"""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from textdiff.contexts import keep_tokens
from textdiff.errors import ConfigError
from textdiff.generation import generate
from textdiff.lm import DiffusionLM
from textdiff.models.cache import KVCache
from textdiff.models.published import detect_family

from published_llm_helpers import FIXTURES, fixture_expected as _expected, load_fixture as _load, relative as _relative


def _reload_scores_alike(lm, folder, fixture):
    """The converted ``folder`` reloads natively with bit-equal logits and scores as ``lm`` does."""
    again = DiffusionLM.from_pretrained(folder, device="cpu")
    e = _expected(fixture)
    with torch.no_grad():
        assert torch.equal(again.model(e["input_ids"]).logits, lm.model(e["input_ids"]).logits)
    texts = ["w1 w2 w3 w4", "w5 w6"]
    nelbo = lm.score(texts, t_samples=4)
    assert all(torch.isfinite(torch.tensor(nelbo))) and min(nelbo) > 0
    assert again.score(texts, t_samples=4) == pytest.approx(nelbo, rel=1e-6)
    return again



def _copy(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    (dst / "expected.safetensors").unlink()
    return dst


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def moe():
    return _load("llada_moe")


# ---- LLaDA-MoE -----------------------------------------------------------------------------------


def test_llada_moe_logits_match_the_publishers_code(moe):
    e = _expected("llada_moe")
    net = moe.model
    assert type(net).__name__ == "DiffusionQwen3MoeModel"
    assert detect_family(FIXTURES / "llada_moe").name == "llada_moe"
    assert all(not layer.self_attn.is_causal for layer in net.model.layers)
    dense, sparse = net.model.layers
    assert type(dense.mlp).__name__ == "Qwen3MoeMLP"  # moe_layer_freq[0] == 0
    assert sparse.mlp.experts.gate_up_proj.shape == (4, 32, 32) and sparse.mlp.shared_expert is not None
    assert float(sparse.mlp.gate.expert_bias.detach().abs().sum()) > 0  # the fixture's bias is random, not zero
    with torch.no_grad():
        logits = net(e["input_ids"]).logits
    assert logits.shape == e["logits"].shape
    assert _relative(logits, e["logits"]) <= 1e-5


def test_llada_moe_comes_up_with_its_tokens_sampler_and_blocks(moe):
    tok = moe.tokenizer
    assert tok.mask_token == "<|mdm_mask|>" and moe.process.mask_id == tok.mask_token_id == moe.model.config.mask_token_id
    assert tok.eos_token == "<|endoftext|>"
    assert moe.stop_token_ids == [tok.eos_token_id, tok.convert_tokens_to_ids("<|role_end|>")]
    cfg = moe.sampler_config
    assert (cfg.name, cfg.ordering, cfg.temperature) == ("confidence", "confidence", 0.0)
    assert moe.generation_defaults["block_size"] == 32


def test_llada_moe_decoding_matches_llada_generate_token_for_token(moe):
    """generate.py (steps=8, gen_length=16, block_length=8, low_confidence, temperature 0) against
    textdiff's loop with the family's default sampler."""
    e = _expected("llada_moe")
    out = generate(moe.model, moe.process, moe.make_sampler(), e["prompt"].tolist(), max_new_tokens=16, steps=8,
                   block_size=8, stop_at_eos=False)
    assert out.sequences[0].tolist() == e["greedy"].tolist()


def test_llada_moe_chat_prompt_gets_the_template(moe):
    msgs = [{"role": "user", "content": "w1 w2 w3"}]
    text = moe.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == "<role>HUMAN</role>w1 w2 w3<|role_end|><role>ASSISTANT</role>"
    texts, out = moe.generate([msgs], max_new_tokens=32, return_output=True)
    ids = moe.tokenizer(text, add_special_tokens=False)["input_ids"]
    ref = generate(moe.model, moe.process, moe.make_sampler(), [ids], max_new_tokens=32, steps=32, block_size=32,
                   pad_token_id=moe.tokenizer.pad_token_id, eos_token_id=moe.tokenizer.eos_token_id)
    assert out.sequences.tolist() == ref.sequences.tolist()
    assert isinstance(texts[0], str) and "HUMAN" not in texts[0]


def test_llada_moe_save_pretrained_reloads_natively_with_identical_logits_and_scores(moe, tmp_path):
    moe.save_pretrained(tmp_path / "converted")
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert config["model_type"] == "textdiff_qwen3_moe" and config["auto_map"]["AutoModel"] == "modeling_moe.DiffusionQwen3MoeModel"
    assert config["shared_expert_intermediate_size"] == 24 and config["router_expert_bias"] is True
    again = _reload_scores_alike(moe, tmp_path / "converted", "llada_moe")
    assert again.stop_token_ids == moe.stop_token_ids and again.generation_defaults == moe.generation_defaults


@pytest.mark.parametrize("name", ["llada_moe", "llada2"])
def test_bf16_loading_keeps_bf16_weights(name):
    lm = _load(name, dtype=torch.bfloat16)
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    e = _expected(name)
    with torch.no_grad():
        logits = lm.model(e["input_ids"]).logits.float()
    assert torch.isfinite(logits).all()
    assert _relative(logits, e["logits"]) < 0.1  # bf16 rounding (a near tie may route one token differently)


def test_llada_moe_full_cache_reused_for_an_unchanged_row_is_exact(moe):
    model = moe.model
    ids = torch.randint(0, 50, (2, 14), generator=torch.Generator().manual_seed(0))
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[1, :3] = False  # left padding
    pos = (valid.long().cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        cache = KVCache.for_model(model)
        full = model(ids, attention_mask=valid.long(), position_ids=pos, cache=cache, update_cache=True).logits
        kept = keep_tokens(cache, torch.cat([torch.arange(0, 8), torch.arange(12, 14)]))
        win = model(ids[:, 8:12], attention_mask=valid[:, 8:12].long(), position_ids=pos[:, 8:12], cache=kept).logits
    assert torch.allclose(win, full[:, 8:12], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_llada_moe_ragged_batches_are_batch_invariant_with_caches(moe, cache):
    prompts = [[5, 9, 11, 3, 7, 2, 8, 1], [4, 6, 10]]
    s = moe.make_sampler({"name": "threshold", "threshold": 0.3, "temperature": 0.0})
    kw = dict(max_new_tokens=16, steps=8, block_size=8, use_cache=cache, stop_at_eos=False, seed=0)
    batched = generate(moe.model, moe.process, s, prompts, **kw)
    for b, p in enumerate(prompts):
        assert generate(moe.model, moe.process, s, [p], **kw).generated[0] == batched.generated[b]


def test_llada_moe_is_found_under_either_model_type(tmp_path):
    folder = _copy("llada_moe", tmp_path)
    _edit_config(folder, model_type="lladamoe")
    assert detect_family(folder).name == "llada_moe"
    assert type(DiffusionLM.from_pretrained(folder, device="cpu").model).__name__ == "DiffusionQwen3MoeModel"


def test_llada_moe_mask_id_comes_from_config_then_tokenizer(tmp_path):
    """The released config.json has no mask id: the tokenizer's mask token, else its <|mdm_mask|>;
    a mask_token_id in config.json wins."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(FIXTURES / "llada_moe"))
    tok.mask_token = None
    lm = DiffusionLM.from_pretrained(FIXTURES / "llada_moe", device="cpu", tokenizer=tok)
    assert lm.process.mask_id == tok.convert_tokens_to_ids("<|mdm_mask|>") == lm.tokenizer.mask_token_id
    folder = _copy("llada_moe", tmp_path)
    _edit_config(folder, mask_token_id=5)
    lm = DiffusionLM.from_pretrained(folder, device="cpu")
    assert lm.process.mask_id == lm.model.config.mask_token_id == lm.tokenizer.mask_token_id == 5


def test_llada_moe_bad_folders_give_one_line_errors(tmp_path):
    folder = _copy("llada_moe", tmp_path)
    shard = sorted(folder.glob("model-0000*.safetensors"))[-1]
    data = load_file(str(shard))
    shard.unlink()
    with pytest.raises(ConfigError, match="lacks 1 of 2 weight shards") as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value)
    for key in [k for k in data if ".experts." in k or k.endswith("q_proj.weight")]:
        bad = dict(data)
        bad[key] = data[key][:-1]
        save_file(bad, str(shard))
        with pytest.raises(ConfigError, match="shape") as err:
            DiffusionLM.from_pretrained(folder, device="cpu")
        assert "\n" not in str(err.value) and key.split(".")[-2] in str(err.value)
    save_file({k: v for k, v in data.items() if ".shared_expert." not in k}, str(shard))
    with pytest.raises(ConfigError, match="lacks .* tensor") as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "shared_expert" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key,value", [("clip_qkv", 8.0), ("partial_rotary_factor", 0.5), ("qk_layernorm", False),
                                       ("moe_layer_freq", [1]), ("moe_router_score_function", "sigmoid"),
                                       ("rope_scaling", {"rope_type": "yarn", "factor": 2.0})])
def test_unsupported_llada_moe_options_are_refused(tmp_path, key, value):
    folder = _copy("llada_moe", tmp_path)
    _edit_config(folder, **{key: value})
    with pytest.raises(ConfigError, match=key) as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value)


# ---- LLaDA 2.0 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llada2():
    return _load("llada2")


def test_llada2_logits_match_the_publishers_code_under_its_block_mask(llada2):
    """The fixture's logits were taken with the 4-D block mask the publisher's generate builds
    (blocks of 32); textdiff's denoiser builds the same mask from the positions."""
    e = _expected("llada2")
    net = llada2.model
    assert type(net).__name__ == "DiffusionGlm4MoeModel"
    assert detect_family(FIXTURES / "llada2").name == "llada2"
    assert (net.config.attention, net.config.block_size) == ("block_causal", 32)
    dense, sparse = net.model.layers
    assert type(dense.mlp).__name__ == "Glm4MoeMLP" and sparse.mlp.experts.gate_up_proj.shape == (4, 32, 32)
    assert dense.self_attn.q_proj.bias is not None and dense.self_attn.o_proj.bias is not None
    with torch.no_grad():
        logits = net(e["input_ids"]).logits
    assert _relative(logits, e["logits"]) <= 1e-5


def test_llada2_attention_is_block_causal(llada2):
    """Changing block 2 leaves block 1's logits unchanged; changing block 1 changes block 2's."""
    ids = torch.randint(0, 58, (1, 64), generator=torch.Generator().manual_seed(3))
    later, earlier = ids.clone(), ids.clone()
    later[0, 40:50] = 7
    earlier[0, 5:10] = 7
    with torch.no_grad():
        base, a, b = (llada2.model(x).logits for x in (ids, later, earlier))
    assert torch.equal(a[:, :32], base[:, :32]) and not torch.allclose(a[:, 32:], base[:, 32:])
    assert not torch.allclose(b[:, 32:], base[:, 32:])


def test_llada2_comes_up_with_its_tokens_process_and_sampler(llada2):
    tok = llada2.tokenizer
    assert tok.mask_token == "<|mask|>" and llada2.process.mask_id == tok.mask_token_id == llada2.model.config.mask_token_id
    assert llada2.stop_token_ids == [tok.eos_token_id, tok.convert_tokens_to_ids("<|role_end|>")]
    assert (llada2.process.config.name, llada2.process.block_size) == ("block", 32)
    cfg = llada2.sampler_config
    assert (cfg.name, cfg.threshold, cfg.temperature, cfg.min_commit) == ("threshold", 0.95, 0.0, "even_split")
    assert llada2.generation_defaults == {"block_size": 32, "blocks_from": "sequence_start"}


@pytest.mark.parametrize("cache", ["none", "exact"])
@pytest.mark.parametrize("mode,threshold", [("default", None), ("threshold", 0.15)])
def test_llada2_decoding_matches_the_publishers_generate_token_for_token(llada2, mode, threshold, cache):
    """LLaDA2MoeModelLM.generate(block_length=32, steps=32, gen_length=64, temperature 0, threshold
    0.95 / 0.15) on a 32-token prompt, against textdiff's loop with and without the exact KV cache."""
    e = _expected("llada2")
    sampler = llada2.make_sampler(None, threshold=threshold)
    out = generate(llada2.model, llada2.process, sampler, e["prompt"].tolist(), max_new_tokens=64, steps=64,
                   block_size=32, use_cache=cache, eos_token_id=llada2.tokenizer.eos_token_id)
    assert out.generated[0] == e[mode].tolist()


@pytest.mark.parametrize("cache", ["none", "exact"])
@pytest.mark.parametrize("mode,threshold", [("steps8_default", None), ("steps8_threshold", 0.15)])
def test_llada2_with_fewer_steps_than_the_block_matches_the_publisher(llada2, mode, threshold, cache):
    """steps=8 per block of 32: the publisher commits at least 4 per step (its even split), and so does
    the default sampler's ``min_commit = "even_split"``; Fast-dLLM's floor of one departs from it."""
    e = _expected("llada2")
    kw = dict(max_new_tokens=64, steps=16, block_size=32, use_cache=cache, eos_token_id=llada2.tokenizer.eos_token_id)
    out = generate(llada2.model, llada2.process, llada2.make_sampler(None, threshold=threshold), e["prompt"].tolist(), **kw)
    assert out.generated[0] == e[mode].tolist()
    if mode == "steps8_default":
        one = llada2.make_sampler(None, min_commit="one")
        assert generate(llada2.model, llada2.process, one, e["prompt"].tolist(), **kw).generated[0] != e[mode].tolist()


def test_llada2_default_generate_is_the_cached_block_decoding(llada2):
    e = _expected("llada2")
    prompt = llada2.tokenizer.decode(e["prompt"][0].tolist())
    texts, out = llada2.generate([prompt], max_new_tokens=64, return_output=True)
    assert out.sequences[0, 32:].tolist() == e["default"].tolist()
    assert isinstance(texts[0], str)


def _answer(tokens, stops):
    cut = [i for i, t in enumerate(tokens) if t in stops]
    return tokens[: cut[0]] if cut else tokens


@pytest.mark.parametrize("cache", ["none", "exact"])
def test_llada2_generate_counts_blocks_from_the_sequence_start(llada2, cache):
    """A 45-token prompt: the publisher's first decoded block holds its last 13 tokens. DiffusionLM.generate
    decodes that block with the tail frozen; batched with a 32-token prompt, each row is its own
    publisher answer (the answers end at a stop token, as DiffusionLM.generate cuts them)."""
    e = _expected("llada2")
    decode = llada2.tokenizer.decode
    prompts = [decode(e["short_prompt"][0].tolist()), decode(e["prompt"][0].tolist())]
    _, out = llada2.generate(prompts, max_new_tokens=40, return_output=True, use_cache=cache)
    stops = llada2.stop_token_ids
    assert out.generated[0] == _answer(e["short_default"].tolist(), stops)
    assert out.generated[1] == _answer(e["default"].tolist()[:40], stops)
    _, alone = llada2.generate(prompts[:1], max_new_tokens=40, return_output=True, use_cache=cache)
    assert alone.generated[0] == out.generated[0]
    _, eight = llada2.generate(prompts, max_new_tokens=40, steps=16, return_output=True, use_cache=cache)  # 8 per block
    assert eight.generated[0] == _answer(e["short_steps8"].tolist(), stops)
    assert eight.generated[1] == _answer(e["steps8_default"].tolist()[:40], stops)


def test_llada2_save_pretrained_reloads_natively_and_scores(llada2, tmp_path):
    llada2.save_pretrained(tmp_path / "converted")
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert config["model_type"] == "textdiff_glm4_moe" and (config["attention"], config["block_size"]) == ("block_causal", 32)
    again = _reload_scores_alike(llada2, tmp_path / "converted", "llada2")
    assert again.process.config.name == "block" and again.sampler_config == llada2.sampler_config




def test_llada2_bad_folders_give_one_line_errors(tmp_path):
    folder = _copy("llada2", tmp_path)
    shard = sorted(folder.glob("model-0000*.safetensors"))[-1]
    data = load_file(str(shard))
    shard.unlink()
    with pytest.raises(ConfigError, match="lacks 1 of 2 weight shards") as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value)
    for key in [k for k in data if k.endswith(("query_key_value.weight", "experts.1.up_proj.weight"))][:2]:
        bad = dict(data)
        bad[key] = data[key][:-1]
        save_file(bad, str(shard))
        with pytest.raises(ConfigError, match="shape") as err:
            DiffusionLM.from_pretrained(folder, device="cpu")
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("key,value", [("norm_head", True), ("use_sliding_window", True), ("n_group", 3),
                                       ("num_shared_experts", None), ("num_key_value_heads", 0),
                                       ("rope_scaling", {"rope_type": "yarn", "factor": 2.0})])
def test_unsupported_llada2_options_are_refused(tmp_path, key, value):
    folder = _copy("llada2", tmp_path)
    _edit_config(folder, **{key: value})
    with pytest.raises(ConfigError, match=key) as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value) and "llada2_moe" in str(err.value)


def test_block_causal_llama_denoiser_hides_later_blocks():
    """The structural mask is the denoisers' own (shared by LLaDA adapted for BD3-LM fine-tuning)."""
    from textdiff.models.modeling_bidirectional import DiffusionLlamaConfig, DiffusionLlamaModel

    torch.manual_seed(0)
    cfg = DiffusionLlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2, mask_token_id=39, attention="block_causal", block_size=4)
    net = DiffusionLlamaModel(cfg).eval()
    ids = torch.randint(0, 39, (2, 12))
    changed = ids.clone()
    changed[:, 8:] = 5
    with torch.no_grad():
        a, b = net(ids).logits, net(changed).logits
        cache = KVCache.for_model(net)
        net(ids[:, :8], cache=cache, update_cache=True)
        tail = net(ids[:, 8:], position_ids=torch.arange(8, 12).expand(2, 4), cache=cache).logits
    assert torch.equal(a[:, :8], b[:, :8]) and not torch.allclose(a[:, 8:], b[:, 8:])
    assert torch.allclose(tail, a[:, 8:], atol=1e-5)
