"""SEDD, DUO and UDLM checkpoints in their published layouts: logit parity with the publishers' own
code (fixtures made by tests/fixtures/published/make_sedd.py and make_duo.py), scoring and sampling
with every compatible sampler, conversion round trip, and one-line errors for bad folders."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from textdiff.errors import ConfigError, IncompatibleError
from textdiff.lm import DiffusionLM
from textdiff import available, build_process, build_sampler
from textdiff.config import resolve_section

FIX = Path(__file__).parent / "fixtures" / "published"
MASK = 63  # SEDD absorbing fixture: 63 tokens + [MASK]; DUO fixture: 63 tokens + the appended [MASK]


def word_tokenizer(n: int, mask=None):
    """A WordLevel tokenizer of n ids: [EOS] = 0, [UNK] = 1, words w2..; [MASK] at id ``mask``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[EOS]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, n) if i != mask}}
    if mask is not None:
        vocab["[MASK]"] = mask
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="[EOS]", unk_token="[UNK]",
                                   mask_token="[MASK]" if mask is not None else None)


# name -> (model folder, expected outputs, tokenizer); UDLM's [MASK] sits inside the vocabulary (BERT's)
CASES = {
    "sedd-absorb": (FIX / "sedd" / "absorb", FIX / "sedd" / "absorb.expected.safetensors", lambda: word_tokenizer(64, MASK)),
    "sedd-uniform": (FIX / "sedd" / "uniform", FIX / "sedd" / "uniform.expected.safetensors", lambda: word_tokenizer(64)),
    "duo": (FIX / "duo" / "model", FIX / "duo" / "model.expected.safetensors", lambda: word_tokenizer(63)),
    "udlm": (FIX / "udlm" / "model", FIX / "udlm" / "model.expected.safetensors", lambda: word_tokenizer(64, 5)),
}
FAMILY = {"sedd-absorb": "sedd", "sedd-uniform": "sedd", "duo": "duo", "udlm": "udlm"}
PROCESS = {"sedd-absorb": "sedd_absorb", "sedd-uniform": "sedd_uniform", "duo": "uniform", "udlm": "uniform"}


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


_LMS = {}


def load(name):
    if name not in _LMS:
        folder, _, tok = CASES[name]
        _LMS[name] = DiffusionLM.from_pretrained(folder, device="cpu", tokenizer=tok())
    return _LMS[name]


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_the_publishers_code(name):
    """fp32 logits of the converted network equal the publisher's on the fixture's inputs (≤ 1e-5
    relative), both when fed the publisher's σ and when the process computes σ(t) itself."""
    lm = load(name)
    e = load_file(CASES[name][1])
    assert lm.process.config.name == PROCESS[name] and lm.process.config.time_input == "sigma"
    assert torch.allclose(lm.process.network_time(e["t"]), e["sigma"], rtol=1e-6)
    with torch.no_grad():
        ours = lm.model(e["input_ids"], t=e["sigma"]).logits
        via_process = lm.model(e["input_ids"], t=lm.process.network_time(e["t"])).logits
    assert ours.shape == e["logits"].shape
    assert rel_err(ours, e["logits"]) <= 1e-5
    assert rel_err(via_process, e["logits"]) <= 1e-5


def test_sedd_absorbing_score_includes_scale_by_sigma_and_the_zeroed_current_token():
    """SEDD's forward output (logits − log(e^σ − 1) − log(V − 1), 0 at the current token) equals
    the process's log_score wherever SEDD's absorbing graph reads it: every entry of a masked
    position, and the current token's 0 at a clean one."""
    lm = load("sedd-absorb")
    e = load_file(CASES["sedd-absorb"][1])
    x, out = e["input_ids"], e["output"]
    with torch.no_grad():
        ls = lm.process.log_score(lm.model(x, t=lm.process.network_time(e["t"])).logits, x, e["t"])
    masked = x == MASK
    assert 0 < int(masked.sum()) < x.numel()
    assert rel_err(ls[masked], out[masked]) <= 1e-5
    clean_self = ls[~masked].gather(-1, x[~masked][:, None])
    assert torch.equal(clean_self, out[~masked].gather(-1, x[~masked][:, None]))  # both exactly 0


def test_sedd_uniform_score_is_the_raw_output_with_zero_at_the_current_token():
    lm = load("sedd-uniform")
    e = load_file(CASES["sedd-uniform"][1])
    with torch.no_grad():
        ls = lm.process.log_score(lm.model(e["input_ids"], t=e["sigma"]).logits, e["input_ids"], e["t"])
    assert rel_err(ls, e["output"]) <= 1e-5


