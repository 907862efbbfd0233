"""LoRA SFT recipes of the published large diffusion LMs (recipes/sft-llada-lora.yaml,
sft-dream-lora.yaml), run for a few steps on the tiny random checkpoints in the publishers' layout
(tests/fixtures/published/<family>/) with a chat JSONL written here: the loss is finite, the prompt
is never corrupted, the adapters are saved, and the merged model reloads natively with exactly
base + adapters."""
import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="LoRA needs peft: pip install 'textdiff[lora]'")

import textdiff.objective as objective  # noqa: E402
import textdiff.training.hooks as hooks  # noqa: E402
import textdiff.training.loop as loop  # noqa: E402
from textdiff.config import load_recipe  # noqa: E402
from textdiff.lm import DiffusionLM  # noqa: E402
from textdiff.lora import load_lora  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "published"
FAMILIES = [f for f in ("llada", "dream", "llada_moe", "llada2", "llada21", "sdar", "fast_dllm_v2")
            if (FIXTURES / f / "config.json").is_file()]
BLOCK = {"llada2": 32, "llada21": 32, "fast_dllm_v2": 32, "sdar": 4}  # block diffusion: seq_len in whole blocks


def chat_jsonl(path: Path, words: list[str], n: int = 12) -> Path:
    """Reversal task in chat rows: user 'a b c' -> assistant 'c b a' (words of the fixture's vocabulary)."""
    g = torch.Generator().manual_seed(0)
    with path.open("w") as f:
        for _ in range(n):
            picked = [words[int(i)] for i in torch.randint(0, len(words), (3,), generator=g)]
            f.write(json.dumps({"messages": [{"role": "user", "content": " ".join(picked)},
                                             {"role": "assistant", "content": " ".join(reversed(picked))}]}) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_lora_sft_recipe_trains_on_the_published_fixture_and_merges(family, tmp_path, monkeypatch, capsys):
    fixture = FIXTURES / family
    base = DiffusionLM.from_pretrained(str(fixture))
    vocab = base.tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.startswith("w") and w[1:].isdigit())[:20]
    data = chat_jsonl(tmp_path / "chat.jsonl", words)
    recipe = load_recipe(ROOT / "recipes" / f"sft-{family.replace('_', '-')}-lora.yaml", [
        f"output_dir={tmp_path / 'run'}", f"train.init_from={fixture}", f"sft.source={data}", "sft.val_fraction=0.2",
        f"data.seq_len={64 if BLOCK.get(family) == 32 else 24}", "train.max_steps=3", "train.batch_size=2", "train.grad_accum=1", "train.warmup_steps=1",
        "train.lr=0.05", "train.eval_every=3", "train.eval_batches=1", "train.save_every=3", "train.log_every=1",
        "train.mixed_precision=no", "train.trackers=[]", "lora.dropout=0.0"])
    assert recipe.train.gradient_checkpointing and recipe.lora is not None and recipe.denoiser is None
    assert recipe.process.name == ("block" if family in BLOCK else "masked") and recipe.sampler.name == {"llada21": "editing"}.get(family, base.sampler_config.name)

    seen = []  # what the denoiser was shown, with the clean rows and their prompt masks
    nelbo_terms = objective.nelbo_terms

    def spy(model, process, x0, frozen=None, **kw):
        def shown(input_ids, **call):
            noisy = input_ids[:, : x0.shape[1]]  # block diffusion (LLaDA 2.0) feeds [x_t ; x0]: the noisy half
            seen.append((noisy.detach().clone(), x0.detach().clone(), frozen.detach().clone()))
            return model(input_ids, **call)
        return nelbo_terms(shown, process, x0, frozen=frozen, **kw)

    monkeypatch.setattr(objective, "nelbo_terms", spy)  # validation (objective.estimate_nelbo)
    monkeypatch.setattr(hooks, "nelbo_terms", spy)  # the training step (TrainHooks.nelbo_terms)
    final = loop.train(recipe)

    mask_id = base.tokenizer.mask_token_id
    assert len(seen) >= 3
    for shown, x0, frozen in seen:
        assert frozen.any(dim=1).all()  # every row has a prompt
        assert torch.equal(shown[frozen], x0[frozen]) and not (shown[frozen] == mask_id).any()  # prompts never masked
    assert any((shown[~frozen] == mask_id).any() for shown, _, frozen in seen)  # responses are
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["train_loss"] for m in lines if "train_loss" in m]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert any(math.isfinite(m.get("val_nelbo", float("nan"))) for m in lines)

    adapter = final / "adapter" / "adapter_model.safetensors"
    from safetensors.torch import load_file

    adapters = load_file(str(adapter))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert any(f"{name}.lora_A" in k for k in adapters) and any(f"{name}.lora_B" in k for k in adapters), name
    assert any(float(v.abs().max()) > 0 for k, v in adapters.items() if "lora_B" in k)  # the adapters trained

    tuned = DiffusionLM.from_pretrained(str(final))  # native reload: no converter, no remote code
    # the base model's decoding setup survives fine-tuning (issue 30): sampler and options, block size, stop tokens
    given = {k: getattr(recipe.sampler, k) for k in recipe.sampler_given if k != "name"}
    wanted = base.sampler_config_for(recipe.sampler.name if "name" in recipe.sampler_given else None, **given)
    assert tuned.sampler_config == wanted  # the base's sampler, changed only where the recipe's sampler section says
    assert tuned.generation_defaults == base.generation_defaults and tuned.stop_token_ids == base.stop_token_ids
    printed = capsys.readouterr().out
    if wanted == base.sampler_config:
        assert f"decoding: kept the base model's (sampler {base.sampler_config.name}" in printed
    else:  # (LLaDA 2.1's recipe names its editing sampler over the threshold one its folder loads with)
        assert "decoding: the recipe's sampler section changes the base model's: " in printed
    assert f"tokenizer: copied from the checkpoint {fixture}" in printed
    assert json.loads((final / "config.json").read_text())["model_type"].startswith("textdiff_")
    assert type(tuned.model) is type(base.model) and not any("lora" in n for n, _ in tuned.model.named_parameters())
    merged = load_lora(base.model, final, merge=True).eval()  # the fixture's weights + the saved adapters
    ids = torch.tensor([base.tokenizer(" ".join(words[:6]), add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        got, want = tuned.model.eval()(ids).logits, merged(ids).logits
        start = DiffusionLM.from_pretrained(str(fixture)).model.eval()(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, start, atol=1e-4)  # fine-tuning changed the model
    assert tuned.tokenizer.chat_template == base.tokenizer.chat_template  # the chat template travels with it
    out = tuned.generate([[{"role": "user", "content": " ".join(words[:3])}]], max_new_tokens=8, steps=8, seed=0)
    assert isinstance(out[0], str)
