"""LoRA SFT of DiffusionGemma (recipes/sft-diffusion-gemma-lora.yaml) for 2 steps on the tiny fixture
in the released layout: prompts never corrupted, answers corrupted with uniform random tokens (no
[MASK]), the publisher's cross-entropy loss finite, one adapter per tied encoder/decoder layer, and the
merged model reloads (released layout + textdiff.json) with exactly base + adapters."""
import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="LoRA needs peft: pip install 'textdiff[lora]'")
pytest.importorskip("transformers.models.diffusion_gemma")

import textdiff.objective as objective  # noqa: E402
import textdiff.training.hooks as hooks  # noqa: E402
import textdiff.training.loop as loop  # noqa: E402
from test_sft_published import chat_jsonl  # noqa: E402
from textdiff.config import load_recipe  # noqa: E402
from textdiff.lm import DiffusionLM  # noqa: E402
from textdiff.lora import load_lora  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "published" / "diffusion_gemma"


@pytest.mark.slow
def test_lora_sft_recipe_trains_diffusion_gemma_and_merges(tmp_path, monkeypatch):
    base = DiffusionLM.from_pretrained(str(FIXTURE), device="cpu")
    words = sorted(w for w in base.tokenizer.get_vocab() if w.startswith("w") and w[1:].isdigit())[:20]
    data = chat_jsonl(tmp_path / "chat.jsonl", words)
    recipe = load_recipe(ROOT / "recipes" / "sft-diffusion-gemma-lora.yaml", [
        f"output_dir={tmp_path / 'run'}", f"train.init_from={FIXTURE}", f"sft.source={data}", "sft.val_fraction=0.2",
        "data.seq_len=24", "train.max_steps=2", "train.batch_size=2", "train.grad_accum=1", "train.warmup_steps=1",
        "train.lr=0.05", "train.eval_every=2", "train.eval_batches=1", "train.save_every=2", "train.log_every=1",
        "train.mixed_precision=no", "train.trackers=[]", "lora.dropout=0.0"])
    assert recipe.process.loss == "cross_entropy" and recipe.lora is not None
    seen = []
    nelbo_terms = objective.nelbo_terms

    def spy(model, process, x0, frozen=None, **kw):
        terms = nelbo_terms(model, process, x0, frozen=frozen, **kw)
        seen.append((terms.x_t.detach().clone(), x0.detach().clone(), frozen.detach().clone()))
        return terms

    monkeypatch.setattr(objective, "nelbo_terms", spy)  # validation (objective.estimate_nelbo)
    monkeypatch.setattr(hooks, "nelbo_terms", spy)  # the training step (TrainHooks.nelbo_terms)
    final = loop.train(recipe)
    assert len(seen) >= 3  # two training steps and a validation batch
    for x_t, x0, frozen in seen:
        assert frozen.any(1).all() and torch.equal(x_t[frozen], x0[frozen])  # the prompt is never corrupted
    assert any((x_t[~frozen] != x0[~frozen]).any() for x_t, x0, frozen in seen)  # answers are
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["train_loss"] for m in lines if "train_loss" in m]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)

    from safetensors.torch import load_file

    adapters = load_file(str(final / "adapter" / "adapter_model.safetensors"))
    assert all("vision" not in k for k in adapters)
    assert any(float(v.abs().max()) > 0 for k, v in adapters.items() if "lora_B" in k)  # trained
    assert json.loads((final / "config.json").read_text())["model_type"] == "diffusion_gemma"
    tuned = DiffusionLM.from_pretrained(str(final), device="cpu")
    assert type(tuned.model) is type(base.model) and tuned.sampler_config.name == "entropy_bound"
    merged = load_lora(DiffusionLM.from_pretrained(str(FIXTURE), device="cpu").model, final, merge=True).eval()
    ids = torch.tensor([[2] + base.tokenizer(" ".join(words[:6]), add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        got, want = tuned.model.eval()(ids, logits_to_keep=3).logits, merged(ids, logits_to_keep=3).logits
        start = base.model.eval()(ids, logits_to_keep=3).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, start, atol=1e-4)  # fine-tuning changed the model
    # the encoder and decoder still share every text weight (one adapter each, merged once)
    net = tuned.model.network.model
    assert torch.equal(net.encoder.language_model.layers[0].self_attn.q_proj.weight, net.decoder.layers[0].self_attn.q_proj.weight)
