"""MDLM and BD3-LM checkpoints in their published layout: logit parity with the publishers' own code
(fixtures made by tests/fixtures/published/make_{mdlm,bd3lm}.py), scoring, every compatible sampler,
the exact block KV cache, ``textdiff convert`` and one-line errors for bad folders."""
import json
import shutil

import pytest
import torch
from published_dit_helpers import BD3LM, MDLM, VOCAB, expected, rel_err, tiny_tokenizer

from textdiff.errors import ConfigError, IncompatibleError
from textdiff.lm import DiffusionLM
from textdiff.models import KVCache
from textdiff import available

TOL = 1e-5  # max relative error of the converted model's logits (fp32)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def load(folder, tok):
    return DiffusionLM.from_pretrained(folder, tokenizer=tok, device="cpu")


# ---- parity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MDLM))
def test_mdlm_logits_match_the_publishers_network(tok, name):
    lm, e = load(MDLM[name], tok), expected(MDLM[name])
    assert lm.process.config.name == "masked" and lm.seq_len == 16
    fed = lm.process.network_time(e["t"])  # MDLM feeds σ(t) (its own schedule's) or zeros
    torch.testing.assert_close(fed, e["sigma"], rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        assert rel_err(lm.model(e["input_ids"], t=fed).logits, e["logits"]) <= TOL
        assert rel_err(lm.model(e["input_ids_short"], t=fed[:2]).logits, e["logits_short"]) <= TOL


def _bd3lm_time(lm, B):
    return {"t": torch.zeros(B)} if lm.process.time_conditioning else {}


@pytest.mark.parametrize("name", sorted(BD3LM))
def test_bd3lm_logits_match_the_publishers_three_paths(tok, name):
    lm, e = load(BD3LM[name], tok), expected(BD3LM[name])
    p, model, L = lm.process, lm.model, e["x0"].shape[1]
    assert p.config.name == "block" and p.block_size == model.config.block_size == json.loads(
        (BD3LM[name] / "config.json").read_text())["block_size"]
    with torch.no_grad():
        # training: [x_t ; x0] under the block-diffusion mask, as the objective feeds it
        t = torch.rand(2, L)
        inputs = p.model_inputs(e["xt"], e["x0"], t)
        if p.time_conditioning:
            inputs.setdefault("t", p.network_time(t))
        assert rel_err(p.model_logits(model(**inputs).logits, e["xt"]), e["train_logits"]) <= TOL
        # sampling without a cache: the block-causal structural mask
        assert rel_err(model(e["prefix"], **_bd3lm_time(lm, 2)).logits, e["sample_logits"]) <= TOL
        # sampling with the KV cache: noisy block k against the cached clean blocks < k
        cache, out, Lb = KVCache.for_model(model), [], p.block_size
        for lo in range(0, L, Lb):
            out.append(model(e["xt"][:, lo:lo + Lb], cache=cache, **_bd3lm_time(lm, 2)).logits)
            model(e["x0"][:, lo:lo + Lb], cache=cache, update_cache=True, **_bd3lm_time(lm, 2))
        assert rel_err(torch.cat(out, 1), e["kv_cache_logits"]) <= TOL


def test_bd3lm_keeps_the_clipped_band_and_the_time_input(tok):
    from textdiff.models.published import LoadOptions, load_published

    pub = load_published(BD3LM["owt-block4"], LoadOptions(tokenizer=tok))
    assert pub.family == "bd3lm" and pub.notes["clipped_mask_rates"] == pytest.approx([1e-3, 0.999])
    assert pub.process["time_input"] == "zero" and pub.process["time_conditioning"]
    assert not load_published(BD3LM["noadaln-block8"], LoadOptions(tokenizer=tok)).process["time_conditioning"]


# ---- scoring ---------------------------------------------------------------------------------


def test_bd3lm_block_nelbo_equals_the_blockwise_conditionals(tok):
    """The one-pass [x_t ; x0] loss equals, block by block, the masked loss of block k given the
    clean blocks before it computed with a plain block-causal forward: the block NELBO."""
    lm = load(BD3LM["owt-block4"], tok)
    p, model = lm.process, lm.model
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, VOCAB - 1, (3, 16), generator=g)
    t = p.sample_t(3, generator=g, seq_len=16)  # [B, L], one t per block
    xt = p.corrupt(x0, t, generator=g)
    with torch.no_grad():
        inputs = p.model_inputs(xt, x0, t)
        one_pass = p.loss(p.model_logits(model(**inputs).logits, xt), xt, x0, t)
        blockwise = torch.zeros_like(one_pass)
        for lo in range(0, 16, 4):
            ids = torch.cat([x0[:, :lo], xt[:, lo:lo + 4]], 1)
            logits = model(ids, t=torch.zeros(3)).logits[:, lo:]
            blockwise[:, lo:lo + 4] = p.loss(logits, xt[:, lo:lo + 4], x0[:, lo:lo + 4], t[:, lo:lo + 4])
    assert one_pass.sum() > 0
    torch.testing.assert_close(one_pass, blockwise, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("folder", [MDLM["owt"], BD3LM["owt-block4"]], ids=["mdlm", "bd3lm"])
def test_score_is_a_finite_deterministic_nelbo(tok, folder):
    lm = load(folder, tok)
    a = lm.score(["w1 w2 w3 w4 w5", "w7 w7"], t_samples=8, seed=0)
    assert all(0 < s < 1e4 for s in a) and a == lm.score(["w1 w2 w3 w4 w5", "w7 w7"], t_samples=8, seed=0)


# ---- sampling --------------------------------------------------------------------------------


def _compatible_samplers(lm):
    names = []
    for name in available("sampler"):
        try:
            lm.make_sampler(name)
        except IncompatibleError:
            continue
        names.append(name)
    return names


@pytest.mark.parametrize("folder", [MDLM["owt"], BD3LM["owt-block4"]], ids=["mdlm", "bd3lm"])
def test_every_compatible_sampler_generates(tok, folder):
    lm = load(folder, tok)
    names = _compatible_samplers(lm)
    assert {"ancestral", "first_hitting", "confidence", "threshold"} <= set(names)
    for name in names:
        texts, out = lm.generate(["w3 w4"], max_new_tokens=8, steps=8, sampler=name, seed=0, return_output=True)
        new = out.sequences[0, 2:]
        assert new.shape == (8,) and bool((new < VOCAB - 1).all()), name  # no [MASK] left, ids in the vocabulary
        assert texts[0].startswith("w3 w4")


def test_mdlm_default_sampler_skips_calls_when_nothing_changed(tok):
    """MDLM's cached ancestral sampler: the network is fed σ = 0, so a step where no token was
    unmasked reuses the logits; 64 steps over 4 tokens cost at most 4 network calls."""
    lm = load(MDLM["owt"], tok)
    assert lm.sampler_config.name == "ancestral"
    _, out = lm.generate(["w1"], max_new_tokens=4, steps=64, seed=0, return_output=True)
    assert out.steps > 4 >= out.nfe


def test_bd3lm_generates_block_by_block_with_the_exact_cache(tok, monkeypatch):
    """Default generate decodes L' = 4 tokens at a time through the KV cache; the tokens equal
    cache-free decoding of the same blocks."""
    lm = load(BD3LM["owt-block4"], tok)
    lengths = []
    forward = lm.model.forward

    def spy(input_ids, *args, **kwargs):
        lengths.append(input_ids.shape[1])
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(lm.model, "forward", spy)
    _, cached = lm.generate(["w3 w4 w5 w6"], max_new_tokens=8, seed=1, return_output=True)
    assert max(lengths) == 4  # only the current block is fed: the rest is in the cache
    lengths.clear()
    _, plain = lm.generate(["w3 w4 w5 w6"], max_new_tokens=8, seed=1, block_size=4, use_cache=False, return_output=True)
    assert max(lengths) > 4
    assert cached.sequences.tolist() == plain.sequences.tolist()


# ---- convert ---------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [MDLM["owt"], BD3LM["owt-block4"]], ids=["mdlm", "bd3lm"])
def test_convert_writes_a_native_folder_that_loads_without_the_converter(tok, folder, tmp_path, monkeypatch):
    from textdiff.cli import main
    from textdiff.models import published

    tok.save_pretrained(tmp_path / "tok")
    dst = tmp_path / "native"
    assert main(["convert", str(folder), str(dst), "--tokenizer", str(tmp_path / "tok")]) == 0
    assert (dst / "textdiff.json").is_file() and json.loads((dst / "config.json").read_text())["model_type"] == "textdiff"
    src = load(folder, tok)

    def refuse(*a, **k):
        raise AssertionError("the converter ran")

    monkeypatch.setattr(published, "load_published", refuse)
    again = DiffusionLM.from_pretrained(dst, device="cpu")
    assert again.process.config == src.process.config and again.seq_len == src.seq_len
    x = torch.randint(0, VOCAB, (2, 12))
    kw = {"t": torch.zeros(2)} if src.process.time_conditioning else {}
    with torch.no_grad():
        assert torch.equal(again.model(x, **kw).logits, src.model(x, **kw).logits)


# ---- bad folders -----------------------------------------------------------------------------


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / folder.name)


