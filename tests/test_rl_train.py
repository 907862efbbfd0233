"""RL through the normal training path (textdiff/rl/trainer.py hooked into training/loop.py): both
estimators train a saved model, the feedback lines are written, a run stopped inside a rollout
generation resumes to the same curve, 2 DDP processes compute what one computes, and bad RL
settings are one-line errors."""
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from textdiff.config import load_recipe
from textdiff.errors import ConfigError, IncompatibleError
from textdiff.training.loop import train

FEEDBACK = ("reward", "reward_std", "rewards/regex_format/mean", "rewards/exact_answer/mean", "kl",
            "clip_ratio/region_mean", "entropy", "rollout_tokens_per_s", "rollout_s", "update_s", "frac_reward_zero_std")


def rl_recipe(tiny_trained, out: Path, **rl) -> dict:
    """RL on the tiny trained model: 'add' prompts, a digit-format reward that varies between
    completions (the model is far too small to add), exact answers for the held-out curve."""
    raw = {k: v for k, v in tiny_trained.raw.items() if k not in ("tokenizer", "data", "model")}
    raw.update(output_dir=str(out), data={"seq_len": 32},
               sft={"source": "synthetic", "tasks": ["add"], "num_examples": 64, "val_fraction": 0.1},
               rl={"num_generations": 4, "max_completion_length": 8, "steps": 4, "block_size": None, "beta": 0.04,
                   "reward_funcs": ["exact_answer", "regex_format"], "reward_kwargs": {"regex_format": {"pattern": "[0-9]"}},
                   "eval_every": 2, "eval_prompts": 4, **rl},
               train={**tiny_trained.raw["train"], "init_from": str(tiny_trained.final), "max_steps": 2, "batch_size": 8,
                      "lr": 0.01, "warmup_steps": 0, "save_every": 1, "log_every": 1, "eval_every": 100})
    return raw


def lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def curve(run: Path) -> dict:
    return {m["step"]: (m["train_loss"], m["reward"], m["kl"]) for m in lines(run) if "train_loss" in m}


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["diffu_grpo", "elbo"])
def test_both_estimators_train_and_report(tiny_trained, tmp_path, objective):
    final = train(load_recipe(raw=rl_recipe(tiny_trained, tmp_path / "run", objective=objective)))
    got = lines(tmp_path / "run")
    steps = [m for m in got if "train_loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:
        for key in FEEDBACK:
            assert key in m, key
        assert math.isfinite(m["train_loss"]) and m["kl"] >= 0 and 0 <= m["clip_ratio/region_mean"] <= 1
        assert m["entropy"] > 0 and m["rollout_tokens_per_s"] > 0 and m["rollout_s"] > 0 and m["update_s"] > 0
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy IS the reference
    assert steps[1]["kl"] > 0  # after one update it is not
    assert any(m["reward_std"] > 0 for m in steps)  # the reward varied: there was a learning signal
    evals = [m for m in got if "eval_reward" in m]
    assert [m["step"] for m in evals] == [0, 2] and all(m["eval_prompts"] == 4 for m in evals)
    assert all(0 <= m["eval_rewards/exact_answer/mean"] <= 1 for m in evals)
    before, after = weights(tiny_trained.final), weights(final)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the policy moved
    assert (tmp_path / "run" / "rl_curves.png").is_file() or not _has_matplotlib()


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


@pytest.mark.slow
def test_stopped_inside_a_generation_resumes_to_the_same_curve(tiny_trained, tmp_path):
    """num_iterations=2: steps 3-4 reuse generation 1's rollouts; a run killed after step 3 keeps them
    (and their old / reference log-probs) in checkpoint-3 and continues exactly."""
    raw = rl_recipe(tiny_trained, tmp_path / "ref", num_iterations=2, eval_every=0)
    raw["train"]["max_steps"] = 4
    train(load_recipe(raw=raw))
    cut = {**raw, "output_dir": str(tmp_path / "cut")}
    train(load_recipe(raw=cut), stop_at=3)
    assert (tmp_path / "cut" / "checkpoint-3" / "objective-0.safetensors").is_file()
    assert not (tmp_path / "cut" / "checkpoint-2" / "objective-0.safetensors").exists()  # a generation boundary: nothing kept
    train(load_recipe(raw=cut), resume=True)
    ref, got = curve(tmp_path / "ref"), curve(tmp_path / "cut")
    assert sorted(got) == [1, 2, 3, 4]
    assert got == ref  # losses, rewards and KL to the last bit


@pytest.mark.slow
def test_two_processes_match_one(tiny_trained, tmp_path):
    from test_distributed import launch_two_processes

    raw = rl_recipe(tiny_trained, tmp_path / "one", eval_every=0)
    train(load_recipe(raw=raw))
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump({**raw, "output_dir": str(tmp_path / "two")}))
    launch_two_processes(recipe_file, "train.batch_size=4")  # 2 processes x 4 completions = the same 8 per step
    one, two = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert sorted(two) == [1, 2]
    for step in one:
        assert two[step][1] == one[step][1]  # the same rollouts and rewards
        assert two[step][0] == pytest.approx(one[step][0], rel=1e-4, abs=1e-6)
        assert two[step][2] == pytest.approx(one[step][2], rel=1e-3, abs=1e-7)


