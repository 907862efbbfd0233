"""``device_map`` for LLaDA / Dream (published layout and converted folders), on CPU.

A map that sends decoder layers to the disk runs through accelerate's hooks (weights streamed in
from memory-mapped files at each layer's forward) and must give the plain load's logits and greedy
decodings exactly, with and without KV caches. Loading onto a map never creates a CPU parameter
outside the map's CPU part (counted at ``torch.nn.Parameter`` creation, so it covers the whole load).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from textdiff.errors import ConfigError
from textdiff.generation import generate
from textdiff.lm import DiffusionLM

FIXTURES = Path(__file__).parent / "fixtures" / "published"
FAMILIES = ["llada", "dream"]
#: embedding, layer 0, final norm and output head on the CPU; decoder layer 1 on the disk
DISK_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
            "model.norm": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module", params=FAMILIES)
def plain(request):
    return request.param, DiffusionLM.from_pretrained(FIXTURES / request.param, device="cpu")


def _inputs(name):
    return load_file(str(FIXTURES / name / "expected.safetensors"))


def _cpu_parameter_bytes(monkeypatch) -> list:
    """Bytes of every non-meta torch.nn.Parameter created from now on (appended to the list returned)."""
    made = []
    original = torch.nn.Parameter.__new__

    def counting(cls, data=None, requires_grad=True):
        if data is not None and data.device.type != "meta":
            made.append(data.numel() * data.element_size())
        return original(cls, data, requires_grad)

    monkeypatch.setattr(torch.nn.Parameter, "__new__", counting)
    return made


@pytest.mark.parametrize("device_map", ["auto", "cpu", {"": "cpu"}])
def test_cpu_maps_give_cpu_weights_and_the_plain_logits(plain, device_map):
    name, ref = plain
    lm = DiffusionLM.from_pretrained(FIXTURES / name, device_map=device_map)
    assert {p.device.type for p in lm.model.parameters()} == {"cpu"}
    assert set(lm.model.hf_device_map.values()) == {"cpu"} and lm.device == torch.device("cpu")
    ids = _inputs(name)["input_ids"]
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, ref.model(ids).logits)


def test_disk_offloaded_layer_gives_the_plain_logits_and_decodings(plain, tmp_path, monkeypatch):
    name, ref = plain
    made = _cpu_parameter_bytes(monkeypatch)
    lm = DiffusionLM.from_pretrained(FIXTURES / name, device_map=DISK_MAP, offload_folder=tmp_path / "offload")
    monkeypatch.undo()
    # memory: the only CPU parameters ever created are the map's CPU part; layer 1 lives in the folder
    on_disk = {n: p for n, p in ref.model.named_parameters() if n.startswith("model.layers.1.")}
    cpu_part = sum(p.numel() * p.element_size() for n, p in ref.model.named_parameters() if n not in on_disk)
    assert sum(made) == cpu_part
    assert all(p.device.type == "meta" for n, p in lm.model.named_parameters() if n in on_disk)
    assert sum(p.numel() * p.element_size() for p in lm.model.parameters() if p.device.type == "cpu") == cpu_part
    dat = sorted(f.name for f in (tmp_path / "offload").glob("*.dat"))
    assert dat == sorted(f"{n}.dat" for n in on_disk)
    assert sum(f.stat().st_size for f in (tmp_path / "offload").glob("*.dat")) == \
        sum(p.numel() * p.element_size() for p in on_disk.values())
    e = _inputs(name)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(e["input_ids"]).logits, ref.model(e["input_ids"]).logits, rtol=1e-6, atol=1e-6)
    prompts = [e["prompt"][0].tolist(), [5, 9, 11], [4, 6, 10, 12, 13]]  # ragged: left padding through the hooks
    for cache, sampler in [("none", {"name": "confidence", "temperature": 0.0}),
                           ("prefix", {"name": "confidence", "temperature": 0.0}),
                           ("dual", {"name": "confidence", "temperature": 0.0}),
                           ("dual", {"name": "threshold", "threshold": 0.3, "temperature": 0.0})]:
        kw = dict(max_new_tokens=16, steps=8, block_size=8, use_cache=cache, stop_at_eos=False, seed=0)
        want = generate(ref.model, ref.process, ref.make_sampler(sampler), prompts, **kw)
        got = generate(lm.model, lm.process, lm.make_sampler(sampler), prompts, **kw)
        assert got.sequences.tolist() == want.sequences.tolist(), (cache, sampler)
    # the high-level API: the model's own default decoding, inputs built on lm.device
    assert lm.generate(["w1 w2"], max_new_tokens=8, seed=0) == ref.generate(["w1 w2"], max_new_tokens=8, seed=0)


def test_plain_loading_is_what_the_parameter_count_sees(monkeypatch):
    """The counter above is no tautology: a load without a map creates every parameter on the CPU."""
    made = _cpu_parameter_bytes(monkeypatch)
    lm = DiffusionLM.from_pretrained(FIXTURES / "llada", device="cpu")
    monkeypatch.undo()
    assert sum(made) >= sum(p.numel() * p.element_size() for p in lm.model.parameters())


def test_auto_map_within_max_memory_offloads_to_disk_exactly(tmp_path):
    ref = DiffusionLM.from_pretrained(FIXTURES / "llada", device="cpu")
    layer = sum(p.numel() * 4 for p in ref.model.model.layers[0].parameters())
    embed = ref.model.model.embed_tokens.weight.numel() * 4
    lm = DiffusionLM.from_pretrained(FIXTURES / "llada", device_map="auto", max_memory={"cpu": embed + layer},
                                     offload_folder=tmp_path / "off")
    placed = set(lm.model.hf_device_map.values())
    assert "disk" in placed, lm.model.hf_device_map
    assert not any(k.startswith("model.layers.0.") or k.startswith("model.layers.1.") for k in lm.model.hf_device_map)
    ids = _inputs("llada")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, ref.model(ids).logits, rtol=1e-6, atol=1e-6)


def test_converted_folder_loads_onto_a_map(plain, tmp_path):
    name, ref = plain
    ref.save_pretrained(tmp_path / "converted")
    lm = DiffusionLM.from_pretrained(tmp_path / "converted", device_map=DISK_MAP, offload_folder=tmp_path / "off")
    assert lm.model.hf_device_map["model.layers.1"] == "disk"
    assert lm.model.model.layers[1].mlp.up_proj.weight.device.type == "meta"
    ids = _inputs(name)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, ref.model(ids).logits, rtol=1e-6, atol=1e-6)
    assert lm.sampler_config == ref.sampler_config and lm.stop_token_ids == ref.stop_token_ids


def test_bf16_map_keeps_bf16(tmp_path):
    lm = DiffusionLM.from_pretrained(FIXTURES / "dream", device_map=DISK_MAP, offload_folder=tmp_path / "o",
                                     dtype=torch.bfloat16)
    assert {p.dtype for p in lm.model.parameters() if p.device.type == "cpu"} == {torch.bfloat16}
    ref = DiffusionLM.from_pretrained(FIXTURES / "dream", device="cpu", dtype=torch.bfloat16)
    ids = _inputs("dream")["input_ids"]
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, ref.model(ids).logits)


@pytest.mark.parametrize("kwargs,match", [
    (dict(device_map={"model.layers.7": "cpu", "": "cpu"}), "no module of this model"),
    (dict(device_map={"": "cuda:3"}), "does not exist on this machine"),
    (dict(device_map={"": 2}), "does not exist on this machine"),
    (dict(device_map={"": "banana"}), "not a device"),
    (dict(device_map="everywhere"), "unknown"),
    (dict(device_map=["cpu"]), "device_map must be"),
    (dict(device_map="cpu", device="cpu"), "not both"),
    (dict(device_map={"": "cpu", "model.layers.1": "disk"}), "offload_folder"),
    (dict(device_map={"model.embed_tokens": "cpu"}), "without a device"),
    (dict(device_map={"": "cpu", "model.layers.0.mlp": "disk"}, offload_folder="x"), "splits model.layers.0"),
    (dict(max_memory={"cpu": "1GiB"}), "only applies with device_map"),
    (dict(device_map="auto", max_memory={"cpu": "lots"}), "not a size"),
    (dict(device_map="auto", max_memory={5: "1GiB"}), "does not exist"),
    (dict(device_map={"": "cpu"}, max_memory={"cpu": "1GiB"}), "not to {'': 'cpu'}"),
    (dict(device_map="cpu", max_memory={"cpu": "1GiB"}), "not to 'cpu'"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_device_maps_are_one_line_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        DiffusionLM.from_pretrained(FIXTURES / "llada", **kwargs)
    assert "\n" not in str(err.value)


def test_device_map_on_a_small_family_is_refused():
    with pytest.raises(ConfigError, match="not supported for mdlm") as err:
        DiffusionLM.from_pretrained(FIXTURES / "mdlm" / "owt", device_map="auto", tokenizer=_bpe())
    assert "\n" not in str(err.value)


def _bpe():
    from textdiff.tokenization import train_bpe, wrap_fast

    return wrap_fast(train_bpe(["a b c d e f g"] * 5, vocab_size=64))


@pytest.mark.filterwarnings("ignore:Attempting to save a model with offloaded modules")
def test_dispatched_model_scores_and_saves_like_the_plain_one(tmp_path):
    ref = DiffusionLM.from_pretrained(FIXTURES / "llada", device="cpu")
    lm = DiffusionLM.from_pretrained(FIXTURES / "llada", device_map=DISK_MAP, offload_folder=tmp_path / "off")
    assert lm.score(["w1 w2 w3"], t_samples=4) == ref.score(["w1 w2 w3"], t_samples=4)
    lm.save_pretrained(tmp_path / "saved")  # the disk part is read back from the offload folder
    again = DiffusionLM.from_pretrained(tmp_path / "saved", device="cpu")
    for (name, p), q in zip(ref.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_cli_device_map_flags(tmp_path, capsys):
    from textdiff.cli import main

    base = ["generate", "--model", str(FIXTURES / "dream"), "--prompt", "w1 w2", "--max-new-tokens", "6", "--seed", "0"]
    assert main(base + ["--device", "cpu"]) == 0
    want = capsys.readouterr().out
    disk = '{"": "cpu", "model.layers.1": "disk"}'
    assert main(base + ["--device-map", disk, "--offload-folder", str(tmp_path / "off")]) == 0
    assert capsys.readouterr().out == want and any((tmp_path / "off").glob("model.layers.1.*.dat"))
    assert main(base + ["--device-map", "auto", "--max-memory", "cpu=1GiB"]) == 0
    assert capsys.readouterr().out == want
    for bad, says in ((["--max-memory", "lots"], "DEVICE=SIZE"), (["--device-map", "{nope"], "not a JSON object"),
                      (["--device-map", "auto", "--device", "cpu"], "not both")):
        assert main(base + bad) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err


def test_inputs_go_to_the_embeddings_execution_device():
    """lm.device of a dispatched model (pure map logic, so GPU names can be checked on CPU): the
    embedding's GPU; a CPU- or disk-offloaded embedding runs on the main GPU (what dispatch passes
    to accelerate as main_device); an all-CPU map runs on the CPU."""
    from textdiff.models import dispatch
    from textdiff.models.modeling_bidirectional import DiffusionLlamaConfig, DiffusionLlamaModel

    with torch.device("meta"):
        model = DiffusionLlamaModel(DiffusionLlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                                         num_hidden_layers=2, num_attention_heads=2, mask_token_id=31))
    rest = {"model.rotary_emb": "cuda:0", "model.layers.0": "cuda:0", "model.layers.1": "cuda:1", "model.norm": "cuda:1",
            "lm_head": "cuda:1"}
    for embed, want in (("cuda:1", "cuda:1"), ("cpu", "cuda:0"), ("disk", "cuda:0")):
        model.hf_device_map = {"model.embed_tokens": embed, **rest}
        assert dispatch.input_device(model) == torch.device(want)
    model.hf_device_map = {"": "cpu", "model.layers.1": "disk"}
    assert dispatch.input_device(model) == torch.device("cpu")
    assert dispatch.target("model.layers.1.mlp.up_proj.weight", model.hf_device_map) == "disk"
    assert dispatch.target("model.layers.10.mlp.up_proj.weight", model.hf_device_map) == "cpu"  # not a prefix match
