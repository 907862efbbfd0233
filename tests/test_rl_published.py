"""The GPU RL recipes (recipes/rl-llada-gsm8k.yaml, rl-dream-gsm8k.yaml: diffu-GRPO with LoRA, the
reference policy = adapters off) run for 2 steps on the tiny random checkpoints in the publishers'
layout (tests/fixtures/published/<family>/) with GSM8K-shaped chat prompts written here."""
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("peft", reason="LoRA needs peft: pip install 'textdiff[lora]'")

from textdiff.config import load_recipe  # noqa: E402
from textdiff.lm import DiffusionLM  # noqa: E402
from textdiff.training.loop import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "published"
FAMILIES = [f for f in ("llada", "dream") if (FIXTURES / f / "config.json").is_file()]


def gsm8k_like(path: Path, words: list[str], n: int = 8) -> Path:
    """{messages: [system, user], answer: '... #### k'} rows: d1's layout, in the fixture's vocabulary."""
    with path.open("w") as f:
        for i in range(n):
            question = " ".join(words[(i + j) % len(words)] for j in range(4))
            f.write(json.dumps({"messages": [{"role": "system", "content": "answer in tags"},
                                             {"role": "user", "content": question}], "answer": f"{words[i]} #### {i % 3}"}) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_gpu_rl_recipe_runs_two_steps_on_the_fixture(family, tmp_path):
    fixture = FIXTURES / family
    tok = DiffusionLM.from_pretrained(str(fixture)).tokenizer
    words = sorted(w for w in tok.get_vocab() if w.startswith("w") and w[1:].isdigit())[:12]
    data = gsm8k_like(tmp_path / "gsm.jsonl", words)
    recipe = load_recipe(ROOT / "recipes" / f"rl-{family}-gsm8k.yaml", [
        f"output_dir={tmp_path / 'run'}", f"train.init_from={fixture}", f"sft.source={data}", f"sft.val_source={data}",
        "data.seq_len=64", "rl.num_generations=2", "rl.num_iterations=2", "rl.max_completion_length=16", "rl.block_size=8",
        "rl.steps=8", "rl.max_prompt_length=40", "rl.eval_every=2", "rl.eval_prompts=2",
        "rl.reward_funcs=[exact_answer, regex_format]", f"rl.reward_kwargs={{regex_format: {{pattern: '{words[0]}|{words[1]}'}}}}",
        "train.max_steps=2", "train.batch_size=2", "train.grad_accum=1", "train.lr=0.05", "train.save_every=1",
        "train.mixed_precision=no", "train.trackers=[]", "lora.r=4"])
    assert recipe.lora is not None and recipe.train.gradient_checkpointing and recipe.rl.beta > 0
    final = train(recipe)
    got = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in got if "train_loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:
        assert all(math.isfinite(m[k]) for k in ("train_loss", "kl", "entropy", "reward", "clip_ratio/region_mean"))
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # adapters start at zero: policy = reference (adapters off)
    assert [m["step"] for m in got if "eval_reward" in m] == [0, 2]
    assert (tmp_path / "run" / "checkpoint-1" / "objective-0.safetensors").is_file()  # inside a generation (μ = 2)
    assert (final / "adapter" / "adapter_model.safetensors").is_file()
    tuned = DiffusionLM.from_pretrained(str(final))  # native reload of the merged model
    assert isinstance(tuned.generate(["w1 w2"], max_new_tokens=8, steps=8, seed=0)[0], str)
