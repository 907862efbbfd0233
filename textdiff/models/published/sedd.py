"""SEDD (Lou, Meng & Ermon 2024): ``louaaron/sedd-small``, ``louaaron/sedd-medium`` (absorbing graph).

Layout (``SEDD(nn.Module, PyTorchModelHubMixin)`` of ``model/transformer.py``): ``config.json`` is the
whole Hydra training config, with the sections textdiff reads::

    {"tokens": 50257,
     "graph": {"type": "absorb" | "uniform", ...},
     "noise": {"type": "loglinear" | "geometric", "sigma_min": ..., "sigma_max": ...},
     "model": {"hidden_size": 768, "cond_dim": 128, "length": 1024, "n_blocks": 12, "n_heads": 12,
               "scale_by_sigma": true, "dropout": 0.1, ...}, ...}

and the weights (``model.safetensors``, or ``pytorch_model.bin`` as older hub mixins wrote them:
read only with ``allow_pickle=True``) under the DiT names of :mod:`._dit` with no prefix (the same network as MDLM's).

What the model computes and how textdiff reads it:

* V = tokens + 1 on the absorbing graph ([MASK] = ``tokens``, GPT-2's 50257), V = tokens on the
  uniform graph; the network is conditioned on the total noise σ(t) itself (``time_input: sigma``,
  ``time_scale: 1``);
* SEDD's forward ends with ``scale_by_sigma`` (absorbing only): out = logits − log(e^σ − 1) − log(V − 1),
  then the entry of the current token is set to 0. These are the log concentration ratios log s_θ;
  textdiff's ``sedd_absorb`` process applies exactly this to the network's logits (its
  ``scale_by_sigma`` option), and ``sedd_uniform`` reads the raw logits with 0 at x_t, as SEDD does
  without ``scale_by_sigma``;
* schedules: SEDD's ``loglinear`` noise is σ(t) = −log(1 − (1 − ε) t) with ε = 1e-3 hard-coded (its
  ``sigma_min`` / ``sigma_max`` are ignored), textdiff's ``loglinear`` with eps 1e-3; ``geometric`` is
  σ(t) = σ_min^{1−t} σ_max^t, textdiff's ``geometric``;
* sampling: SEDD's ``run_sample.py`` uses the analytic (Tweedie τ-leaping) predictor with the final
  denoising step: textdiff's ``analytic`` sampler (``euler`` also works); tokenizer GPT-2 (+[MASK]).
"""
from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from .dit import DiTFamily, check_rows, dit_config, fields

GRAPHS = {"absorb": "sedd_absorb", "uniform": "sedd_uniform"}
MODEL_FIELDS = ("hidden_size", "cond_dim", "length", "n_blocks", "n_heads", "scale_by_sigma", "dropout")


def _schedule(noise: dict) -> dict:
    kind = noise.get("type")
    if kind == "loglinear":
        return {"name": "loglinear", "eps": 1e-3}  # SEDD's LogLinearNoise(eps=1e-3)
    if kind == "geometric":
        n = fields(noise, ("sigma_min", "sigma_max"), "SEDD noise section")
        return {"name": "geometric", "sigma_min": float(n["sigma_min"]), "sigma_max": float(n["sigma_max"])}
    raise ConfigError(f"SEDD noise type {kind!r} is not one SEDD released (loglinear, geometric); config.json is damaged")


class SEDD(DiTFamily):
    """SEDD's hub layout (module docstring)."""

    name, label = "sedd", "SEDD"
    prefix = ""  # the hub mixin saves the network itself
    tokenizer_default = "gpt2"
    sampler = {"name": "analytic"}

    @classmethod
    def matches(cls, config: dict) -> bool:
        return (isinstance(config.get("graph"), dict) and isinstance(config.get("model"), dict)
                and isinstance(config.get("noise"), dict) and "tokens" in config
                and "scale_by_sigma" in config["model"] and "n_blocks" in config["model"])

    @classmethod
    def dit(cls, config: dict, tokenizer, source: str):
        graph = config["graph"].get("type")
        if graph not in GRAPHS:
            raise ConfigError(f"{source}: SEDD graph type {graph!r} is unknown (absorb, uniform); config.json is damaged")
        m = fields(config["model"], MODEL_FIELDS, f"{source} (model section)")
        absorb = graph == "absorb"
        if m["scale_by_sigma"] and not absorb:
            raise ConfigError(f"{source}: scale_by_sigma on the uniform graph is not a SEDD configuration "
                              "(SEDD asserts the absorbing graph); config.json is damaged")
        tokens = int(config["tokens"])
        vocab = tokens + (1 if absorb else 0)
        net = dit_config(vocab_size=vocab, hidden_dim=m["hidden_size"], n_blocks=m["n_blocks"], n_heads=m["n_heads"],
                         cond_dim=m["cond_dim"], model_length=m["length"], dropout=m["dropout"], adaln=True,
                         mask_token_id=tokens if absorb else None, source=source)
        if absorb and tokenizer.mask_token_id != tokens:
            raise ConfigError(f"the tokenizer's mask token is id {tokenizer.mask_token_id}, but this SEDD model absorbs into "
                              f"id {tokens} (the last of its {vocab}); pass the tokenizer it was trained with")
        check_rows(tokenizer, vocab, "this SEDD model")
        return net

    @classmethod
    def process(cls, config: dict, network) -> dict:
        graph = config["graph"]["type"]
        process = {"name": GRAPHS[graph], "schedule": _schedule(config["noise"]), "time_conditioning": True,
                   "time_input": "sigma"}
        if graph == "absorb":
            process["scale_by_sigma"] = bool(config["model"]["scale_by_sigma"])
        return process

    @classmethod
    def seq_len(cls, config: dict, network) -> int:
        return int(config["model"]["length"])

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        return {"source": "SEDD (Lou et al. 2024), github.com/louaaron/Score-Entropy-Discrete-Diffusion",
                "graph": config["graph"]["type"], "noise": config["noise"].get("type")}
