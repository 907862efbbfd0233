"""External denoisers: a Hugging Face network as the denoiser of the masked process.

Three kinds (``denoiser.kind`` in a recipe, :class:`textdiff.config.DenoiserConfig`):

* ``masked_lm``: any ``AutoModelForMaskedLM`` (BERT, RoBERTa, ModernBERT, ...). A masked LM is
  already the SUBS denoiser of absorbing diffusion: it sees every position, reads its own mask
  token and predicts the clean token; the process sets the [MASK] logit to −∞ and copies unmasked
  tokens, so the network is used as it is.
* ``bidirectional``: a LLaDA-style model (``AutoModel``, usually with ``trust_remote_code``) whose
  output already has ``logits [B, L, V]``; only ``input_ids`` and ``attention_mask`` are passed.
* ``causal``: an autoregressive LM adapted to diffusion as in Dream (Ye et al. 2025): the logits
  that predict position i are read at position i − 1 (the AR head keeps its meaning), position 0
  keeps its own logits, and with ``full_attention`` the causal mask is replaced by a bidirectional
  one (a 4-D mask of the key padding). The tokenizer gains a [MASK] token when it has none.

:class:`ExternalDenoiser` gives all of them the textdiff denoiser call
``model(input_ids, t=None, attention_mask=None, position_ids=None, cache=None, update_cache=False)
-> TextDiffOutput(logits [B, L, V])``. ``t`` is ignored (these networks are not time-conditioned);
KV caches are refused. Positions: textdiff positions start at 0 on the first real token; models that
number positions from ``padding_idx + 1`` (RoBERTa family) get that offset added.

Saving writes the Hugging Face folder unchanged (``config.json`` + ``model.safetensors``, loadable by
``AutoModelForMaskedLM``) plus ``textdiff_denoiser.json`` with the wrapper's settings, so
``DiffusionLM.from_pretrained`` and ``train.init_from`` can rebuild the wrapper.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ..config import DenoiserConfig, from_dict, to_dict
from ..errors import ConfigError, IncompatibleError
from .format.layout import DENOISER_FILE
from .modeling_textdiff import TextDiffOutput

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ExternalConfig:
    """What textdiff reads from ``model.config`` (attention kind, context, vocabulary), for a wrapper."""

    attention = "bidirectional"
    block_size = None
    time_conditioning = False

    def __init__(self, hf_config, vocab_size: int, max_positions: Optional[int], mask_token_id: Optional[int]):
        self.hf = hf_config
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_positions
        self.mask_token_id = mask_token_id
        self.num_layers = getattr(hf_config, "num_hidden_layers", None)
        self.model_type = getattr(hf_config, "model_type", None)


def _position_offset(hf_model) -> int:
    """RoBERTa-style embeddings number positions from padding_idx + 1; others from 0."""
    for module in hf_model.modules():
        if hasattr(module, "create_position_ids_from_input_ids") and getattr(module, "padding_idx", None) is not None:
            return int(module.padding_idx) + 1
    return 0


class ExternalDenoiser(nn.Module):
    """A Hugging Face network behind the textdiff denoiser call (see the module docstring)."""

    def __init__(self, hf_model: nn.Module, spec: DenoiserConfig, vocab_size: int, mask_token_id: Optional[int]):
        super().__init__()
        self.hf = hf_model
        self.spec = spec
        self.position_offset = _position_offset(hf_model)
        params = inspect.signature(hf_model.forward).parameters
        self._takes_positions = "position_ids" in params
        hf_cfg = hf_model.config
        max_pos = getattr(hf_cfg, "max_position_embeddings", None)
        if max_pos is not None:
            max_pos = int(max_pos) - self.position_offset
        self.config = ExternalConfig(hf_cfg, vocab_size, max_pos, mask_token_id)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids, t=None, attention_mask=None, position_ids=None, cache=None, update_cache=False,
                logits_to_keep=0, **kwargs):
        """input_ids [B, L] -> TextDiffOutput(logits [B, L, V]); ``t`` is not used.

        ``logits_to_keep`` (HF semantics: 0 = all, int k = the last k, 1-D tensor = those positions)
        cuts the logits after the network (and after the causal shift)."""
        if cache is not None or update_cache:
            raise IncompatibleError(
                f"the external {self.config.model_type!r} denoiser has no KV cache; decode with use_cache='none' (or 'auto')"
            )
        if attention_mask is not None and attention_mask.dim() != 2:
            raise IncompatibleError("external denoisers take a [B, L] padding mask only; block diffusion needs the textdiff model")
        call = {"input_ids": input_ids}
        if attention_mask is not None:
            call["attention_mask"] = attention_mask.long()
        if position_ids is not None and self._takes_positions and self.spec.kind != "bidirectional":
            call["position_ids"] = position_ids + self.position_offset
        if self.spec.kind == "causal" and self.spec.full_attention:
            keys = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
            B, L = input_ids.shape
            full = keys[:, None, None, :].expand(B, 1, L, L)  # [B, 1, L, L] True = attend: padding only
            call["attention_mask"] = full | torch.eye(L, dtype=torch.bool, device=input_ids.device)  # no empty rows
        out = self.hf(**call)
        logits = getattr(out, "logits", None)  # [B, L, V']
        if logits is None:
            raise IncompatibleError(f"the {self.config.model_type!r} network returns no logits; use a model with an LM head")
        if self.spec.kind == "causal":  # Dream's shift: position i is predicted from position i - 1
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        if logits.shape[-1] > self.config.vocab_size:  # padded embedding matrices: drop the unused rows
            logits = logits[..., : self.config.vocab_size]
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits[:, logits_to_keep.to(logits.device)]
        elif logits_to_keep:
            logits = logits[:, -int(logits_to_keep):]
        return TextDiffOutput(logits=logits)

    # ---- saving and loading ---------------------------------------------------------------------
    def save_pretrained(self, path, safe_serialization: bool = True, state_dict=None, network=None, **kwargs) -> None:
        """The Hugging Face folder of the network plus ``textdiff_denoiser.json``.

        ``state_dict`` / ``network``: save these weights with that network's config (LoRA saves its
        merged weights through the base network this way)."""
        path = Path(path)
        if state_dict is not None:
            state_dict = {k[3:] if k.startswith("hf.") else k: v for k, v in state_dict.items()}
        (network or self.hf).save_pretrained(path, safe_serialization=safe_serialization, state_dict=state_dict, **kwargs)
        spec = {**to_dict(self.spec), "path": ".", "init": "pretrained", "trust_remote_code": False,  # the caller decides
                "vocab_size": self.config.vocab_size, "mask_token_id": self.config.mask_token_id}
        (path / DENOISER_FILE).write_text(json.dumps(spec, indent=2))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Accept the network's own key names (a saved folder) as well as the wrapper's (``hf.`` prefix)."""
        if state_dict and not any(k.startswith("hf.") for k in state_dict):
            state_dict = {f"hf.{k}": v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def resize_token_embeddings(self, n: int):
        self.hf.resize_token_embeddings(n)
        self.config.vocab_size = n


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def _load_hf(spec: DenoiserConfig, source: str, dtype):
    """The Hugging Face network of ``spec`` (weights from ``source``, or fresh from its config)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    from .loading import looks_local

    local = Path(source).expanduser()
    if not local.exists() and looks_local(source):
        raise ConfigError(f"no such denoiser folder: {source!r} (check the path; hub ids look like owner/name)")
    if local.exists() and not (local / "config.json").is_file():
        raise ConfigError(f"denoiser.path {source!r} has no config.json; point it at a Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
    except Exception as e:  # noqa: BLE001 - unknown architecture, offline hub name, remote code refused
        msg = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise ConfigError(
            f"cannot read the model config at {source!r} ({msg}); give a local Hugging Face model folder of a "
            "supported architecture (LLaDA / Dream load natively with train.init_from)"
        ) from None
    auto = {"masked_lm": AutoModelForMaskedLM, "causal": AutoModelForCausalLM, "bidirectional": AutoModel}[spec.kind]
    kwargs = {"trust_remote_code": spec.trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        if spec.init == "random":
            model = auto.from_config(config, **kwargs)
        else:
            model = auto.from_pretrained(source, **kwargs)
    except ValueError as e:
        if "Unrecognized configuration class" not in str(e):
            raise
        hint = {"masked_lm": "use kind: causal for an autoregressive LM or kind: bidirectional for a LLaDA-style model",
                "causal": "use kind: masked_lm for BERT-style models",
                "bidirectional": "use kind: masked_lm or causal"}[spec.kind]
        raise ConfigError(
            f"denoiser.kind={spec.kind!r} does not support the {config.model_type!r} architecture at {source!r}; {hint}"
        ) from None
    return model


def _embedding_rows(hf) -> int:
    """Rows of the input embedding (remote-code models may not expose it: then config.vocab_size)."""
    try:
        return int(hf.get_input_embeddings().weight.shape[0])
    except (NotImplementedError, AttributeError):
        return int(hf.config.vocab_size)


def build_external_denoiser(spec, tokenizer, process) -> ExternalDenoiser:
    """The recipe's ``denoiser`` section -> an :class:`ExternalDenoiser` for ``process``.

    The tokenizer must be the network's own (plus a [MASK] added for causal LMs, for which the
    embeddings grow); the process must be the masked one with the tokenizer's mask token.
    """
    if isinstance(spec, dict):
        spec = from_dict(DenoiserConfig, spec, "denoiser")
    if not process.needs_mask_token or process.logits_shift:
        raise IncompatibleError(
            f"external denoisers serve the masked process, not {process.config.name!r}; set process.name=masked"
        )
    if process.required_attention not in (None, "bidirectional"):
        raise IncompatibleError("block diffusion needs the textdiff model (block-causal attention); drop the denoiser section")
    dtype = _DTYPES.get(spec.dtype) if spec.dtype else None
    hf = _load_hf(spec, spec.path, dtype)
    vocab = len(tokenizer)
    hf_vocab = _embedding_rows(hf)
    if vocab > hf_vocab:
        hf.resize_token_embeddings(vocab)  # the tokenizer gained tokens ([MASK] for a causal LM)
    mask_id = tokenizer.mask_token_id
    if mask_id is None or mask_id != process.mask_id:
        raise IncompatibleError("the process's mask token is not the tokenizer's; build the process with tokenizer.mask_token_id")
    return ExternalDenoiser(hf, spec, vocab, mask_id)


def load_external_denoiser(path, vocab_size: Optional[int] = None, dtype=None, trust_remote_code: bool = False) -> ExternalDenoiser:
    """Rebuild a saved external denoiser (a run's ``final/`` folder or ``train.init_from``).

    ``trust_remote_code`` comes from the caller only: the value saved in the folder's marker file
    is ignored, so no file in a folder can make textdiff run code."""
    from .loading import read_json

    path = Path(path)
    saved = read_json(path / DENOISER_FILE)
    try:
        vocab = int(saved.pop("vocab_size"))
        mask_id = saved.pop("mask_token_id")
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{str(path / DENOISER_FILE)!r} lacks vocab_size / mask_token_id; the file is damaged") from None
    saved["trust_remote_code"] = bool(trust_remote_code)
    spec = from_dict(DenoiserConfig, {**saved, "path": str(path), "init": "pretrained"}, "denoiser")
    if dtype is None and spec.dtype:
        dtype = _DTYPES[spec.dtype]
    hf = _load_hf(spec, str(path), dtype)
    if vocab_size is not None and vocab_size > vocab:
        hf.resize_token_embeddings(vocab_size)
        vocab = vocab_size
    return ExternalDenoiser(hf, spec, vocab, mask_id)


def load_external_tokenizer(spec: DenoiserConfig, tokenizer_path: Optional[str] = None):
    """The network's tokenizer, with ``spec.mask_token`` made its mask token when given."""
    from ..tokenization import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path or spec.path)
    if spec.mask_token is not None:
        if spec.mask_token not in tokenizer.get_vocab():
            raise ConfigError(f"denoiser.mask_token={spec.mask_token!r} is not in the tokenizer's vocabulary")
        tokenizer.mask_token = spec.mask_token
    return tokenizer
