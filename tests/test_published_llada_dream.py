"""LLaDA and Dream checkpoints in their published layout, on transformers' Llama / Qwen2 modules.

The fixtures under tests/fixtures/published/{llada,dream}/ were made ONCE by running the
publishers' own modeling and generation code on tiny random weights (make_llada.py /
make_dream.py); they hold the checkpoint as released (sharded safetensors + index + config.json
with its auto_map + a tiny tokenizer) and what that code gave: logits on fixed inputs and its
greedy decodings. Nothing here runs a file from those folders.
"""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from textdiff.contexts import keep_tokens
from textdiff.dataclass_io import to_dict
from textdiff.errors import ConfigError
from textdiff.generation import generate
from textdiff.lm import DiffusionLM
from textdiff.models.cache import KVCache

from published_llm_helpers import FIXTURES, fixture_expected as _expected, load_fixture as _load, relative as _relative


@pytest.fixture(scope="module")
def llada():
    return _load("llada")


# ---- LLaDA ---------------------------------------------------------------------------------------


def test_llada_logits_match_the_publishers_code(llada):
    e = _expected("llada")
    assert type(llada.model).__name__ == "DiffusionLlamaModel"
    assert all(not layer.self_attn.is_causal for layer in llada.model.model.layers)
    with torch.no_grad():
        logits = llada.model(e["input_ids"]).logits
    assert logits.shape == e["logits"].shape
    assert _relative(logits, e["logits"]) <= 1e-5


def test_llada_comes_up_with_its_tokens_sampler_and_blocks(llada):
    tok = llada.tokenizer
    assert tok.mask_token == "<|mdm_mask|>" and llada.process.mask_id == tok.mask_token_id == llada.model.config.mask_token_id
    assert tok.eos_token == "<|endoftext|>"
    assert llada.sampler_config.name == "confidence" and llada.sampler_config.temperature == 0.0
    assert llada.generation_defaults["block_size"] == 32
    assert tok.convert_tokens_to_ids("<|eot_id|>") in llada.stop_token_ids


@pytest.mark.parametrize("mode,cache,sampler", [
    ("greedy", "none", {"name": "confidence", "temperature": 0.0}),
    ("threshold", "none", {"name": "threshold", "threshold": 0.5, "temperature": 0.0}),
    ("prefix", "prefix", {"name": "confidence", "temperature": 0.0}),
    ("dual", "dual", {"name": "confidence", "temperature": 0.0}),
    ("prefix_threshold", "prefix", {"name": "threshold", "threshold": 0.5, "temperature": 0.0}),
    ("dual_threshold", "dual", {"name": "threshold", "threshold": 0.5, "temperature": 0.0}),
])
def test_llada_decoding_matches_the_publishers_generate_token_for_token(llada, mode, cache, sampler):
    """generate.py (steps=8, gen_length=16, block_length=8, low_confidence, temperature 0) and
    Fast-dLLM's threshold / prefix-cache / dual-cache variants, against textdiff's loop."""
    e = _expected("llada")
    steps = 16 if "threshold" in mode else 8  # threshold: at most block_length steps per block (never reached)
    out = generate(llada.model, llada.process, llada.make_sampler(sampler), e["prompt"].tolist(), max_new_tokens=16,
                   steps=steps, block_size=8, use_cache=cache, stop_at_eos=False)
    assert out.sequences.tolist() == e[mode].tolist()


def test_llada_chat_prompt_gets_the_template_and_the_released_decoding(llada):
    msgs = [{"role": "user", "content": "w1 w2 w3"}]
    texts, out = llada.generate([msgs], max_new_tokens=64, return_output=True)
    text = llada.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = llada.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == llada.tokenizer.bos_token_id and ids[-1] == llada.tokenizer.convert_tokens_to_ids("\n\n")
    ref = generate(llada.model, llada.process, llada.make_sampler(), [ids], max_new_tokens=64, steps=64, block_size=32,
                   pad_token_id=llada.tokenizer.pad_token_id, eos_token_id=llada.tokenizer.eos_token_id)
    assert out.sequences.tolist() == ref.sequences.tolist() and out.nfe == ref.nfe
    assert isinstance(texts[0], str) and "user" not in texts[0]  # the answer only


