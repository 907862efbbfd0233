"""DiffusionGemma in textdiff (issue 23) against the fixture transformers' own classes recorded
(tests/fixtures/published/diffusion_gemma, made by tests/fixtures/published/make_diffusion_gemma.py):
loading, fp32 logits (plain, self-conditioned, row-masked, left-padded; cached and uncached), the
one-line refusals, and ``lm.generate`` token for token equal to transformers' seeded ``generate`` in the
five recorded settings (float64 model, the sampler's ``rng = "torch"`` parity mode)."""
import json
import shutil
import sys

import pytest
import torch
from safetensors import safe_open

pytest.importorskip("transformers.models.diffusion_gemma")

from published_llm_helpers import FIXTURES, fixture_expected, load_fixture, relative  # noqa: E402
from textdiff.errors import ConfigError  # noqa: E402
from textdiff.models.cache import KVCache  # noqa: E402

FOLDER = FIXTURES / "diffusion_gemma"


@pytest.fixture(scope="module")
def lm():
    return load_fixture("diffusion_gemma", dtype=torch.float32)


@pytest.fixture(scope="module")
def expected():
    return fixture_expected("diffusion_gemma")


def recorded_settings():
    with safe_open(str(FOLDER / "expected.safetensors"), "pt") as f:
        return json.loads(f.metadata()["generate"])


def test_folder_loads_as_the_diffusion_gemma_family(lm):
    from textdiff.models.published import detect_family

    assert detect_family(FOLDER).name == "diffusion_gemma"
    assert lm.process.config.name == "uniform" and lm.model.config.attention == "causal"
    cfg = lm.sampler_config
    assert (cfg.name, cfg.entropy_bound, cfg.t_max, cfg.t_min) == ("entropy_bound", 0.1, 0.8, 0.4)
    assert (cfg.stability_threshold, cfg.confidence_threshold, cfg.self_conditioning, cfg.output) == (1, 0.005, True, "argmax")
    assert lm.generation_defaults == {"block_size": 256, "whole_blocks": True, "steps_per_block": 48, "pad_after_eos": True}
    assert lm.stop_token_ids == [6, 7] and lm.tokenizer.eos_token_id == 1 and lm.tokenizer.pad_token_id == 0
    assert type(lm.model.hf).__name__ == "DiffusionGemmaForBlockDiffusion"  # transformers' own class


def logits_of(model, x, name, cached):
    """The fixture's call ``name`` through the textdiff denoiser call, with or without a KV cache."""
    prompt, mask = x["prompt"], None
    if name == "logits_padded":
        prompt, mask = x["padded_prompt"], x["padded_mask"]
    inputs = {}
    if name.startswith("logits_self_conditioning"):
        inputs["self_conditioning_logits"] = x["self_conditioning_logits"]
    if name == "logits_self_conditioning_masked":
        inputs["self_conditioning_mask"] = x["self_conditioning_mask"]
    canvas = x["canvas"]
    with torch.no_grad():
        if cached:
            cache = KVCache(model.config.num_layers)
            model(prompt, attention_mask=mask, cache=cache, update_cache=True, logits_to_keep=1)
            return model(canvas, cache=cache, **inputs).logits
        row = torch.cat([prompt, canvas], 1)
        full = None if mask is None else torch.cat([mask, torch.ones_like(canvas, dtype=torch.bool)], 1)
        return model(row, attention_mask=full, logits_to_keep=canvas.shape[1], **inputs).logits


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("name", ["logits", "logits_self_conditioning", "logits_self_conditioning_masked",
                                  "logits_padded"])
def test_logits_match_transformers(lm, expected, name, cached):
    logits = logits_of(lm.model, expected, name, cached)
    assert logits.dtype == torch.float32 and logits.shape == expected[name].shape
    assert relative(logits, expected[name]) < 1e-5


def test_cache_and_full_row_agree_exactly(lm, expected):
    assert torch.equal(logits_of(lm.model, expected, "logits_padded", True),
                       logits_of(lm.model, expected, "logits_padded", False))


def copy_with(tmp_path, change):
    folder = tmp_path / "dg"
    shutil.copytree(FOLDER, folder)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_options_the_decoding_cannot_express_are_refused_in_one_line(tmp_path):
    from textdiff.lm import DiffusionLM

    both = copy_with(tmp_path, lambda c: c["text_config"].update(use_bidirectional_attention="all"))
    with pytest.raises(ConfigError, match="use_bidirectional_attention") as e:
        DiffusionLM.from_pretrained(both, device="cpu")
    assert "\n" not in str(e.value)
    shutil.rmtree(both)
    no_canvas = copy_with(tmp_path, lambda c: c.pop("canvas_length"))
    with pytest.raises(ConfigError, match="canvas_length"):
        DiffusionLM.from_pretrained(no_canvas, device="cpu")


def test_an_older_transformers_gets_a_one_line_error(monkeypatch):
    from textdiff.models.diffusion_gemma import require_diffusion_gemma

    for name in ("transformers.models.diffusion_gemma", "transformers.models.diffusion_gemma.modeling_diffusion_gemma"):
        monkeypatch.setitem(sys.modules, name, None)  # as if this transformers had no such module
    with pytest.raises(ConfigError, match="needs transformers >= 5.8"):
        require_diffusion_gemma()
    monkeypatch.undo()
    assert require_diffusion_gemma().__name__ == "DiffusionGemmaForBlockDiffusion"


@pytest.fixture(scope="module")
def lm64():
    return load_fixture("diffusion_gemma", dtype=torch.float64)


