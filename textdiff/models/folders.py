"""Reading a folder that ``DiffusionLM.save_pretrained`` wrote: the pipeline file, the strict load of a
textdiff network, and the shard-by-shard load of the HF-module denoisers (LLaDA / Dream / MoE)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import ConfigError


def check_pipeline(meta: dict, file: Path) -> dict:
    """``textdiff.json`` (already read as a JSON object) must name a process and a sane seq_len."""
    if not isinstance(meta.get("process"), (dict, str)):
        raise ConfigError(f"{file} has no 'process' section; is it a textdiff model folder?")
    seq_len = meta.get("seq_len")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise ConfigError(f"{file}: seq_len={seq_len!r} must be a positive integer")
    return meta


def load_strict(auto_cls, path: Path, dtype):
    """A Hugging Face model folder loaded with every weight present and of its configured shape
    (transformers would silently initialise missing or mismatched tensors at random)."""
    # trust_remote_code=False: the installed package's classes, never the folder's own .py files
    kwargs = {"trust_remote_code": False, **({} if dtype is None else {"dtype": dtype})}
    try:
        model, info = auto_cls.from_pretrained(str(path), output_loading_info=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - transformers / safetensors raise many types for damaged files
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"model folder {str(path)!r} cannot be loaded ({type(e).__name__}: {first}); "
                          "its config.json or weights are damaged") from None
    missing = list(info.get("missing_keys") or [])
    bad_shape = list(info.get("mismatched_keys") or [])
    if missing or bad_shape:
        what = f"lacks tensor {sorted(missing)[0]!r}" if missing else f"has tensor {bad_shape[0][0]!r} of another shape than config.json says"
        raise ConfigError(f"model folder {str(path)!r} {what} ({len(missing) + len(bad_shape)} problem(s)); "
                          "its weights or config.json are damaged")
    return model


def is_bidirectional_folder(path: Path) -> bool:
    from .external import folder_model_type
    from .modeling_bidirectional import NATIVE_CLASSES

    return folder_model_type(path) in NATIVE_CLASSES


def load_bidirectional(path: Path, device, dtype, allow_pickle: bool, placement: Optional[dict]):
    """A saved ``textdiff_llama`` / ``textdiff_qwen2`` folder read shard by shard onto ``device`` or
    its device map (the published loader with identity names: low memory, one-line errors naming a
    missing or misshapen tensor); other networks refuse a device_map."""
    from .external import folder_model_type
    from .loading import read_json
    from .modeling_bidirectional import NATIVE_CLASSES
    from .weights import Drop, Rename, load_weights

    kind = folder_model_type(path)
    if kind not in NATIVE_CLASSES:
        raise ConfigError(f"device_map is supported for LLaDA / Dream models ({', '.join(NATIVE_CLASSES)}), not for "
                          f"this {kind!r} folder; load it with device=... instead")
    config_class, model_class = NATIVE_CLASSES[kind]
    try:
        config = config_class.from_dict(read_json(path / "config.json"))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{str(path / 'config.json')!r} does not describe a {kind} model ({str(e).splitlines()[0][:100]})") from None
    tied = bool(getattr(config, "tie_word_embeddings", False))
    renames = [Drop(r"lm_head\.weight")] * tied + [Rename(r".*")]  # the network's own names
    placement = placement or {}
    model, _ = load_weights(model_class, config, path, renames, source=f"textdiff model folder {str(path)!r}", dtype=dtype,
                            device=None if placement else device, allow_pickle=allow_pickle, **placement)
    return model


def is_textdiff_config(path: Path) -> bool:
    """A folder whose config.json says it is a textdiff denoiser (its textdiff.json may be missing)."""
    from . import NATIVE_MODEL_TYPES
    from .external import folder_model_type

    return folder_model_type(path) in NATIVE_MODEL_TYPES
