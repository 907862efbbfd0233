"""The DiT network options of the published families (time_scale, lm_head_bias, layer_norm_eps) and
the process-side time input (``process.time_input`` / ``network_time``): defaults keep old folders
exactly as they were."""
import json
import math

import pytest
import torch

from textdiff.errors import ConfigError
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff.objective import nelbo_terms
from textdiff import build_process


def tiny(**kw):
    cfg = dict(vocab_size=37, hidden_size=32, num_layers=2, num_heads=4, cond_dim=16, max_position_embeddings=64,
               time_conditioning=True)
    cfg.update(kw)
    torch.manual_seed(0)
    m = TextDiffModel(TextDiffConfig(**cfg)).eval()
    with torch.no_grad():  # make the zero-initialised adaLN layers (and any bias) matter
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_folder_saved_without_the_new_fields_loads_with_identical_logits(tmp_path):
    """A config.json written before the options existed (no time_scale / lm_head_bias /
    layer_norm_eps keys) loads into the same network and gives bit-identical logits."""
    m = tiny()
    x, t = torch.randint(0, 37, (3, 11)), torch.rand(3)
    before = m(x, t=t).logits
    m.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for key in ("time_scale", "lm_head_bias", "layer_norm_eps"):
        cfg.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    old = TextDiffModel.from_pretrained(tmp_path).eval()
    assert old.config.time_scale == 1000.0 and old.config.lm_head_bias is False and old.config.layer_norm_eps == 1e-5
    assert old.lm_head.bias is None
    assert torch.equal(before, old(x, t=t).logits)


def test_time_embedding_features_are_scaled_by_time_scale():
    """features = [cos(s·c·f), sin(s·c·f)] with f_j = 10000^(−j/128): a model with time_scale s fed
    c / s conditions exactly like the default model (s = 1000) fed c / 1000."""
    x = torch.randint(0, 37, (2, 9))
    default = tiny()
    unscaled = tiny(time_scale=1.0)
    unscaled.load_state_dict(default.state_dict())
    t = torch.tensor([0.2, 0.7])
    assert torch.allclose(default(x, t=t).logits, unscaled(x, t=1000.0 * t).logits, atol=1e-5, rtol=1e-5)
    emb = default.time_embed
    half = torch.arange(128, dtype=torch.float32)
    args = 1000.0 * t[:, None, None] * torch.exp(-math.log(10000.0) * half / 128)
    feats = torch.cat([args.cos(), args.sin()], -1)
    assert torch.allclose(emb(t), torch.nn.functional.silu(emb.mlp(feats)), atol=1e-6)


def test_lm_head_bias_is_added_to_the_logits_and_survives_save(tmp_path):
    m = tiny(lm_head_bias=True)
    assert m.lm_head.bias is not None and m.lm_head.bias.shape == (37,)
    x, t = torch.randint(0, 37, (2, 7)), torch.rand(2)
    with_bias = m(x, t=t).logits
    with torch.no_grad():
        m.lm_head.bias.add_(torch.arange(37.0))
    shifted = m(x, t=t).logits
    assert torch.allclose(shifted - with_bias, torch.arange(37.0).expand_as(shifted), atol=1e-4)
    m.save_pretrained(tmp_path)
    assert torch.equal(shifted, TextDiffModel.from_pretrained(tmp_path).eval()(x, t=t).logits)


def test_layer_norm_eps_reaches_every_norm():
    m = tiny(layer_norm_eps=1e-3)
    norms = [mod for mod in m.modules() if isinstance(mod, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 1 and all(n.eps == 1e-3 for n in norms)


def _process(time_input, name="masked", **kw):
    return build_process({"name": name, "time_conditioning": True, "time_input": time_input, **kw}, vocab_size=37, mask_id=36)


def test_network_time_per_time_input():
    t = torch.tensor([0.0, 0.25, 0.9])
    assert torch.equal(_process("t").network_time(t), t)
    assert torch.equal(_process("zero").network_time(t), torch.zeros(3))
    p = _process("sigma")
    sigma = -torch.log(p.alpha(t.double())).float()  # σ(t) = −log α(t)
    assert torch.allclose(p.network_time(t), sigma, atol=1e-6)
    assert p.network_time(torch.rand(2, 5)).shape == (2, 5)
    with pytest.raises(ConfigError, match="time_input"):
        _process("sigmas")


def _spy(model):
    seen = []

    def forward(*args, **kwargs):
        seen.append(kwargs.get("t"))
        return TextDiffModel.forward(model, *args, **kwargs)

    model.forward = forward
    return seen


def test_objective_and_generation_feed_network_time():
    """The loss and the sampler call the model with network_time(t): zeros for 'zero', σ for 'sigma'."""
    from textdiff.generation import generate

    for time_input in ("zero", "sigma"):
        p = _process(time_input)
        m = tiny()
        seen = _spy(m)
        x0 = torch.randint(0, 36, (4, 8))
        t = torch.tensor([0.1, 0.3, 0.5, 0.8])
        nelbo_terms(m, p, x0, t=t, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(seen[-1], p.network_time(t))
        generate(m, p, "ancestral", [[1, 2]], max_new_tokens=4, steps=4, seed=0)
        fed = seen[-1]
        assert fed is not None and fed.shape[0] == 1
        if time_input == "zero":
            assert torch.equal(fed, torch.zeros_like(fed))
        else:
            assert bool((fed > 0).all())  # σ(t) > 0 for t > 0


def test_block_process_feeds_network_time_on_both_halves():
    p = _process("sigma", name="block", block_size=4)
    x0 = torch.randint(0, 36, (2, 8))
    t = torch.tensor([[0.2] * 4 + [0.6] * 4, [0.9] * 4 + [0.4] * 4])
    fed = p.model_inputs(x0, x0, t)["t"]  # [B, 2L]
    assert torch.allclose(fed, p.network_time(torch.cat([t, torch.zeros_like(t)], 1)))
    z = _process("zero", name="block", block_size=4).model_inputs(x0, x0, t)["t"]
    assert torch.equal(z, torch.zeros(2, 16))


def test_ancestral_cache_is_used_when_the_model_is_fed_a_constant_time():
    """time_input='zero': the network output cannot depend on t, so MDLM's cached ancestral sampler
    reuses logits (fewer calls, same tokens)."""
    from textdiff.generation import generate
    from textdiff import build_sampler

    p = _process("zero")
    m = tiny()
    cached = generate(m, p, build_sampler({"name": "ancestral"}, p), [[1, 2]], max_new_tokens=6, steps=64, seed=3)
    plain = generate(m, p, build_sampler({"name": "ancestral", "cache_unchanged": False}, p), [[1, 2]],
                     max_new_tokens=6, steps=64, seed=3)
    assert cached.sequences.tolist() == plain.sequences.tolist()
    assert cached.nfe < plain.nfe
    assert not build_sampler({"name": "ancestral"}, _process("t")).skips_unchanged


def test_recipe_model_section_sets_the_options():
    from textdiff.config import ModelConfig
    from textdiff.models.build import denoiser_config

    p = _process("sigma")
    cfg = denoiser_config(ModelConfig(hidden_size=32, num_heads=4, time_scale=1.0, lm_head_bias=True, layer_norm_eps=1e-6),
                          37, p, 16, 36)
    assert (cfg.time_scale, cfg.lm_head_bias, cfg.layer_norm_eps) == (1.0, True, 1e-6)
    default = denoiser_config(ModelConfig(hidden_size=32, num_heads=4), 37, p, 16, 36)
    assert (default.time_scale, default.lm_head_bias, default.layer_norm_eps) == (1000.0, False, 1e-5)
