"""The adapt: recipe section and the block-size schedule (textdiff.adapt.config / block_schedule)."""
import pytest
import yaml

from textdiff.adapt import AdaptConfig, BlockPhase
from textdiff.adapt.block_schedule import BlockSchedule, warmup_stable_decay
from textdiff.adapt.config import parse_mask_init
from textdiff.dataclass_io import from_dict, to_dict
from textdiff.errors import ConfigError

SECTION = """
target: block
block_size: 32
anneal_steps: 500
anneal_rule: band
shift: true
mask_init: token:<|endoftext|>
complementary_masks: true
block_schedule:
  - {steps: 100, block_size: 1}
  - {steps: 100, block_size: 4}
  - {steps: 800, block_size: 512}
"""


def test_defaults_validate():
    cfg = from_dict(AdaptConfig, {}, "adapt")
    assert cfg.target == "masked" and cfg.shift and cfg.anneal_steps == 0 and cfg.mask_init == "mean"


def test_yaml_round_trip():
    cfg = from_dict(AdaptConfig, yaml.safe_load(SECTION), "adapt")
    assert cfg.block_schedule[2] == BlockPhase(800, 512)
    assert from_dict(AdaptConfig, yaml.safe_load(yaml.safe_dump(to_dict(cfg))), "adapt") == cfg


@pytest.mark.parametrize("section, message", [
    ({"target": "block"}, "needs adapt.block_size"),
    ({"target": "block", "block_size": 0}, "at least 1"),
    ({"block_size": 16}, "belong to adapt.target=block"),
    ({"block_schedule": [{"steps": 10, "block_size": 4}]}, "belong to adapt.target=block"),
    ({"target": "block", "block_size": 4, "block_schedule": []}, "empty list"),
    ({"target": "block", "block_size": 4, "block_schedule": [{"steps": 0, "block_size": 4}]}, "steps=0"),
    ({"anneal_steps": -1}, "anneal_steps"),
    ({"mask_init": "median"}, "mask_init"),
    ({"mask_init": "token:"}, "needs a token"),
    ({"anneal_rule": "linear"}, "not one of"),
    ({"target": "block", "block_size": 4, "block_schedule": [{"steps": 5}]}, "block_size"),
])
def test_bad_sections_get_one_line_errors(section, message):
    with pytest.raises(ConfigError, match=message) as err:
        from_dict(AdaptConfig, section, "adapt")
    assert "\n" not in str(err.value)


def test_parse_mask_init():
    assert parse_mask_init("mean") == ("mean", None)
    assert parse_mask_init("noisy_mean") == ("noisy_mean", None)
    assert parse_mask_init("keep") == ("keep", None)
    assert parse_mask_init("token:811") == ("token", 811)
    assert parse_mask_init("token:<unk>") == ("token", "<unk>")
    with pytest.raises(ConfigError):
        parse_mask_init("mean:3")


def test_block_schedule_by_step():
    s = BlockSchedule([BlockPhase(3, 1), BlockPhase(2, 4), BlockPhase(5, 16)], target=4)
    sizes = [s.block_size(step) for step in range(12)]
    assert sizes == [1, 1, 1, 4, 4, 16, 16, 16, 16, 16, 4, 4]
    assert s.total_steps == 10 and s.phase(0) == 0 and s.phase(3) == 1 and s.phase(10) == 3
    assert s.changes() == [(0, 1), (3, 4), (5, 16), (10, 4)]
    assert BlockSchedule(None, 8).block_size(0) == 8 and BlockSchedule(None, 8).changes() == [(0, 8)]


def test_changes_merge_equal_neighbours():
    s = BlockSchedule([BlockPhase(3, 4), BlockPhase(2, 4)], target=4)
    assert s.changes() == [(0, 4)]


def test_warmup_stable_decay_shape():
    s = warmup_stable_decay([1, 4, 32], 10, stable_size=128, stable_steps=50, target=32)
    assert [s.block_size(i) for i in (0, 9, 10, 20, 29, 30, 79, 80, 10_000)] == [1, 1, 4, 32, 32, 128, 128, 32, 32]
    s.check_divides(128)
    with pytest.raises(ConfigError, match=r"adapt.block_schedule\[3\].block_size=128 does not divide data.seq_len=96"):
        s.check_divides(96)
    with pytest.raises(ConfigError, match="adapt.block_size=32 does not divide"):
        BlockSchedule(None, 32).check_divides(48)
