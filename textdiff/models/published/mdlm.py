"""MDLM (Sahoo et al. 2024): ``kuleshov-group/mdlm-owt`` and ``kuleshov-group/mdlm-no_flashattn-fp32-owt``.

Layout: ``config.json`` of the export's ``MDLMConfig`` (``model_type: "mdlm"``, ``architectures:
["MDLM"]``; fields ``vocab_size`` (50258 = GPT-2 + [MASK]), ``model_length`` (1024), ``hidden_dim``,
``cond_dim``, ``n_blocks``, ``n_heads``, ``dropout``, ``time_conditioning``) and ``model.safetensors``
with the DiT under ``backbone.`` (converted by :mod:`._dit`). The two exports differ only in their
code (flash-attn in bfloat16 autocast vs plain torch in float32); the weights and files are alike.

What the model was trained with, and what it comes up with here:

* process: masked (absorbing) diffusion, SUBS parameterisation (``MaskedProcess``: the [MASK]
  logit is −∞ and unmasked positions carry over), log-linear schedule α(t) = 1 − (1 − 10⁻³)·t;
* time input: the network always has adaLN layers; with ``time_conditioning: false`` (the released
  models) MDLM feeds σ = 0 (``process.time_input = "zero"``), otherwise σ(t) = −log α(t) ("sigma");
* context L = ``model_length``; tokenizer GPT-2 with [MASK] = 50257 appended (``gpt2`` unless the
  caller passes one); default sampler: ancestral with MDLM's cache (a step where no token changed
  reuses the logits: exact, because the network does not see t).
"""
from __future__ import annotations

from pathlib import Path

from .dit import DiTFamily, check_vocab, dit_config, fields

FIELDS = ("vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads")


class MDLM(DiTFamily):
    """MDLM's Hugging Face export (``MDLMConfig`` / ``MDLM``)."""

    name, label = "mdlm", "MDLM"
    tokenizer_default = "gpt2"
    sampler = {"name": "ancestral", "cache_unchanged": True}

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "mdlm" or "MDLM" in (config.get("architectures") or [])

    @classmethod
    def dit(cls, config: dict, tokenizer, source: str):
        f = fields(config, FIELDS, source)
        mask_id = check_vocab(tokenizer, f["vocab_size"], source)
        return dit_config(**f, dropout=config.get("dropout", 0.1), adaln=True, mask_token_id=mask_id, source=source)

    @classmethod
    def process(cls, config: dict, network) -> dict:
        time_input = "sigma" if config.get("time_conditioning", False) else "zero"
        return {"name": "masked", "schedule": {"name": "loglinear", "eps": 1e-3}, "time_conditioning": True,
                "time_input": time_input}

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        return {"layout": "MDLM Hugging Face export (backbone.*)", "time_conditioning": bool(config.get("time_conditioning", False))}