def test_llada_save_pretrained_reloads_natively_with_identical_logits(llada, tmp_path):
    llada.save_pretrained(tmp_path / "converted")
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert config["model_type"] == "textdiff_llama"
    assert config["auto_map"]["AutoModel"] == "modeling_bidirectional.DiffusionLlamaModel"  # for plain transformers
    again = DiffusionLM.from_pretrained(tmp_path / "converted", device="cpu")
    e = _expected("llada")
    with torch.no_grad():
        assert torch.equal(again.model(e["input_ids"]).logits, llada.model(e["input_ids"]).logits)
    assert again.tokenizer.mask_token_id == llada.tokenizer.mask_token_id
    assert again.generation_defaults == llada.generation_defaults and again.stop_token_ids == llada.stop_token_ids


def test_loading_never_runs_a_file_from_the_folder(tmp_path):
    folder = _copy("llada", tmp_path)
    marker = tmp_path / "ran"
    for name in ("modeling_llada.py", "configuration_llada.py", "tokenization_llada.py"):
        (folder / name).write_text(f"open({str(marker)!r}, 'w').write('{name}')\n")
    lm = DiffusionLM.from_pretrained(folder, device="cpu")
    lm.save_pretrained(tmp_path / "converted")
    DiffusionLM.from_pretrained(tmp_path / "converted", device="cpu")
    assert not marker.exists()


def test_llada_bf16_loading_keeps_bf16_weights():
    lm = _load("llada", dtype=torch.bfloat16)
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    e = _expected("llada")
    with torch.no_grad():
        logits = lm.model(e["input_ids"]).logits.float()
    assert _relative(logits, e["logits"]) < 0.05  # bf16 rounding only


def test_fused_llada_layout_is_split_exactly():
    """Block type "sequential" (att_proj = [q; k; v], ff_proj = [up; gate] SwiGLU), also made by the
    publisher's code, converts onto the same Llama modules."""
    lm = _load("llada_fused")
    e = _expected("llada_fused")
    with torch.no_grad():
        assert _relative(lm.model(e["input_ids"]).logits, e["logits"]) <= 1e-5


# ---- the publishers' EOS knobs and Dream's schedule ----------------------------------------------


def test_suppressed_tokens_are_never_generated(llada):
    prompt = _expected("llada")["prompt"].tolist()
    kw = dict(max_new_tokens=16, steps=8, block_size=8, stop_at_eos=False)
    plain = generate(llada.model, llada.process, llada.make_sampler(), prompt, **kw)
    assert 35 in plain.generated[0]
    for name in ("confidence", "threshold"):
        out = generate(llada.model, llada.process, llada.make_sampler(name, temperature=0.0, suppress_ids=[35, 4]), prompt, **kw)
        assert not {35, 4} & set(out.generated[0]) and len(out.generated[0]) == 16


def test_deprioritized_tokens_are_committed_last():
    from textdiff import build_process, build_sampler

    process = build_process({"name": "masked"}, vocab_size=6, mask_id=5)
    eos = 4
    logits = torch.full((1, 3, 6), -5.0)
    logits[0, 0, eos] = 9.0  # the most confident position predicts EOS
    logits[0, 1, 1] = 3.0
    logits[0, 2, 2] = 2.0
    x_t = torch.full((1, 3), 5)
    t, s = torch.tensor([1.0]), torch.tensor([2.0 / 3.0])
    for name, extra in (("confidence", {}), ("threshold", {"threshold": 0.999})):
        spec = {"name": name, "temperature": 0.0, **extra}
        first = build_sampler(spec, process).step(logits, t, s, x_t).x_s
        late = build_sampler({**spec, "deprioritize_ids": [eos]}, process).step(logits, t, s, x_t).x_s
        assert first.tolist() == [[eos, 5, 5]] and late.tolist() == [[5, 1, 5]], name


def test_dream_schedule_is_floor_of_n_times_one_minus_s_over_t():
    from textdiff import build_process, build_sampler

    process = build_process({"name": "masked"}, vocab_size=6, mask_id=5)
    sampler = build_sampler({"name": "confidence", "commit_rounding": "floor", "time_eps": 1e-3}, process)
    sampler.set_timesteps(16)
    grid = torch.linspace(1, 1e-3, 17, dtype=torch.float64)  # diffusion_generate's timesteps
    assert torch.allclose(sampler.timesteps, grid)
    n = 16
    for i, (t, s) in enumerate(sampler.pairs()):
        k = int(sampler.commit_counts(torch.tensor([n]), torch.tensor([t]), torch.tensor([s])))
        want = n if i == 15 else int(n * (1 - s / t))
        assert k == want, i
        n -= k
    assert n == 0


# ---- Dream ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dream():
    return _load("dream")


def test_dream_shifted_logits_match_the_publishers_code(dream):
    """The fixture holds DreamModel's logits shifted as diffusion_generate reads them (row i from i − 1)."""
    e = _expected("dream")
    assert type(dream.model).__name__ == "DiffusionQwen2Model" and dream.model.config.logits_shift == 1
    with torch.no_grad():
        logits = dream.model(e["input_ids"]).logits
    assert _relative(logits, e["logits"]) <= 1e-5


