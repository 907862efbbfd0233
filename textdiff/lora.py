"""Low-rank adapters (LoRA, Hu et al. 2022) through ``peft``, for the textdiff denoiser and for
external Hugging Face denoisers. Install with ``pip install 'textdiff[lora]'``.

A LoRA layer replaces a frozen weight W by W + (alpha / r) · B A with A [r, in] and B [out, r]
trained (B starts at zero, so training starts from the base model exactly).

Recipe section (:class:`textdiff.config.LoraConfig`)::

    lora: {r: 8, alpha: 16, target_modules: [qkv, proj]}     # textdiff: attention projections
    lora: {r: 8, alpha: 16, target_modules: [query, value]}  # BERT-style external denoisers

``target_modules`` are module-name suffixes; a suffix that names no linear layer is a one-line error
listing the candidates. Saving a :class:`LoraDenoiser` (every checkpoint and the final folder)
writes:

* the MERGED model in the base model's own format (``config.json`` + ``model.safetensors``, and
  ``textdiff_denoiser.json`` for external networks), so ``DiffusionLM.from_pretrained`` and
  ``AutoModel...from_pretrained`` load it like any other model;
* ``adapter/``: the adapters alone in peft's format (``adapter_config.json`` +
  ``adapter_model.safetensors``), loadable with :func:`load_lora` onto the base model (or with
  ``peft.PeftModel.from_pretrained``). Resuming a run reloads them from the checkpoint.

Merged weights are W + ΔW computed from each layer's delta without touching the live weights, so
saving during training does not drift the frozen base.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from .config import LoraConfig, from_dict
from .errors import ConfigError

ADAPTER_DIR = "adapter"


def _peft():
    from .extras import require

    return require("peft", "lora", "LoRA (the recipe's lora section)")


def _network(model) -> tuple[nn.Module, Optional[nn.Module]]:
    """(the network to adapt, the external wrapper around it or None)."""
    from .models.diffusion_gemma import DiffusionGemmaDenoiser
    from .models.external import ExternalDenoiser

    if isinstance(model, DiffusionGemmaDenoiser):
        model.share_adapters()  # tied encoder / decoder layers: one module each, adapted once
        return model.hf, model
    if isinstance(model, ExternalDenoiser):
        return model.hf, model
    return model, None


def _adaptable(network: nn.Module) -> list[str]:
    """Names of the layers peft can adapt (linear, embedding, GPT-2-style Conv1D)."""
    names = []
    for name, module in network.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) or type(module).__name__ == "Conv1D":
            names.append(name)
    return names


def check_targets(network: nn.Module, targets: list[str]) -> None:
    """One-line error for a target module suffix that names no adaptable layer."""
    names = _adaptable(network)
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
            raise ConfigError(
                f"lora.target_modules: no linear layer named {target!r} in the {type(network).__name__} denoiser; "
                f"candidates: {', '.join(suffixes[:12])}"
            )


def apply_lora(model: nn.Module, cfg) -> "LoraDenoiser":
    """Freeze ``model`` and add LoRA adapters to the layers ``cfg.target_modules`` names."""
    if isinstance(cfg, dict):
        cfg = from_dict(LoraConfig, cfg, "lora")
    peft = _peft()
    network, outer = _network(model)
    check_targets(network, list(cfg.target_modules) + list(cfg.modules_to_save))
    config = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                             modules_to_save=list(cfg.modules_to_save) or None,
                             exclude_modules=getattr(outer, "lora_exclude", None))  # e.g. DiffusionGemma's vision tower
    return LoraDenoiser(peft.get_peft_model(network, config), outer)


class LoraDenoiser(nn.Module):
    """The denoiser with LoRA adapters; the textdiff denoiser call is forwarded unchanged."""

    def __init__(self, peft_model: nn.Module, outer: Optional[nn.Module] = None):
        super().__init__()
        self.peft = peft_model
        self.outer = outer  # the ExternalDenoiser whose network is adapted (its .hf is the peft model)
        if outer is not None:
            outer.hf = peft_model
            if hasattr(outer, "share_adapters"):  # DiffusionGemma: the encoder runs the decoder's adapted layers
                outer.share_adapters()

    @property
    def config(self):
        return self.outer.config if self.outer is not None else self.peft.get_base_model().config

    def forward(self, *args, **kwargs):
        return (self.outer if self.outer is not None else self.peft)(*args, **kwargs)

    # ---- merged weights -----------------------------------------------------------------------
    def _peft_state(self, state: Optional[dict]) -> dict:
        """The peft model's state dict (keys ``base_model.model.<name>``): its live one, or the part of
        ``state`` (this module's gathered state dict under FSDP2 / ZeRO-3, keys ``peft.…``) it owns."""
        if state is None:
            return self.peft.state_dict()
        prefix = "peft."
        own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        return own or dict(state)

    @torch.no_grad()
    def merged_state_dict(self, state: Optional[dict] = None) -> dict:
        """The base network's state dict with every adapter folded in: W + ΔW (keys as in the base).

        ΔW = (alpha / r) · B A for a linear layer (transposed for GPT-2 Conv1D, whose weight is
        [in, out]) and (alpha / r) · (B A)ᵀ for an embedding, computed from the tensors of ``state``
        (default: the live ones), so a gathered state dict of a sharded model merges the same way."""
        peft = _peft()
        full = self._peft_state(state)
        base_prefix = "base_model.model."
        tensors = {k[len(base_prefix):] if k.startswith(base_prefix) else k: v for k, v in full.items()}
        out = {}
        for key, value in tensors.items():
            if ".lora_" in key or ".original_module." in key:
                continue
            out[key.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")] = value
        for name, module in self.peft.get_base_model().named_modules():
            if not isinstance(module, peft.tuners.lora.LoraLayer):
                continue
            weight = tensors[f"{name}.base_layer.weight"]
            scale = module.scaling["default"]
            if f"{name}.lora_A.default.weight" in tensors:  # linear / Conv1D: A [r, in], B [out, r]
                delta = tensors[f"{name}.lora_B.default.weight"].float() @ tensors[f"{name}.lora_A.default.weight"].float()
                if getattr(module, "fan_in_fan_out", False):
                    delta = delta.T
            elif f"{name}.lora_embedding_A.default" in tensors:  # embedding: A [r, V], B [d, r]
                delta = (tensors[f"{name}.lora_embedding_B.default"].float() @ tensors[f"{name}.lora_embedding_A.default"].float()).T
            else:
                raise ConfigError(f"cannot merge the {type(module).__name__} adapter of {name!r}; adapt linear or embedding layers")
            out[f"{name}.weight"] = (weight.float() + scale * delta.reshape(weight.shape)).to(weight.dtype)
        return out

    def save_pretrained(self, path, safe_serialization: bool = True, state_dict: Optional[dict] = None, **kwargs) -> None:
        """Merged model in the base format + ``adapter/`` (see the module docstring).

        ``state_dict``: this module's gathered weights when training sharded them (FSDP2, ZeRO-3);
        the live parameters are then placeholders or shards and are not read."""
        path = Path(path)
        merged = self.merged_state_dict(state_dict)
        base = self.peft.get_base_model()
        if self.outer is not None:
            self.outer.save_pretrained(path, safe_serialization=safe_serialization, state_dict=merged, network=base)
        else:
            base.save_pretrained(path, safe_serialization=safe_serialization, state_dict=merged)
        adapters = None if state_dict is None else self._peft_state(state_dict)
        self.peft.save_pretrained(path / ADAPTER_DIR, safe_serialization=True,
                                  **({} if adapters is None else {"state_dict": adapters}))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Checkpoints hold MERGED weights, which cannot be split again: resuming restores the
        adapters with :meth:`load_adapter_checkpoint` (the frozen base comes from the run's init).
        This module's OWN state dict (adapters and base layers by their peft names, as FSDP2 hands
        it back when it shards a loaded model) loads as usual."""
        if state_dict and any(".lora_" in k for k in state_dict) and set(state_dict) <= set(self.state_dict()):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        if strict:
            raise ConfigError("a LoRA denoiser loads adapters (load_adapter_checkpoint / load_lora), not a full state dict")
        return nn.modules.module._IncompatibleKeys([], [])

    def load_adapter_checkpoint(self, folder) -> None:
        """Restore the adapters saved in ``folder/adapter`` (resume)."""
        from safetensors.torch import load_file

        peft = _peft()
        file = Path(folder) / ADAPTER_DIR / "adapter_model.safetensors"
        if not file.is_file():
            raise ConfigError(f"{str(folder)!r} has no {ADAPTER_DIR}/adapter_model.safetensors; it was not saved by a LoRA run")
        peft.set_peft_model_state_dict(self.peft, load_file(str(file)))

    def merge(self) -> nn.Module:
        """Fold the adapters into the weights and return the plain denoiser (this object is spent)."""
        network = self.peft.merge_and_unload()
        if self.outer is not None:
            self.outer.hf = network
            if hasattr(self.outer, "share_adapters"):
                self.outer.share_adapters()
            return self.outer
        return network


def load_lora(base, adapter_dir, merge: bool = False) -> nn.Module:
    """Put saved adapters (``adapter_dir`` or its ``adapter/`` subfolder) onto ``base`` (a denoiser
    or a model folder); ``merge=True`` returns the merged plain denoiser."""
    peft = _peft()
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / ADAPTER_DIR / "adapter_config.json").is_file():
        adapter_dir = adapter_dir / ADAPTER_DIR
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{str(adapter_dir)!r} holds no LoRA adapter (adapter_config.json); pass a LoRA run's folder")
    if isinstance(base, (str, Path)):
        base = _load_denoiser(base)
    network, outer = _network(base)
    model = LoraDenoiser(peft.PeftModel.from_pretrained(network, str(adapter_dir)), outer)
    return model.merge() if merge else model


def _load_denoiser(path) -> nn.Module:
    """The network of a model folder of any kind (a published one converted on the way)."""
    from .models.format import PUBLISHED, folder_kind, read_network

    kind = folder_kind(path)
    if kind == PUBLISHED:
        from .models.published import load_published

        return load_published(Path(path)).model
    return read_network(Path(path), kind)