def test_scale_by_sigma_off_reads_the_output_as_log_scores():
    """With scale_by_sigma=False the process reads log s directly: feeding it the scaled output
    gives the scale_by_sigma=True process's scores, loss and reverse rates."""
    V, spec = 16, {"name": "sedd_absorb", "time_conditioning": True}
    on = build_process(spec, vocab_size=V, mask_id=V - 1)
    off = build_process({**spec, "scale_by_sigma": False}, vocab_size=V, mask_id=V - 1)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V - 1, (3, 7), generator=g)
    t = torch.tensor([0.2, 0.5, 0.9])
    xt = on.corrupt(x0, t, generator=g)
    logits = torch.randn(3, 7, V, generator=g, dtype=torch.float64)
    tt = on.per_token(t, x0).double()
    scaled = logits - math.log(V - 1) - torch.log(torch.expm1(on.schedule.sigma(tt)))[..., None]
    assert torch.allclose(off.log_score(scaled, xt, t), on.log_score(logits, xt, t))
    assert torch.allclose(off.loss(scaled, xt, x0, t), on.loss(logits, xt, x0, t))
    assert torch.allclose(off.reverse_rate(scaled, xt, t), on.reverse_rate(logits, xt, t))


@pytest.mark.parametrize("name", list(CASES))
def test_family_defaults(name):
    from textdiff.models.published import detect_family, folder_config

    folder = CASES[name][0]
    assert detect_family(folder, folder_config(folder)).name == FAMILY[name]
    lm = load(name)
    assert lm.seq_len == 32  # the fixture's model.length / model_length
    assert lm.sampler_config.name == ("analytic" if FAMILY[name] == "sedd" else "ancestral")
    assert lm.model.config.time_scale == 1.0 and lm.model.config.lm_head_bias
    if name == "sedd-uniform":
        assert lm.process.config.schedule.name == "geometric" and lm.process.config.schedule.sigma_max == 20.0
    else:
        assert lm.process.config.schedule.name == "loglinear" and lm.process.config.schedule.eps == 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_score_and_generate_with_every_compatible_sampler(name):
    lm = load(name)
    nelbo = lm.score(["w3 w4 w5 w6"], t_samples=4)[0]
    assert math.isfinite(nelbo) and nelbo > 0
    worked = []
    for sampler in available("sampler"):
        try:
            build_sampler(resolve_section("sampler", {"name": sampler}, "sampler"), lm.process)
        except IncompatibleError:
            continue
        texts, out = lm.generate(["w7 w8"], max_new_tokens=6, steps=4, sampler=sampler, seed=0, return_output=True)
        ids = out.generated[0]
        assert len(ids) == 6 and all(0 <= i < lm.model.config.vocab_size for i in ids)
        if name == "sedd-absorb":
            assert MASK not in ids  # absorbing: every [MASK] is filled by the last step
        worked.append(sampler)
    expected = {"sedd": {"analytic", "euler"}, "duo": {"ancestral", "euler"}, "udlm": {"ancestral", "euler"}}[FAMILY[name]]
    assert expected <= set(worked)
    assert lm.generate(["w7"], max_new_tokens=4, steps=4, seed=0)  # the default sampler


@pytest.mark.parametrize("name", ["sedd-absorb", "udlm"])
def test_convert_round_trip(name, tmp_path):
    """save_pretrained writes a native folder that loads without the converter: same logits, same
    process (time input, scale_by_sigma, schedule), sampler and context."""
    lm = load(name)
    lm.save_pretrained(tmp_path / "conv")
    assert (tmp_path / "conv" / "textdiff.json").is_file()
    back = DiffusionLM.from_pretrained(tmp_path / "conv", device="cpu")
    e = load_file(CASES[name][1])
    with torch.no_grad():
        a = lm.model(e["input_ids"], t=e["sigma"]).logits
        b = back.model(e["input_ids"], t=e["sigma"]).logits
    assert torch.equal(a, b)
    assert back.process.config == lm.process.config and back.seq_len == lm.seq_len
    assert back.sampler_config.name == lm.sampler_config.name


def test_convert_cli(tmp_path, capsys):
    from textdiff.cli import main

    word_tokenizer(64, MASK).save_pretrained(tmp_path / "tok")
    rc = main(["convert", str(CASES["sedd-absorb"][0]), str(tmp_path / "out"), "--tokenizer", str(tmp_path / "tok")])
    assert rc in (0, None)
    back = DiffusionLM.from_pretrained(tmp_path / "out", device="cpu")
    assert back.process.config.name == "sedd_absorb" and back.tokenizer.mask_token_id == MASK


