"""Uniform-state DDiT checkpoints: DUO (Sahoo et al. 2025; ``s-sahoo/duo``, ``s-sahoo/duo-distilled``,
OpenWebText, GPT-2, L = 1024) and UDLM (Schiff et al. 2025; ``kuleshov-group/udlm-lm1b``, LM1B,
bert-base-uncased, L = 128).

Both are Hugging Face ``PreTrainedModel`` folders whose network is the DiT of :mod:`._dit` (MDLM's) under
the prefix ``backbone.``; their ``config.json`` (no modeling code is read from the folder)::

    DUO:  {"model_type": "duo",  "vocab_size": 50258, "model_length": 1024, "hidden_dim": 768,
           "cond_dim": 128, "n_blocks": 12, "n_heads": 12, "dropout": 0.1, "causal": false, "var_min": true}
    UDLM: {"model_type": "udlm", "vocab_size": 30522, "model_length": 128, "hidden_dim": 768,
           "cond_dim": 128, "n_blocks": 12, "n_heads": 12, "dropout": 0.1, "time_conditioning": true,
           "cfg": false, "cfg_num_classes": -1}

How the publishers read the network, and textdiff's ``uniform`` process (UDLM's continuous-time NELBO):

* the logits are x0-predictions over all V states: p_θ(x0 | x_t) = softmax(logits) (DUO's and
  UDLM's ``log_softmax``, no carry-over, nothing masked): textdiff's ``uniform`` ``x0_logits``;
* forward process: keep x0 with probability α_t = 1 − (1 − ε) t, else a uniform draw over the V states
  (ε = 1e-3): textdiff's ``uniform`` process with the ``loglinear`` schedule;
* time input: the network sees σ(t) = −log α_t unscaled (DUO ``_sigma_from_alphat``, UDLM
  ``noise(t)[0]``): ``time_input: sigma``; a UDLM trained with ``time_conditioning: false`` is fed
  zeros (``time_input: zero``);
* sampling: ancestral (the posterior q(x_s | x_t, x_θ) of UDLM / DUO_BASE), textdiff's ``ancestral``;
  ``euler`` (tau-leaping on the same rates) also works.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from .dit import DiTFamily, check_rows, dit_config, fields

_KEYS = ("vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads", "dropout")


class _UniformDDiT(DiTFamily):
    model_type = ""
    citation = ""
    sampler = {"name": "ancestral"}

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == cls.model_type and all(k in config for k in ("hidden_dim", "n_blocks"))

    @classmethod
    def time_input(cls, config: dict, source: str) -> str:
        return "sigma"

    @classmethod
    def dit(cls, config: dict, tokenizer, source: str):
        c = fields(config, _KEYS, source)
        cls.time_input(config, source)  # refuses what is not a diffusion model
        net = dit_config(vocab_size=c["vocab_size"], hidden_dim=c["hidden_dim"], n_blocks=c["n_blocks"], n_heads=c["n_heads"],
                         cond_dim=c["cond_dim"], model_length=c["model_length"], dropout=c["dropout"], adaln=True,
                         mask_token_id=None, source=source)
        check_rows(tokenizer, net.vocab_size, f"this {cls.label} model")
        return net

    @classmethod
    def process(cls, config: dict, network) -> dict:
        return {"name": "uniform", "schedule": {"name": "loglinear", "eps": 1e-3}, "time_conditioning": True,
                "time_input": cls.time_input(config, "")}

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        return {"source": cls.citation}


class DUO(_UniformDDiT):
    """DUO's hub layout (module docstring)."""

    name, label = "duo", "DUO"
    model_type = "duo"
    tokenizer_default = "gpt2"
    citation = "DUO (Sahoo et al. 2025), github.com/s-sahoo/duo"

    @classmethod
    def time_input(cls, config: dict, source: str) -> str:
        if config.get("causal"):
            raise ConfigError(f"{source} is DUO's causal (autoregressive) baseline, not a diffusion model; "
                              "textdiff does not convert it")
        return "sigma"


class UDLM(_UniformDDiT):
    """UDLM's hub layout (module docstring)."""

    name, label = "udlm", "UDLM"
    model_type = "udlm"
    tokenizer_default = "bert-base-uncased"
    citation = "UDLM (Schiff et al. 2025), github.com/kuleshov-group/discrete-diffusion-guidance"

    @classmethod
    def time_input(cls, config: dict, source: str) -> str:
        if config.get("cfg"):
            raise ConfigError(f"{source} is a class-conditional UDLM (cfg: true, a label embedding); "
                              "textdiff converts only the unconditional models")
        return "sigma" if config.get("time_conditioning", True) else "zero"
