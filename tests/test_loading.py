"""The rules every loader follows (textdiff.models.loading): where a name points, what is read."""
import json

import pytest
import torch
from safetensors.torch import save_file

from textdiff.errors import ConfigError
from textdiff.lm import DiffusionLM
from textdiff.models.loading import check_state_dict, looks_local, read_json, read_state_dict, resolve_model_path


@pytest.mark.parametrize("name", ["runs/quickstrat", "./x", "/nonexistent/a", "a/b/c", "~/nope-textdiff", "model.safetensors"])
def test_a_local_looking_path_that_does_not_exist_is_no_such_folder(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match="no such model folder"):
        resolve_model_path(name)


def test_only_bare_hub_ids_go_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert not looks_local("gpt2") and not looks_local("kuleshov-group/mdlm-owt")
    assert looks_local("runs/final") and looks_local("../x") and looks_local("a/b/c")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="could not be downloaded"):
        resolve_model_path("textdiff-no-such-owner/no-such-model")


def test_pickle_weights_are_refused_unless_asked_and_then_read_without_code(tmp_path):
    torch.save({"w": torch.arange(3.0)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="--allow-pickle"):
        read_state_dict(tmp_path)
    assert torch.equal(read_state_dict(tmp_path, allow_pickle=True)["w"], torch.arange(3.0))

    class Evil:  # a pickle that would run code on load is refused by weights_only=True
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save({"w": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="weights_only"):
        read_state_dict(tmp_path, allow_pickle=True)


def test_shards_damage_and_shapes_are_one_line_errors(tmp_path):
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="lacks 1 of 2 weight shards"):
        read_state_dict(tmp_path)
    save_file({"b": torch.ones(3)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    state = read_state_dict(tmp_path)
    assert set(state) == {"a", "b"}
    with pytest.raises(ConfigError, match="shape"):
        check_state_dict({"a": (2,), "b": (4,)}, state, "x")
    with pytest.raises(ConfigError, match="lacks 1 tensor"):
        check_state_dict({"a": (2,), "b": (3,), "c": (1,)}, state, "x")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ConfigError, match="damaged"):
        read_state_dict(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_json(tmp_path / "config.json")


def test_an_unknown_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"'gpt_neox' model, which is neither a textdiff folder \(no textdiff.json\) nor a published layout"):
        DiffusionLM.from_pretrained(tmp_path)