def run_setting(lm, expected, name, **overrides):
    """lm.generate with the recorded call's settings, drawing in transformers' order under its seed."""
    setting = recorded_settings()[name]
    kwargs = dict(setting["kwargs"])
    prompt, mask = expected[f"prompt_{setting['prompt']}"], expected[f"prompt_{setting['prompt']}_mask"]
    prompts = [row[m].tolist() for row, m in zip(prompt, mask)]
    sampler = {k: kwargs[k] for k in ("entropy_bound", "t_min", "t_max", "stability_threshold",
                                      "confidence_threshold") if k in kwargs}
    sampler = {"rng": "torch", **sampler, **overrides}
    steps_per = kwargs.get("max_denoising_steps", 48)
    canvas = setting["canvas_length"]
    blocks = -(-kwargs.get("max_new_tokens", 256) // canvas)
    torch.manual_seed(setting["seed"])
    _, out = lm.generate(prompts, max_new_tokens=kwargs.get("max_new_tokens", 256), block_size=canvas,
                         steps=steps_per * blocks, sampler_options=sampler, seed=0, return_output=True)
    return out, prompt


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(recorded_settings()))
def test_generate_matches_transformers_token_for_token(lm64, expected, name):
    out, prompt = run_setting(lm64, expected, name)
    assert torch.equal(out.sequences, expected[f"generate_{name}"])


@pytest.mark.slow
def test_early_stop_saves_denoiser_calls_and_finished_rows_are_padded(lm64, expected):
    """The stable-and-confident stop ends canvases early (``confident_only``: 2 canvases of at most 10
    steps), and every token after a row's first EOS is padding (``batch``: both rows end, in canvas 2)."""
    out, _ = run_setting(lm64, expected, "confident_only")
    assert out.nfe < 2 * 10
    out, prompt = run_setting(lm64, expected, "batch")
    assert out.sequences.shape[1] == prompt.shape[1] + 2 * 16  # stopped after canvas 2 of 3: every row ended
    rows = out.sequences[:, prompt.shape[1]:].tolist()
    assert any(tok in (1, 6, 7) for row in rows for tok in row)
    for row in rows:
        ends = [i for i, tok in enumerate(row) if tok in (1, 6, 7)]
        if ends:
            assert all(tok == 0 for tok in row[ends[0] + 1:])


def test_default_rng_is_batch_invariant(lm):
    """textdiff's own draws (per-row float64 generators): a row of a batch equals the row decoded alone."""
    prompts = [[2, 5, 11, 20, 21, 6, 5, 12], [2, 5, 11, 30, 6, 5, 12]]
    kw = dict(max_new_tokens=8, block_size=8, steps=6, seed=[3, 4], sampler_options={"confidence_threshold": 0.5})
    _, both = lm.generate(prompts, return_output=True, **kw)
    _, alone = lm.generate(prompts[1:], return_output=True, **{**kw, "seed": [4]})
    assert both.generated[1] == alone.generated[0]


def test_training_pass_is_the_networks_own_canvas_by_canvas(lm):
    """The training / scoring call (``clean_ids``): each canvas after the prompt equals transformers' forward
    of the clean prefix (encoder) and that noisy canvas (decoder), for rows with prompts of different lengths."""
    m = lm.model
    saved, m.config.canvas_length = m.config.canvas_length, 4
    try:
        g = torch.Generator().manual_seed(0)
        x0, x_t = torch.randint(14, 64, (2, 11), generator=g), torch.randint(0, 64, (2, 11), generator=g)
        prompt = torch.zeros(2, 11, dtype=torch.bool)
        prompt[0, :3], prompt[1, :5] = True, True
        with torch.no_grad():
            out = m(x_t, clean_ids=x0, context_mask=prompt).logits
            assert bool((out[prompt] == 0).all())
            for b, p in [(0, 3), (1, 5)]:
                for lo in range(p, 11, 4):
                    ref = m.hf(x0[b:b + 1, :lo], decoder_input_ids=x_t[b:b + 1, lo:lo + 4]).logits
                    assert relative(out[b:b + 1, lo:lo + 4], ref) < 1e-5
    finally:
        m.config.canvas_length = saved


def test_score_is_the_uniform_nelbo_of_the_canvases(lm, monkeypatch):
    """lm.score: the uniform-process NELBO of the text + EOS as canvases after <bos>, repeatable under its
    seed; it is the process's loss on the logits of the training pass (no other estimator)."""
    a = lm.score(["w1 w2 w3 w4", "w5 w5 w5"], t_samples=8)
    assert a == lm.score(["w1 w2 w3 w4", "w5 w5 w5"], t_samples=8)
    assert all(0 < v < 100 for v in a) and a[0] != a[1]
    calls = []
    forward = type(lm.model).teacher_forced
    monkeypatch.setattr(type(lm.model), "teacher_forced", lambda self, *args: calls.append(args) or forward(self, *args))
    lm.score(["w1 w2"], t_samples=2)
    x_t, x0, context, valid, _ = calls[0]
    assert context is None and x0.shape == (2, 3) and x0[0].tolist() == lm.tokenizer("w1 w2")["input_ids"] + [1]


def test_cached_decoding_equals_uncached(lm):
    """The encoder cache of committed canvases is exact: decoding with it (default) and feeding the whole
    row every step (use_cache='none') give the same tokens, over two canvases with self-conditioning."""
    prompts = [[2, 5, 11, 20, 21, 6, 5, 12], [2, 5, 11, 30, 6, 5, 12]]
    kw = dict(max_new_tokens=8, block_size=4, steps=6, seed=[3, 4], return_output=True)
    _, cached = lm.generate(prompts, **kw)
    _, full = lm.generate(prompts, use_cache="none", **kw)
    assert torch.equal(cached.sequences, full.sequences)
    assert full.model_calls == full.nfe and cached.model_calls > cached.nfe  # the cached run's encoder passes
