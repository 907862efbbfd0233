"""Reading a textdiff model folder (``save_pretrained``, ``convert``, a run's ``final/`` or
``checkpoint-N/``): its files checked with one-line errors, its tokenizer, and its network loaded
strictly (every weight present with its configured shape) by the installed package's classes.

* textdiff's own network and the MoE denoisers: transformers' Auto classes (``trust_remote_code``
  off: the package's classes, never the folder's ``.py`` files), refusing missing or misshapen tensors;
* converted LLaDA / Dream (``textdiff_llama`` / ``textdiff_qwen2``), and any network with a
  ``device_map``: shard by shard through :func:`textdiff.models.weights.load_weights`;
* a Hugging Face network trained as a denoiser: :func:`textdiff.models.external.load_external_denoiser`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...errors import ConfigError
from .layout import EXTERNAL, PIPELINE_FILE, folder_kind, model_type
from .pipeline import read_pipeline


def read_model_folder(path: Path, device, dtype, trust_remote_code: bool = False, allow_pickle: bool = False,
                      placement: Optional[dict] = None):
    """(network, tokenizer, textdiff.json contents) of a textdiff model folder; ``placement``: the
    ``device_map`` / ``max_memory`` / ``offload_folder`` of a spread model (else ``device``)."""
    from ...tokenization import load_tokenizer
    from ..loading import read_json, weight_files

    kind = folder_kind(path)  # textdiff.json beside another architecture's config: one-line error
    missing = [f for f in ("config.json", PIPELINE_FILE) if not (path / f).is_file()]
    if missing:
        raise ConfigError(f"model folder {str(path)!r} is missing {', '.join(missing)}; is it a textdiff model folder?")
    weight_files(path, allow_pickle)  # one-line errors for missing shards / pickle-only folders
    meta = read_pipeline(path)
    read_json(path / "config.json")  # a damaged config.json: one line, before the tokenizer reads it
    check_network_config(path)  # a bad value in it (num_heads: 0) is the config's error, not the tokenizer's
    tok_source = path if (path / "tokenizer_config.json").is_file() else path.parent / "tokenizer"
    if not (tok_source / "tokenizer_config.json").is_file() and not (tok_source / "tokenizer.json").is_file():
        raise ConfigError(f"model folder {str(path)!r} has no tokenizer (tokenizer.json / tokenizer_config.json); "
                          "copy the run's tokenizer files into it")
    tokenizer = load_tokenizer(str(tok_source))
    model = read_network(path, kind, device, dtype, trust_remote_code, allow_pickle, placement)
    return model, tokenizer, meta


def check_network_config(path: Path) -> None:
    """The config.json of a folder of textdiff's own networks, built as its config class would build
    it: a value the class refuses is a one-line error naming the file (transformers would otherwise
    fail later, inside the tokenizer's or the network's loading, under their names)."""
    from .. import NATIVE_MODEL_TYPES

    if model_type(path) not in NATIVE_MODEL_TYPES:
        return
    from transformers import AutoConfig

    from ..auto import register_auto_classes

    register_auto_classes()
    try:
        AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    except Exception as e:  # noqa: BLE001  the config class's own check (ValueError, ZeroDivisionError, TypeError)
        why = " ".join(str(e).split())[:200]
        raise ConfigError(f"{path / 'config.json'} has a value its network cannot be built with ({type(e).__name__}: "
                          f"{why}); fix that value or re-save the model") from None


def read_network(path: Path, kind: str, device=None, dtype=None, trust_remote_code: bool = False,
                 allow_pickle: bool = False, placement: Optional[dict] = None, vocab_size: Optional[int] = None):
    """The network of a textdiff (``kind="textdiff"``) or external folder, in eval mode, on ``device``
    (or spread by ``placement``). ``vocab_size``: grow the embeddings to it (fine-tuning with a
    tokenizer that gained tokens)."""
    from ..adapted import adapted_spec

    if placement is not None or is_bidirectional_folder(path):  # shard by shard, maybe a device_map
        model = load_bidirectional(path, device, dtype, allow_pickle, placement)
    elif model_type(path) == "diffusion_gemma":  # transformers' own class (models/diffusion_gemma.py)
        from ..diffusion_gemma import load_diffusion_gemma

        model = load_diffusion_gemma(path, dtype)
    elif kind == EXTERNAL and adapted_spec(path) is not None:  # a causal LM adapted to diffusion (models/adapted.py)
        model = load_adapted(path, dtype, vocab_size)
    elif kind == EXTERNAL:  # a Hugging Face network trained as a denoiser (models/external.py)
        from ..external import load_external_denoiser

        model = load_external_denoiser(path, vocab_size, dtype=dtype, trust_remote_code=trust_remote_code)
    else:
        from transformers import AutoModel

        from ..auto import register_auto_classes

        register_auto_classes()  # AutoModel reads the folder's config.json: textdiff's classes must be known
        model = load_strict(AutoModel, path, dtype)
    if vocab_size is not None and kind != EXTERNAL and model_type(path) != "diffusion_gemma":
        grow_vocabulary(model, vocab_size)
    if placement is None and device is not None:
        model.to(device)  # (already there when read shard by shard)
    return model.eval()


def load_adapted(path: Path, dtype, vocab_size: Optional[int] = None):
    """An adapted causal LM: its network (a textdiff AR model or a transformers causal LM, the installed
    package's classes, every weight present) wrapped by its saved spec."""
    from ..adapted import adapted_spec, from_spec
    from .layout import model_type

    if model_type(path) == "textdiff":
        from transformers import AutoModel

        from ..auto import register_auto_classes

        register_auto_classes()
        network = load_strict(AutoModel, path, dtype)
    else:
        from transformers import AutoModelForCausalLM

        network = load_strict(AutoModelForCausalLM, path, dtype)
    return from_spec(network, adapted_spec(path), path, vocab_size)


def grow_vocabulary(model, vocab_size: int) -> None:
    """Embeddings grown to ``vocab_size`` rows (never shrunk: a smaller tokenizer is not the model's)."""
    if vocab_size == model.config.vocab_size:
        return
    if vocab_size < model.config.vocab_size:
        raise ConfigError(f"the tokenizer has {vocab_size} tokens but the model {model.config.vocab_size}; use the model's tokenizer")
    model.resize_token_embeddings(vocab_size)


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
    from ..modeling_bidirectional import NATIVE_CLASSES

    return model_type(path) in NATIVE_CLASSES


def load_bidirectional(path: Path, device, dtype, allow_pickle: bool, placement: Optional[dict]):
    """A saved ``textdiff_llama`` / ``textdiff_qwen2`` folder read shard by shard onto ``device`` or
    its device map (the one weight engine with the network's own names: low memory, one-line errors
    naming a missing or misshapen tensor); other networks refuse a device_map."""
    from ..loading import read_json
    from ..modeling_bidirectional import NATIVE_CLASSES
    from ..weights import Drop, Rename, load_weights

    kind = model_type(path)
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
