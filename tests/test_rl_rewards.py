"""Rewards (textdiff/rl/rewards.py) and the RL config (textdiff/rl/config.py)."""
import json
import math
from fractions import Fraction

import pytest
import torch

from textdiff.dataclass_io import from_dict, to_dict
from textdiff.errors import ConfigError
from textdiff.rl.config import RLConfig
from textdiff.rl.rewards import compute_rewards, extract_answer, load_reward


@pytest.mark.parametrize("text,want", [
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", 72),
    ("so the total is #### 1,234 dollars", 1234),
    ("first 3, then \\boxed{18} and later 5", 18),
    ("\\boxed{\\text{x}=\\{7\\}} 9", 7),
    ("<reasoning>2+2 is 4, plus 1</reasoning>\n<answer>\n5\n</answer>", 5),
    ("I think 3 then 7.", 7),
    ("It costs $1,000.00 in all", 1000),
    ("−12 degrees", -12),
    ("#### 3/4", Fraction(3, 4)),
    ("#### 0.75", Fraction(3, 4)),
    ("no digits here", None),
    ("#### none", None),
])
def test_answer_extraction_rule(text, want):
    assert extract_answer(text) == (None if want is None else Fraction(want))


def test_exact_answer_plain_and_conversational():
    f = load_reward("exact_answer")
    gold = ["He has 3 + 4 = 7 apples.\n#### 7", "#### 1,500", "#### 12", "no number"]
    plain = ["<answer>7</answer>", "The answer is 1500.", "#### 13", "#### 4"]
    assert f(prompts=[""] * 4, completions=plain, answer=gold) == [1.0, 1.0, 0.0, None]
    chat = [[{"role": "assistant", "content": c}] for c in plain]
    assert f(prompts=[[]] * 4, completions=chat, answer=gold) == [1.0, 1.0, 0.0, None]
    with pytest.raises(ConfigError, match="'answer' column"):
        f(prompts=[""], completions=["1"])


def test_format_and_length_rewards():
    tags = load_reward("tag_format")
    texts = ["<reasoning>\nwhy\n</reasoning>\n<answer>\n3\n</answer>\n", "<answer>3</answer>", "x <reasoning>a</reasoning><answer>b</answer>"]
    assert tags(prompts=None, completions=texts) == [1.0, 0.0, 0.0]
    think = load_reward("tag_format", {"tags": ["think", "answer"]})
    assert think(prompts=None, completions=["<think>a</think> <answer>b</answer>"]) == [1.0]
    rx = load_reward("regex_format", {"pattern": r"^\d+$"})
    assert rx(prompts=None, completions=["42", "42 apples"]) == [1.0, 0.0]
    ln = load_reward("length", {"target": 4})
    assert ln(prompts=None, completions=["", "", ""], completion_ids=[[1] * 4, [1] * 2, [1] * 12]) == [1.0, 0.5, 0.0]
    chars = load_reward("length", {"target": 2, "unit": "chars"})
    assert chars(prompts=None, completions=["ab", "abc"]) == [1.0, 0.5]


@pytest.mark.parametrize("name,kwargs,match", [
    ("regex_format", {}, "needs a pattern"),
    ("regex_format", {"pattern": "("}, "not a valid regular expression"),
    ("length", {}, "positive integer target"),
    ("length", {"target": 3, "unit": "words"}, "unit="),
    ("tag_format", {"tags": ["a b"]}, "tag names"),
    ("exact_answer", {"bogus": 1}, "bad rl.reward_kwargs"),
    ("rewards/mine.py:f", {}, "file path"),
    ("not a name", {}, "neither a built-in"),
    ("textdiff_no_such_module:f", {}, "cannot import module"),
    ("math:no_such_function", {}, "no callable"),
])
def test_bad_rewards_give_one_line_errors(name, kwargs, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_reward(name, kwargs)
    assert "\n" not in str(e.value)


def test_user_reward_from_the_users_own_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def brevity(prompts, completions, difficulty, **kwargs):\n"
        "    return [None if d == 'skip' else 1.0 / (1 + len(c)) for c, d in zip(completions, difficulty)]\n"
        "def scaled(factor):\n"
        "    def f(prompts, completions, **kwargs):\n"
        "        return [factor * len(c) for c in completions]\n"
        "    return f\n"
        "def broken(prompts, completions, **kwargs):\n"
        "    return ['high'] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    funcs = [("my_rewards:brevity", load_reward("my_rewards:brevity")),
             ("my_rewards:scaled", load_reward("my_rewards:scaled", {"factor": 2.0}))]
    out = compute_rewards(funcs, ["p"] * 3, ["a", "abc", ""], completion_ids=[[1], [1, 2, 3], []],
                          columns={"difficulty": ["easy", "skip", "hard"]})
    assert out.shape == (3, 2) and out[0, 0] == 0.5 and math.isnan(float(out[1, 0])) and out[2, 0] == 1.0
    assert torch.equal(out[:, 1], torch.tensor([2.0, 6.0, 0.0]))
    with pytest.raises(ConfigError, match="return a number or None"):
        compute_rewards([("my_rewards:broken", load_reward("my_rewards:broken"))], ["p"], ["a"])
    with pytest.raises(ConfigError, match="one number per completion"):
        compute_rewards([("short", lambda prompts, completions, **kw: [1.0])], ["p"] * 2, ["a", "b"])
    with pytest.raises(ConfigError, match="repeat it per completion"):
        compute_rewards(funcs, ["p"] * 3, ["a", "b", "c"], columns={"difficulty": ["easy"]})


