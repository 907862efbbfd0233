import dataclasses

import pytest
import yaml

from textdiff.config import Recipe, load_recipe, save_recipe, to_dict
from textdiff.errors import ConfigError


def test_defaults_resolve_polymorphic_sections():
    r = load_recipe(raw={})
    assert r.process.name == "masked" and r.process.schedule.name == "loglinear"
    assert r.sampler.name == "ancestral"
    assert r.output_dir == "runs/run"


def test_unknown_key_is_rejected_with_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\].*valid keys") as e:
        load_recipe(raw={"train": {"lrr": 1e-3}})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("section,key,value,expected", [
    ("train", "lr", "fast", "expected a number"),
    ("train", "max_steps", 1.5, "expected an integer"),
    ("train", "max_steps", True, "expected an integer"),
    ("data", "layout", "zigzag", "is not one of"),
    ("model", "hidden_size", [1], "expected an integer"),
])
def test_wrong_types_are_rejected(section, key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        load_recipe(raw={section: {key: value}})


def test_unknown_process_names_available_ones():
    with pytest.raises(ConfigError, match="unknown process 'nope'; available: .*masked"):
        load_recipe(raw={"process": {"name": "nope"}})


def test_process_fields_are_checked_by_the_process_config():
    with pytest.raises(ConfigError, match="process"):
        load_recipe(raw={"process": {"name": "masked", "not_a_field": 1}})


def test_overrides_parse_types_and_reach_nested_sections(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "train": {"lr": 1e-3}}))
    r = load_recipe(path, ["train.lr=1e-4", "train.betas=[0.9, 0.95]", "process.loss_weight=flat",
                           "process.schedule.eps=0.01", "data.val_source=null"])
    assert r.train.lr == pytest.approx(1e-4)
    assert r.train.betas == [0.9, 0.95]
    assert r.process.loss_weight == "flat" and r.process.schedule.eps == pytest.approx(0.01)
    assert r.data.val_source is None


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_recipe(raw={}, overrides=["train.lr"])


def test_saved_config_round_trips(tmp_path):
    r = load_recipe(raw={"name": "rt", "train": {"lr": 2e-4}, "process": {"name": "masked", "time_conditioning": True}})
    save_recipe(r, tmp_path / "c.yaml")
    again = load_recipe(tmp_path / "c.yaml")
    assert to_dict(again) == to_dict(r)
    assert dataclasses.is_dataclass(again.process)


def test_validation_rules():
    with pytest.raises(ConfigError, match="divisible"):
        load_recipe(raw={"model": {"hidden_size": 30, "num_heads": 4}})
    with pytest.raises(ConfigError, match="exactly one of"):
        load_recipe(raw={"tokenizer": {"path": "x", "train": "bpe"}})
    with pytest.raises(ConfigError, match="neither a YAML file nor a shipped recipe"):
        load_recipe("no/such/recipe.yaml")


def test_yaml_no_is_read_as_the_literal_no(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  mixed_precision: no\n")  # YAML 1.1 parses this as false
    assert load_recipe(path).train.mixed_precision == "no"