def test_dream_comes_up_with_its_tokens_and_sampler(dream):
    tok = dream.tokenizer
    assert tok.mask_token == "<|mask|>" and dream.process.mask_id == tok.mask_token_id == dream.model.config.mask_token_id
    assert tok.eos_token == "<|endoftext|>"
    assert dream.stop_token_ids == [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    cfg = dream.sampler_config
    assert (cfg.name, cfg.ordering, cfg.temperature, cfg.top_p, cfg.commit_rounding, cfg.time_eps, cfg.score_from) == \
        ("confidence", "entropy", 0.2, 0.95, "floor", 1e-3, "sampling")  # scores from the filtered p̃, as sample_tokens
    assert dream.generation_defaults.get("block_size") is None  # one window, as diffusion_generate


@pytest.mark.parametrize("alg,ordering", [("entropy", "entropy"), ("maskgit_plus", "confidence")])
def test_dream_decoding_matches_diffusion_generate_token_for_token(dream, alg, ordering):
    """diffusion_generate(steps=16, max_new_tokens=16, temperature=0, alg_temp=0) vs textdiff's loop."""
    e = _expected("dream")
    s = dream.make_sampler(None, temperature=0.0, top_p=1.0, ordering=ordering)
    out = generate(dream.model, dream.process, s, e["prompt"].tolist(), max_new_tokens=16, steps=16, stop_at_eos=False)
    assert out.sequences.tolist() == e[alg].tolist()


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("alg", ["entropy", "threshold"])
def test_dream_block_decoding_matches_fast_dllm_token_for_token(dream, cache, alg):
    """Fast-dLLM's generation_utils_block (block 8, 16 steps, greedy; entropy, or confidence_threshold
    τ = 0.3) with its prefix / dual cache. It keeps the token before the block in the stale cache
    (``lookback=0``) and so fixes the block's first token at the refresh forward, then ranks the rest
    (``first_commit = "leftmost"``). Each of the two is needed for the publisher's tokens."""
    e = _expected("dream")
    knobs = {"temperature": 0.0, "top_p": 1.0, "first_commit": "leftmost"}
    spec = ({"name": "threshold", "threshold": 0.3, **knobs} if alg == "threshold" else
            {**to_dict(dream.sampler_config), "ordering": "entropy", **knobs})
    kw = dict(max_new_tokens=16, steps=16 if alg == "entropy" else 64, block_size=8, use_cache=cache, stop_at_eos=False)
    want = e[f"fast_dllm_{cache}_{alg}"].tolist()
    out = generate(dream.model, dream.process, dream.make_sampler(spec), e["prompt"].tolist(), lookback=0, **kw)
    assert out.sequences.tolist() == want
    ranked = dream.make_sampler({**spec, "first_commit": "ranked"})
    assert generate(dream.model, dream.process, ranked, e["prompt"].tolist(), lookback=0, **kw).sequences.tolist() != want
    fresh = generate(dream.model, dream.process, dream.make_sampler(spec), e["prompt"].tolist(), **kw)  # lookback 1
    assert fresh.sequences.tolist() != want


def test_dream_save_pretrained_reloads_natively_with_identical_logits(dream, tmp_path):
    dream.save_pretrained(tmp_path / "converted")
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert config["model_type"] == "textdiff_qwen2" and config["logits_shift"] == 1
    again = DiffusionLM.from_pretrained(tmp_path / "converted", device="cpu")
    e = _expected("dream")
    with torch.no_grad():
        assert torch.equal(again.model(e["input_ids"]).logits, dream.model(e["input_ids"]).logits)
    assert again.sampler_config == dream.sampler_config and again.stop_token_ids == dream.stop_token_ids


def test_dream_chat_answer_stops_at_im_end(dream):
    msgs = [{"role": "user", "content": "w1 w2"}]
    im_end = dream.tokenizer.convert_tokens_to_ids("<|im_end|>")
    texts, out = dream.generate([msgs], max_new_tokens=8, seed=0, return_output=True)
    text = dream.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert im_end not in out.generated[0]
    assert texts[0] == dream.tokenizer.decode(out.generated[0], skip_special_tokens=True)


# ---- the denoiser call and caches (both families) ----------------------------------------------


@pytest.fixture(scope="module", params=["llada", "dream"])
def family_lm(request):
    return _load(request.param)


def test_a_full_cache_reused_for_an_unchanged_row_is_exact(family_lm):
    """Keys/values cached from the whole row give the window's logits exactly (nothing changed)."""
    model = family_lm.model
    lookback = model.config.lookback
    ids = torch.randint(0, 50, (2, 14), generator=torch.Generator().manual_seed(0))
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[1, :3] = False  # left padding
    pos = (valid.long().cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        full_cache = KVCache.for_model(model)
        full = model(ids, attention_mask=valid.long(), position_ids=pos, cache=full_cache, update_cache=True).logits
        lo, hi = 8, 12
        kept = keep_tokens(full_cache, torch.cat([torch.arange(0, lo - lookback), torch.arange(hi, 14)]))
        sl = slice(lo - lookback, hi)
        win = model(ids[:, sl], attention_mask=valid[:, sl].long(), position_ids=pos[:, sl], cache=kept).logits
        kept_last = model(ids, attention_mask=valid.long(), position_ids=pos, logits_to_keep=4).logits
    assert torch.allclose(win[:, lookback:], full[:, lo:hi], atol=1e-5, rtol=1e-5)
    assert torch.allclose(kept_last, full[:, -4:], atol=1e-6)
    assert torch.isfinite(full).all()


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("sampler", [{"name": "confidence", "temperature": 0.0},
                                     {"name": "threshold", "threshold": 0.3, "temperature": 0.0}])
def test_ragged_batches_are_batch_invariant_with_caches_and_threshold(family_lm, cache, sampler):
    lm = family_lm
    prompts = [[5, 9, 11, 3, 7, 2, 8, 1], [4, 6, 10], [12, 13, 14, 15, 16]]
    s = lm.make_sampler(sampler)
    kw = dict(max_new_tokens=16, steps=8, block_size=8, use_cache=cache, stop_at_eos=False, seed=0)
    batched = generate(lm.model, lm.process, s, prompts, **kw)
    assert not bool((batched.sequences == lm.process.mask_id).any())
    for b, p in enumerate(prompts):
        alone = generate(lm.model, lm.process, s, [p], **kw)
        assert alone.generated[0] == batched.generated[b], (cache, b)


# ---- bad folders ---------------------------------------------------------------------------------


def _copy(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    (dst / "expected.safetensors").unlink()
    return dst


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_bad_folders_give_one_line_errors(name, tmp_path):
    folder = _copy(name, tmp_path)
    shard = sorted(folder.glob("model-0000*.safetensors"))[-1]
    data = load_file(str(shard))
    shard.unlink()
    with pytest.raises(ConfigError, match="lacks 1 of 2 weight shards") as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value)
    bad = {k: (v[:-1] if v.dim() == 2 else v) for k, v in data.items()}
    save_file(bad, str(shard))
    with pytest.raises(ConfigError, match="shape") as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value)
    for f in folder.glob("model*.safetensors*"):
        f.unlink()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="pickle"):
        DiffusionLM.from_pretrained(folder, device="cpu")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"], config["architectures"] = "llada2_moe", ["LLaDA2MoeModelLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="llada2_moe") as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value)
    config["model_type"], config["architectures"] = "mistral", ["MistralForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="'mistral' model") as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value)


def test_unsupported_dream_options_are_refused(tmp_path):
    folder = _copy("dream", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["use_sliding_window"] = True
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="use_sliding_window"):
        DiffusionLM.from_pretrained(folder, device="cpu")


def test_unsupported_llada_options_are_refused(tmp_path):
    folder = _copy("llada", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["attention_layer_norm"] = True
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="attention_layer_norm"):
        DiffusionLM.from_pretrained(folder, device="cpu")


def test_block_diffusion_flex_mask_reads_as_its_dense_mask_in_the_hf_denoisers():
    """On CUDA the block process hands FlexAttention BlockMasks ([x_t ; x0] training); the HF-module
    denoisers (LLaDA fine-tuned as BD3-LM, LLaDA 2.0) read them as the dense mask they stand for."""
    from textdiff.models.masks import block_diffusion_flex_mask, block_diffusion_mask

    lm = DiffusionLM.from_pretrained(FIXTURES / "llada", device="cpu")
    L, Lb = 16, 4
    ids = torch.randint(0, lm.model.config.vocab_size, (2, 2 * L), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(L).repeat(2)[None].expand(2, 2 * L)
    with torch.no_grad():
        dense = lm.model(ids, attention_mask=block_diffusion_mask(L, Lb, "cpu"), position_ids=pos).logits
        flex = lm.model(ids, attention_mask=block_diffusion_flex_mask(L, Lb, "cpu", 128), position_ids=pos).logits
    assert torch.equal(dense, flex)