def _edit(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))


BAD = {
    "missing shard": (lambda f: ((f / "model.safetensors").rename(f / "model-00001-of-00002.safetensors"),
                                 (f / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
                                     "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))),
                      "lacks 1 of 2 weight shards"),
    "wrong shapes": (lambda f: _edit(f, hidden_dim=48), "config.json does not match the weights"),
    "wrong cond_dim": (lambda f: _edit(f, cond_dim=24), "has shape .* but the config gives"),
    "missing field": (lambda f: _edit(f, n_heads=None), "lacks 'n_heads'"),
    "pickle only": (lambda f: (torch.save({"x": torch.zeros(1)}, f / "pytorch_model.bin"), (f / "model.safetensors").unlink()),
                    "pickle"),
    "unknown architecture": (lambda f: _edit(f, model_type="mystery", architectures=["Mystery"]), "neither a textdiff folder"),
    "damaged config": (lambda f: (f / "config.json").write_text("{not json"), "not valid JSON"),
}


@pytest.mark.parametrize("folder", [MDLM["owt"], BD3LM["owt-block4"]], ids=["mdlm", "bd3lm"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_folders_give_one_line_errors(tok, folder, case, tmp_path):
    damage, message = BAD[case]
    bad = _copy(folder, tmp_path)
    damage(bad)
    with pytest.raises(ConfigError, match=message) as err:
        load(bad, tok)
    assert "\n" not in str(err.value)


def test_pickle_weights_load_only_when_the_caller_allows_them(tok, tmp_path):
    """A .bin copy of the weights: refused by default, read with torch.load(weights_only=True) on
    request, giving the same network."""
    from safetensors.torch import load_file

    bad = _copy(BD3LM["owt-block4"], tmp_path)
    torch.save(load_file(str(bad / "model.safetensors")), bad / "pytorch_model.bin")
    (bad / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="pickle"):
        load(bad, tok)
    lm = DiffusionLM.from_pretrained(bad, tokenizer=tok, device="cpu", allow_pickle=True)
    ref = load(BD3LM["owt-block4"], tok)
    x = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        assert torch.equal(lm.model(x, t=torch.zeros(2)).logits, ref.model(x, t=torch.zeros(2)).logits)


def test_bd3lm_refuses_layouts_it_cannot_compute_exactly(tok, tmp_path):
    for changes, message in [({"causal": True}, "autoregressive"), ({"time_conditioning": True}, "time-conditioned"),
                             ({"block_size": 5}, "does not divide"), ({"cross_attn": False}, "cross_attn")]:
        bad = _copy(BD3LM["owt-block4"], tmp_path / str(len(message)))
        _edit(bad, **changes)
        with pytest.raises(ConfigError, match=message):
            load(bad, tok)


def test_a_tokenizer_that_does_not_fit_is_refused():
    small = tiny_tokenizer()
    small.add_special_tokens({"additional_special_tokens": ["[X]"]})  # 65 ids > 64 rows
    with pytest.raises(ConfigError, match="65 tokens"):
        load(MDLM["owt"], small)


def test_the_cli_lists_the_families(capsys):
    from textdiff.cli import main

    assert main(["list"]) == 0
    family = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("family:"))
    assert "mdlm" in family and "bd3lm" in family
