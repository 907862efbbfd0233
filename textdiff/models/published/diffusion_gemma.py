"""DiffusionGemma (Google 2026): google/diffusiongemma-26B-A4B-it, loaded through transformers' own classes.

Layout: ``config.json`` with ``model_type: "diffusion_gemma"`` (a ``text_config`` of Gemma 4's MoE
text model with ``global_head_dim`` / ``num_global_key_value_heads`` for the full-attention layers, a
``vision_config``, ``canvas_length`` = 256), ``model.safetensors`` (shards with an index for the
released model) whose text weights are stored once under ``model.decoder`` (the encoder shares them;
only the per-layer ``layer_scalar`` buffers exist twice), ``generation_config.json`` (the released
decoding, below) and Gemma's tokenizer files with its chat template.

The network is transformers' ``DiffusionGemmaForBlockDiffusion``, used as it is (no conversion, no
copy of its code): :class:`~textdiff.models.diffusion_gemma.DiffusionGemmaDenoiser` puts it behind
textdiff's denoiser call. Its forward process is the ``uniform`` one (a canvas starts as uniformly
random tokens; tokens the sampler does not accept are redrawn uniformly).

Decoding (``generation_config.json``, transformers' ``DiffusionGemmaGenerationMixin.generate``): canvases
of ``canvas_length`` tokens left to right, each committed through the causal encoder (textdiff's
exact block cache); at most ``max_denoising_steps`` steps per canvas with the entropy-bound sampler
(bound γ = ``entropy_bound``) at the linear temperature t_max → t_min, renoising, self-conditioning on
the last step's tempered logits, the stable-and-confident stop and the argmax canvas as the result;
answers end at any of the ``eos_token_id`` tokens and finished rows are padded. All of it is the
``entropy_bound`` sampler's config here (:mod:`textdiff.samplers.entropy_bound`) plus the generation
defaults ``block_size`` = canvas, ``whole_blocks``, ``steps_per_block`` and ``pad_after_eos``.

Refused with a one-line error (what textdiff's decoding cannot express): ``use_bidirectional_attention:
"all"`` (the encoder would not be causal, so a committed canvas's cache would not be exact), a config
without ``canvas_length``, a ``generation_config.json`` sampler other than the entropy-bound one.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ..loading import read_json
from .family import Family, LoadOptions, Published, read_tokenizer

#: transformers' defaults of the DiffusionGemma generation config (used for keys the file lacks)
RELEASED = {"max_denoising_steps": 48, "entropy_bound": 0.1, "t_min": 0.4, "t_max": 0.8,
            "stability_threshold": 1, "confidence_threshold": 0.005}


def check_config(config: dict) -> None:
    """One-line refusal of a config.json option the textdiff decoding cannot express."""
    text = config.get("text_config") or {}
    if text.get("use_bidirectional_attention") == "all":
        raise ConfigError("this DiffusionGemma config sets text_config.use_bidirectional_attention='all': its encoder "
                          "is not causal, so committed canvases have no exact cache; textdiff supports 'vision' or none")
    if not isinstance(config.get("canvas_length"), int) or config["canvas_length"] < 1:
        raise ConfigError("this DiffusionGemma config.json has no canvas_length (a positive int); the folder is incomplete")


def released_decoding(folder: Path) -> dict:
    """The folder's ``generation_config.json`` decoding settings (transformers' defaults for missing keys)."""
    path = Path(folder) / "generation_config.json"
    found = read_json(path) if path.is_file() else {}
    sampler = found.get("sampler_config") or {}
    if sampler and sampler.get("_cls_name", "EntropyBoundSamplerConfig") != "EntropyBoundSamplerConfig":
        raise ConfigError(f"{str(path)!r} names sampler {sampler.get('_cls_name')!r}; textdiff runs the "
                          "entropy-bound sampler DiffusionGemma was released with")
    out = {k: found.get(k, v) for k, v in RELEASED.items() if k != "entropy_bound"}
    out["entropy_bound"] = float(sampler.get("entropy_bound", RELEASED["entropy_bound"]))
    eos = found.get("eos_token_id")
    out["eos_token_id"] = [eos] if isinstance(eos, int) else list(eos or [])
    out["pad_token_id"] = found.get("pad_token_id")
    return out


class DiffusionGemma(Family):
    """google/diffusiongemma-* (model_type "diffusion_gemma"), on transformers' own classes."""

    name, label = "diffusion_gemma", "DiffusionGemma"
    supports_device_map = True
    tokenizer_default = "google/diffusiongemma-26B-A4B-it"
    protocol = ("transformers DiffusionGemmaGenerationMixin.generate: canvases of canvas_length tokens, entropy-bound "
                "acceptance, linear temperature t_max -> t_min, renoising, self-conditioning, stable-and-confident stop")

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "diffusion_gemma"

    @classmethod
    def sampler_spec(cls, decoding: dict) -> dict:
        return {"name": "entropy_bound", "entropy_bound": decoding["entropy_bound"], "t_max": decoding["t_max"],
                "t_min": decoding["t_min"], "stability_threshold": decoding["stability_threshold"],
                "confidence_threshold": decoding["confidence_threshold"], "self_conditioning": True,
                "output": "argmax"}

    @classmethod
    def load(cls, folder: Path, config: dict, options: LoadOptions) -> Published:
        from ..diffusion_gemma import load_diffusion_gemma

        check_config(config)
        decoding = released_decoding(folder)
        tokenizer = read_tokenizer(folder, options, cls.tokenizer_default)
        model = load_diffusion_gemma(folder, options.dtype, options)
        if tokenizer.mask_token is None and "<mask>" in tokenizer.get_vocab():  # Gemma's own (id 4); never grown
            tokenizer.mask_token = "<mask>"
        if tokenizer.pad_token_id is None and decoding["pad_token_id"] is not None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(decoding["pad_token_id"]))
        stops = [i for i in decoding["eos_token_id"] if i != tokenizer.eos_token_id]
        canvas = int(config["canvas_length"])
        generation = {"block_size": canvas, "whole_blocks": True, "steps_per_block": int(decoding["max_denoising_steps"]),
                      "pad_after_eos": True}
        notes = {"source": str(folder), "generation": generation, "stop_token_ids": stops, "protocol": cls.protocol}
        return Published(model=model, tokenizer=tokenizer, process={"name": "uniform", "schedule": {"name": "linear"}},
                         sampler=cls.sampler_spec(decoding), seq_len=model.config.max_position_embeddings,
                         family=cls.name, notes=notes)
