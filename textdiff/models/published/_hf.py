"""Shared loading of the large published LMs (LLaDA, Dream) onto transformers' modules.

Low memory: the network is built on the meta device (no allocation, no random init), then every
tensor read from the shards (:func:`~textdiff.models.loading.iter_tensors`, one file at a time) is
converted, cast and ASSIGNED as the parameter itself, so peak memory is one copy of the weights.

With ``options.device_map`` (see :mod:`textdiff.models.dispatch`) the plan is made on the meta
model first; each tensor then goes straight to its device, or (``"disk"``) into
``options.offload_folder`` as accelerate's memory-mapped ``.dat`` file while its parameter stays
on meta, and accelerate's hooks are attached at the end: no device ever holds more than its part.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ...errors import ConfigError
from ..loading import check_state_dict, iter_tensors
from . import LoadOptions
from . import read_tokenizer as read_family_tokenizer


def _assign(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)


def load_weights(model_class, config, folder: Path, options: LoadOptions, convert: Callable, source: str):
    """``model_class(config)`` with the folder's weights; ``convert(name, tensor)`` -> [(name, tensor)]."""
    from .. import dispatch

    with torch.device("meta"):
        model = model_class(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if tied:
        expected.pop("lm_head.weight", None)
    mapping = None
    if options.device_map is not None:
        mapping = dispatch.plan(model, options.device_map, options.max_memory,
                                options.dtype or _stored_dtype(folder, options), options.offload_folder)
        if options.offload_folder is not None:
            Path(options.offload_folder).mkdir(parents=True, exist_ok=True)
    offload_index: dict = {}
    seen: dict[str, torch.Tensor] = {}
    for name, raw in iter_tensors(folder, options.allow_pickle):
        for new, tensor in convert(name, raw):
            if new in expected and tuple(tensor.shape) == expected[new]:
                dtype = options.dtype or (tensor.dtype if tensor.is_floating_point() else None)
                where = (options.device or "cpu") if mapping is None else dispatch.target(new, mapping)
                if where == "disk":  # accelerate's memory-mapped file; the parameter stays on meta
                    from accelerate.utils import offload_weight

                    offload_weight(tensor.to(dtype=dtype), new, str(options.offload_folder), index=offload_index)
                    # the hooks cast what they read back to the meta parameter's dtype: give it the file's
                    _assign(model, new, torch.empty(tensor.shape, dtype=dtype or tensor.dtype, device="meta"))
                else:
                    _assign(model, new, tensor.to(device=where, dtype=dtype))
            seen[new] = torch.empty(tensor.shape, device="meta")
            del tensor
        del raw
    check_state_dict(expected, seen, f"{source} {str(folder)!r}")
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    if mapping is None:
        device = model.model.embed_tokens.weight.device
    else:  # a disk / CPU-offloaded rotary module gets its buffers moved by the hooks
        device = dispatch.target("model.rotary_emb.inv_freq", mapping)
        device = "cpu" if device == "disk" else device
    # non-persistent buffers (rotary inverse frequencies) were never in the files: rebuild them
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    if mapping is not None:
        if offload_index:
            from accelerate.utils import save_offload_index

            save_offload_index(offload_index, str(options.offload_folder))
        dispatch.dispatch(model, mapping, options.offload_folder, offload_index)
    return model.eval()


def _stored_dtype(folder: Path, options: LoadOptions):
    """The dtype of the first floating tensor in the folder (sizes for an automatic device map),
    read from the safetensors header only."""
    from safetensors import safe_open

    from ..loading import weight_files

    for path in weight_files(folder, options.allow_pickle):
        if path.suffix != ".safetensors":
            return None
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                dtype = getattr(torch, {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}.get(
                    f.get_slice(key).get_dtype(), ""), None)
                if isinstance(dtype, torch.dtype):
                    return dtype
    return None


def _load(where: Path, tokenizer_class):
    """``tokenizer_class.from_pretrained`` (data files only; AutoTokenizer would read config.json's
    auto_map and ask to run the folder's code)."""
    try:
        return tokenizer_class.from_pretrained(str(where))
    except Exception as e:  # noqa: BLE001 - missing / damaged tokenizer files
        raise ConfigError(f"cannot load the tokenizer in {str(where)!r} ({type(e).__name__}: {str(e).splitlines()[0][:100]}); "
                          "pass tokenizer=<folder with the released tokenizer files>") from None


def read_tokenizer(folder: Path, options: LoadOptions, default: str, tokenizer_class=None):
    """:func:`~textdiff.models.published.read_tokenizer` for the large families: the folder counts as a
    tokenizer folder with tokenizer.json / tokenizer_config.json, read with ``tokenizer_class``."""
    read = (lambda where: _load(where, tokenizer_class)) if tokenizer_class is not None else None
    return read_family_tokenizer(folder, options, default, read, files=("tokenizer.json", "tokenizer_config.json"))


def published_tokenizer(folder: Path, options: LoadOptions, default: str, mask_token_id: int, eos_token=None,
                        tokenizer_class=None):
    """:func:`read_tokenizer`'s tokenizer with its mask token set to the model's ``mask_token_id``
    (e.g. LLaDA's ``<|mdm_mask|>``) and a PAD token."""
    tokenizer = read_tokenizer(folder, options, default, tokenizer_class)
    in_range = 0 <= int(mask_token_id) < len(tokenizer)
    mask = tokenizer.convert_ids_to_tokens(int(mask_token_id)) if in_range else None
    if mask is None or not in_range:
        raise ConfigError(f"the tokenizer has no token with the model's mask id {mask_token_id}; "
                          f"pass the tokenizer this model was released with ({default})")
    if tokenizer.mask_token_id != mask_token_id:
        tokenizer.mask_token = mask
    if tokenizer.eos_token is None and isinstance(eos_token, int) and eos_token < len(tokenizer):
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_token)
    if tokenizer.eos_token is None:
        raise ConfigError("the tokenizer has no EOS token; pass the tokenizer this model was released with")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