# ---- bad folders -----------------------------------------------------------------------------------


def copy(name, tmp_path) -> Path:
    dst = tmp_path / name
    shutil.copytree(CASES[name][0], dst)
    return dst


def one_line_error(folder, match, **kw):
    with pytest.raises(ConfigError, match=match) as err:
        DiffusionLM.from_pretrained(folder, device="cpu", tokenizer=kw.pop("tokenizer", word_tokenizer(64, MASK)), **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_missing_weights(tmp_path):
    d = copy("sedd-absorb", tmp_path)
    (d / "model.safetensors").unlink()
    one_line_error(d, "holds no weights")


def test_wrong_shapes(tmp_path):
    d = copy("sedd-absorb", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["cond_dim"] = 8
    (d / "config.json").write_text(json.dumps(cfg))
    one_line_error(d, "does not match the weights")


def test_unknown_tensor_and_missing_tensor(tmp_path):
    d = copy("duo", tmp_path)
    state = load_file(d / "model.safetensors")
    save_file({**state, "backbone.cond_map.embedding_table.weight": torch.zeros(3, 16)}, str(d / "model.safetensors"))
    one_line_error(d, "another architecture", tokenizer=word_tokenizer(63))
    state.pop("backbone.output_layer.linear.bias")
    save_file(state, str(d / "model.safetensors"))
    one_line_error(d, "lacks 1 tensor", tokenizer=word_tokenizer(63))


def test_pickle_weights_refused_unless_allowed(tmp_path):
    d = copy("sedd-absorb", tmp_path)
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    msg = one_line_error(d, "pickle")
    assert "--allow-pickle" in msg
    lm = DiffusionLM.from_pretrained(d, device="cpu", tokenizer=word_tokenizer(64, MASK), allow_pickle=True)
    e = load_file(CASES["sedd-absorb"][1])
    with torch.no_grad():
        assert rel_err(lm.model(e["input_ids"], t=e["sigma"]).logits, e["logits"]) <= 1e-5


def test_incomplete_config_and_variants_not_converted(tmp_path):
    d = copy("sedd-absorb", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["model"]["n_heads"]
    (d / "config.json").write_text(json.dumps(cfg))
    one_line_error(d, "lacks 'n_heads'")
    cfg = json.loads((CASES["sedd-absorb"][0] / "config.json").read_text())
    cfg["graph"]["type"] = "uniform"  # scale_by_sigma with the uniform graph: SEDD asserts against it
    (d / "config.json").write_text(json.dumps(cfg))
    one_line_error(d, "scale_by_sigma")
    u = copy("udlm", tmp_path)
    cfg = json.loads((u / "config.json").read_text())
    (u / "config.json").write_text(json.dumps({**cfg, "cfg": True, "cfg_num_classes": 2}))
    one_line_error(u, "class-conditional", tokenizer=word_tokenizer(64, 5))
    o = copy("duo", tmp_path)
    cfg = json.loads((o / "config.json").read_text())
    (o / "config.json").write_text(json.dumps({**cfg, "causal": True}))
    one_line_error(o, "autoregressive", tokenizer=word_tokenizer(63))


def test_wrong_tokenizer(tmp_path):
    one_line_error(CASES["sedd-absorb"][0], "mask token", tokenizer=word_tokenizer(64, 5))
    one_line_error(CASES["udlm"][0], "70 tokens but this UDLM model has 64 embedding rows", tokenizer=word_tokenizer(70, 5))


def test_config_switches_reach_the_process(tmp_path):
    """SEDD's model.scale_by_sigma: false and UDLM's time_conditioning: false change how the process
    reads / feeds the network (the weights are the same)."""
    d = copy("sedd-absorb", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["scale_by_sigma"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    lm = DiffusionLM.from_pretrained(d, device="cpu", tokenizer=word_tokenizer(64, MASK))
    assert lm.process.config.name == "sedd_absorb" and lm.process.config.scale_by_sigma is False
    u = copy("udlm", tmp_path)
    cfg = json.loads((u / "config.json").read_text())
    (u / "config.json").write_text(json.dumps({**cfg, "time_conditioning": False}))
    lm = DiffusionLM.from_pretrained(u, device="cpu", tokenizer=word_tokenizer(64, 5))
    assert lm.process.config.time_input == "zero"
    t = torch.tensor([0.3, 0.9])
    assert torch.equal(lm.process.network_time(t), torch.zeros(2))
    assert len(lm.generate(["w7"], max_new_tokens=4, steps=4, seed=0)) == 1
