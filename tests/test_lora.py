"""LoRA through peft: only adapters train, the final folder holds the merged model plus adapter/,
adapters load and merge back to the same logits, resume is exact, bad targets are one-line errors."""
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="LoRA needs peft: pip install 'textdiff[lora]'")

from transformers import AutoModelForMaskedLM  # noqa: E402

from textdiff.config import DenoiserConfig, load_recipe  # noqa: E402
from textdiff.errors import ConfigError  # noqa: E402
from textdiff.lm import DiffusionLM  # noqa: E402
from textdiff.lora import LoraDenoiser, apply_lora, load_lora  # noqa: E402
from textdiff.models.external import ExternalDenoiser, load_external_denoiser  # noqa: E402
from textdiff.models.modeling_textdiff import TextDiffModel  # noqa: E402
from textdiff.training.loop import train  # noqa: E402


def losses(run):
    return [json.loads(x)["train_loss"] for x in (Path(run) / "metrics.jsonl").read_text().splitlines() if "train_loss" in x]


@pytest.mark.slow
def test_lora_fine_tune_of_a_textdiff_model_saves_merges_and_resumes(tiny, tmp_path):
    base = train(load_recipe(raw=tiny(output_dir=str(tmp_path / "base"), train={"max_steps": 4, "eval_every": 4})))
    raw = lambda out: tiny(output_dir=str(tmp_path / out), lora={"r": 4, "alpha": 8, "target_modules": ["qkv", "proj"]},  # noqa: E731
                           train={"max_steps": 6, "eval_every": 3, "save_every": 3, "init_from": str(base), "lr": 1e-2})
    final = train(load_recipe(raw=raw("full")))
    cut = load_recipe(raw=raw("cut"))
    train(cut, stop_at=3)
    train(cut, resume=True)  # adapters come back from checkpoint-3/adapter
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "full"), rel=1e-5)

    assert (final / "adapter" / "adapter_config.json").is_file() and (final / "adapter" / "adapter_model.safetensors").is_file()
    lm = DiffusionLM.from_pretrained(final, device="cpu")  # the merged model, an ordinary textdiff folder
    assert isinstance(lm.model, TextDiffModel)
    ids = torch.randint(0, lm.process.mask_id, (2, 16))
    start = TextDiffModel.from_pretrained(base).eval()
    assert not torch.allclose(lm.model(ids).logits, start(ids).logits)  # the adapters changed the model
    adapted = load_lora(str(base), final).eval()  # base + adapters, unmerged
    assert isinstance(adapted, LoraDenoiser)
    assert torch.allclose(adapted(ids).logits, lm.model(ids).logits, atol=1e-5)
    merged = load_lora(str(base), final, merge=True).eval()
    assert isinstance(merged, TextDiffModel) and torch.allclose(merged(ids).logits, lm.model(ids).logits, atol=1e-5)
    assert lm.generate(["The"], max_new_tokens=4, steps=4, seed=0)[0].startswith("The")


def test_lora_on_an_external_bert_denoiser(tmp_path):
    from test_hf import tiny_bert_folder

    folder = tiny_bert_folder(tmp_path / "bert")
    bert = load_external_denoiser_from_hf(folder)
    ids = torch.randint(5, 100, (2, 10))
    before = bert(ids).logits.detach()
    model = apply_lora(bert, {"r": 2, "alpha": 4, "target_modules": ["query", "value"]}).eval()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # only the adapters train
    assert sum("query" in n for n in trainable) == 2 and sum("value" in n for n in trainable) == 2
    assert torch.equal(model(ids).logits, before)  # B starts at zero: exactly the base model
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    adapted = model(ids).logits.detach()
    assert not torch.allclose(adapted, before)
    model.save_pretrained(tmp_path / "out")
    plain = AutoModelForMaskedLM.from_pretrained(tmp_path / "out").eval()  # merged, in BERT's own format
    assert torch.allclose(plain(ids).logits, adapted, atol=1e-5)
    again = load_external_denoiser(tmp_path / "out").eval()
    assert isinstance(again, ExternalDenoiser) and torch.allclose(again(ids).logits, adapted, atol=1e-5)
    reloaded = load_lora(load_external_denoiser_from_hf(folder), tmp_path / "out", merge=True).eval()
    assert torch.allclose(reloaded(ids).logits, adapted, atol=1e-5)


def load_external_denoiser_from_hf(folder):
    hf = AutoModelForMaskedLM.from_pretrained(folder).eval()
    return ExternalDenoiser(hf, DenoiserConfig(path=str(folder)), hf.config.vocab_size, 4).eval()


def test_a_missing_lora_target_module_is_a_one_line_error(tiny, tmp_path):
    from textdiff.models import TextDiffConfig

    model = TextDiffModel(TextDiffConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2))
    with pytest.raises(ConfigError, match="no linear layer named 'q_proj'") as e:
        apply_lora(model, {"target_modules": ["q_proj"]})
    assert "\n" not in str(e.value) and "qkv" in str(e.value)  # the candidates are named
    with pytest.raises(ConfigError, match="no linear layer named 'nope'"):
        train(load_recipe(raw=tiny(lora={"target_modules": ["qkv", "nope"]}, train={"max_steps": 1})))
