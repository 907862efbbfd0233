"""Gradient (activation) checkpointing: keep only each transformer layer's input in the forward
pass and recompute the layer in backward (Chen et al. 2016, "Training Deep Nets with Sublinear
Memory Cost"). Activation memory drops from O(layers · L · d) to O(layers · L · d / layer work),
at the price of one extra forward per layer; gradients are the same (dropout masks are replayed
from the saved RNG state).

One switch for every denoiser (``train.gradient_checkpointing: true``):

* a Hugging Face network that supports it (external denoisers, and the native LLaDA / Dream
  denoisers built on transformers' Llama / Qwen2 layers) uses transformers' own mechanism;
* otherwise (the textdiff transformer) every layer named in the network's ``_no_split_modules``
  (the same unit FSDP wraps) runs under ``torch.utils.checkpoint`` while training.

Non-reentrant checkpointing is used throughout: it gives gradients to LoRA adapters inside a frozen
network (whose layer inputs do not require grad) and accepts keyword arguments.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .cache import KVCache


def _networks(model: nn.Module) -> nn.Module:
    """The outermost network of a denoiser (through the LoRA and external wrappers)."""
    inner = getattr(model, "peft", None)
    if inner is not None:  # LoraDenoiser
        return inner.get_base_model()
    inner = getattr(model, "hf", None)
    return inner if isinstance(inner, nn.Module) else model


def _layer_forward(module: nn.Module, forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        uses_cache = any(isinstance(a, KVCache) for a in (*args, *kwargs.values()))
        if module.training and torch.is_grad_enabled() and not uses_cache:  # a cache update must not run twice
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    run._textdiff_checkpointed = True
    return run


def enable_gradient_checkpointing(model: nn.Module) -> list[str]:
    """Turn on checkpointing in ``model`` (any textdiff denoiser); returns the layer classes it covers."""
    from transformers import PreTrainedModel

    network = _networks(model)
    hf = [m for m in network.modules() if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing]
    if hf:  # the outermost transformers model: its GradientCheckpointingLayer modules do the work
        hf[0].gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        from transformers.modeling_layers import GradientCheckpointingLayer

        return sorted({type(m).__name__ for m in hf[0].modules()
                       if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing})
    names = set(getattr(network, "_no_split_modules", None) or [])
    layers = [m for m in network.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(f"train.gradient_checkpointing: the {type(network).__name__} denoiser names no transformer "
                          "layer to checkpoint (_no_split_modules); set train.gradient_checkpointing=false")
    for layer in layers:
        if not getattr(layer.forward, "_textdiff_checkpointed", False):
            layer.forward = _layer_forward(layer, layer.forward)  # an instance attribute: state dict keys unchanged
    return sorted({type(m).__name__ for m in layers})