BAD = [
    ({"train": {"batch_size": 6}}, ConfigError, "multiple of rl.num_generations"),
    ({"rl": {"num_generations": 1}}, ConfigError, "at least 2"),
    ({"rl": {"reward_funcs": ["no_such_reward"]}}, ConfigError, "neither a built-in"),
    ({"rl": {"objective": "ppo"}}, ConfigError, "objective"),
    ({"rl": {"p_mask_prompt": 1.5}}, ConfigError, "p_mask_prompt"),
    ({"rl": {"max_completion_length": 10, "block_size": 4}}, ConfigError, "does not divide"),
    ({"sft": None}, ConfigError, "sft section"),
    ({"process": {"name": "uniform"}, "sampler": {"name": "ancestral"}}, IncompatibleError, "masked-diffusion"),
]


@pytest.mark.parametrize("change,error,words", BAD)
def test_bad_rl_settings_are_one_line_errors(tiny_trained, tmp_path, change, error, words):
    raw = rl_recipe(tiny_trained, tmp_path / "run")
    for section, value in change.items():
        raw[section] = {**raw[section], **value} if isinstance(value, dict) and isinstance(raw.get(section), dict) else value
    with pytest.raises(error) as e:
        load_recipe(raw=raw)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_names_checked_in_the_config_are_the_implemented_ones():
    """rl/config.py checks reward names and cache modes without importing rewards / contexts (layers)."""
    import typing

    from textdiff.contexts import CACHE_MODES
    from textdiff.rl.config import REWARD_NAMES, RLConfig
    from textdiff.rl.rewards import BUILTINS

    assert sorted(BUILTINS) == sorted(REWARD_NAMES)
    assert set(typing.get_args(typing.get_type_hints(RLConfig)["use_cache"])) == set(CACHE_MODES)


@pytest.mark.slow
def test_quickstart_recipe_runs_two_steps(tiny_trained, tmp_path):
    """recipes/rl-quickstart.yaml as shipped, from the tiny trained model instead of the SFT quickstart's."""
    root = Path(__file__).resolve().parents[1]
    recipe = load_recipe(root / "recipes" / "rl-quickstart.yaml", [
        f"output_dir={tmp_path / 'run'}", f"train.init_from={tiny_trained.final}", "data.seq_len=32", "train.max_steps=2",
        "train.batch_size=16", "rl.eval_prompts=4", "rl.eval_every=2", "sft.num_examples=200", "sft.val_fraction=0.05"])
    train(recipe)
    got = lines(tmp_path / "run")
    assert [m["step"] for m in got if "train_loss" in m] == [1, 2]
    assert [m["step"] for m in got if "eval_reward" in m] == [0, 2]