# ---- RLConfig ------------------------------------------------------------------------------------


def test_defaults_validate_and_round_trip():
    cfg = from_dict(RLConfig, {"objective": "elbo", "sampler": {"name": "threshold", "threshold": 0.8}, "temperature": 0.7,
                               "reward_funcs": ["exact_answer", "regex_format"],
                               "reward_kwargs": {"regex_format": {"pattern": "^a"}}, "reward_weights": [1.0, 0.5]}, "rl")
    back = from_dict(RLConfig, json.loads(json.dumps(to_dict(cfg))), "rl")
    assert back == cfg
    assert cfg.rollout_sampler().temperature == 0.7 and cfg.rollout_sampler().threshold == 0.8
    assert cfg.clip_range == (0.8, 1.2) and cfg.weights() == [1.0, 0.5]
    assert from_dict(RLConfig, {"epsilon_high": 0.28}, "rl").clip_range == (0.8, 1.28)


@pytest.mark.parametrize("raw,match", [
    ({"num_generations": 1}, "at least 2 completions"),
    ({"num_iterations": 0}, "rl.num_iterations=0 must be at least 1"),
    ({"epsilon": 1.5}, "below 1"),
    ({"beta": -0.1}, "rl.beta=-0.1 must be >= 0"),
    ({"p_mask_prompt": 1.5}, r"rl.p_mask_prompt=1.5 must be in \[0.0, 1.0\]"),
    ({"max_completion_length": 100, "block_size": 32}, "does not divide"),
    ({"reward_funcs": ["exact_answer", "tag_format"], "reward_weights": [1.0]}, "one weight per function"),
    ({"reward_funcs": []}, "is empty"),
    ({"reward_funcs": ["exact_answer", "exact_answer"]}, "names a reward twice"),
    ({"reward_funcs": ["/data/model/reward.py:f"]}, "file path"),
    ({"reward_kwargs": {"length": {"target": 3}}}, "not in rl.reward_funcs"),
    ({"use_cache": "fast"}, "rl.use_cache: 'fast' is not one of"),
    ({"objective": "ppo"}, "not one of"),
    ({"loss_type": "sum"}, "not one of"),
    ({"num_generation": 4}, "unknown key"),
    ({"temperature": float("nan")}, "finite"),
])
def test_bad_rl_settings_give_one_line_errors(raw, match):
    with pytest.raises(ConfigError, match=match) as e:
        from_dict(RLConfig, raw, "rl")
    assert "\n" not in str(e.value)


def test_trl_reward_helpers_load_by_name_when_trl_is_installed():
    """TRL's reward helpers share the signature: a recipe may name them; the GRPO trainer is not imported."""
    import sys

    pytest.importorskip("trl")
    think = load_reward("trl.rewards:think_format_reward")
    assert think(prompts=None, completions=[[{"content": "<think>a</think> b"}], [{"content": "b"}]]) == [1.0, 0.0]
    overlong = load_reward("trl.rewards:get_soft_overlong_punishment", {"max_completion_len": 10, "soft_punish_cache": 4})
    out = compute_rewards([("overlong", overlong)], [""] * 3, ["", "", ""], completion_ids=[[1] * 5, [1] * 8, [1] * 12])
    assert out[:, 0].tolist() == [0.0, -0.5, -1.0]
    assert not any("grpo_trainer" in m for m in sys.modules)
