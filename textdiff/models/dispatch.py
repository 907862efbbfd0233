"""``device_map``: a large denoiser spread over GPUs, the CPU and the disk (accelerate's hooks).

Semantics are Hugging Face's (``PreTrainedModel.from_pretrained(device_map=...)``):

* ``"auto"`` / ``"balanced"`` / ``"balanced_low_0"`` / ``"sequential"``: accelerate's
  ``infer_auto_device_map`` on the meta-built network (GPUs first, then the CPU, then the disk),
  within ``max_memory`` (e.g. ``{0: "20GiB", "cpu": "60GiB"}``; default: what is free), never
  splitting a module class in the model's ``_no_split_modules`` (a decoder layer);
* ``"cpu"`` or a device (``"cuda:1"``, an int): the whole model there;
* a dict ``module name -> device`` (``"cpu"``, ``"cuda:0"``, an int, ``"disk"``; ``""`` = the root)
  that covers every parameter.

:func:`plan` checks a map against the meta model and returns it complete (one-line ConfigErrors),
:func:`target` says where one tensor goes, :func:`dispatch` attaches accelerate's hooks (inputs
moved to each block's execution device; CPU and disk parts streamed in at their forward) once the
weights are in place. The weight engine (``models/weights.py``) puts every tensor read from a shard
straight where the plan says, so no device (the CPU included) ever holds more than its part.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from ..errors import ConfigError

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DeviceMap = Union[str, int, torch.device, dict]


def check_arguments(device_map, max_memory, offload_folder, device) -> None:
    """Argument checks that need no model (called by ``from_pretrained`` before anything is read)."""
    if device_map is None:
        for name, value in (("max_memory", max_memory), ("offload_folder", offload_folder)):
            if value is not None:
                raise ConfigError(f"{name} only applies with device_map=...; pass device_map='auto' (or a dict) too")
        return
    if device is not None:
        raise ConfigError("pass either device= or device_map=, not both (device_map places every module itself)")
    if not isinstance(device_map, (str, int, torch.device, dict)) or isinstance(device_map, bool):
        raise ConfigError(f"device_map must be 'auto', 'balanced', 'sequential', 'cpu', a device or a dict "
                          f"module name -> device, got {type(device_map).__name__}")
    if max_memory is not None and not isinstance(max_memory, dict):
        raise ConfigError(f"max_memory must be a dict device -> size (e.g. {{0: '20GiB', 'cpu': '60GiB'}}), "
                          f"got {type(max_memory).__name__}")
    if offload_folder is not None and Path(offload_folder).exists() and not Path(offload_folder).is_dir():
        raise ConfigError(f"offload_folder {str(offload_folder)!r} is a file; pass a folder (created when missing)")


def _device(value, what: str) -> str:
    """A map value as a device string ("cpu", "disk", "cuda:0", ...), checked to exist here."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: {value!r} is not a device")
    if isinstance(value, int):
        value = f"cuda:{value}"
    if value == "disk":
        return "disk"
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{what}: {value!r} is not a device (use 'cpu', 'cuda:0', an int or 'disk')") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if dev.index is None else dev.index
        if index >= count:
            raise ConfigError(f"{what}: 'cuda:{index}' does not exist on this machine ({count} CUDA device(s)); "
                              "use device_map='auto' or name an existing device")
        return f"cuda:{index}"
    if dev.type == "meta":
        raise ConfigError(f"{what}: 'meta' holds no weights; use 'cpu', a GPU or 'disk'")
    if dev.type != "cpu":  # mps / xpu / ...: exists when a tensor can live there
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError, AttributeError):
            raise ConfigError(f"{what}: {value!r} is not available on this machine") from None
    return str(dev)


def _memory(max_memory: Optional[dict]) -> Optional[dict]:
    """max_memory with keys as accelerate wants them (GPU index ints, "cpu", "disk") and sizes checked."""
    if max_memory is None:
        return None
    from accelerate.utils import convert_file_size_to_int

    out = {}
    for key, size in max_memory.items():
        if key == "disk":
            raise ConfigError("max_memory takes GPUs and 'cpu'; the disk part has no limit (pass offload_folder)")
        dev = _device(key, "max_memory")
        try:
            bytes_ = convert_file_size_to_int(size)
        except (ValueError, AttributeError, TypeError):
            bytes_ = -1
        if bytes_ < 0:
            raise ConfigError(f"max_memory[{key!r}] = {size!r} is not a size; use bytes or a string like '20GiB'")
        out[int(dev.split(":")[1]) if dev.startswith("cuda:") else dev] = bytes_
    return out


def plan(model: torch.nn.Module, device_map: DeviceMap, max_memory: Optional[dict] = None,
         dtype: Optional[torch.dtype] = None, offload_folder=None) -> dict[str, str]:
    """The complete map ``module name -> device string`` for ``model`` (built on the meta device).

    dtype: the dtype the weights will have (sizes for the automatic strategies)."""
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    memory = _memory(max_memory)
    if isinstance(device_map, str) and device_map in STRATEGIES:
        from accelerate import infer_auto_device_map
        from accelerate.utils import get_balanced_memory

        if device_map != "sequential":
            memory = get_balanced_memory(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype,
                                         low_zero=device_map == "balanced_low_0")
        found = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype)
        mapping = {name: _device(dev, "device_map") for name, dev in found.items()}
    elif memory is not None:
        raise ConfigError(f"max_memory applies to device_map='auto' / 'balanced' / 'sequential', not to {device_map!r}")
    elif isinstance(device_map, dict):
        if not device_map:
            raise ConfigError("device_map is an empty dict; map module names to devices, e.g. {'': 'cpu'}")
        modules = dict(model.named_modules())
        mapping = {}
        for name, dev in device_map.items():
            if not isinstance(name, str) or name not in modules:
                examples = ", ".join(n for n in list(modules)[1:4])
                raise ConfigError(f"device_map names {name!r}, which is no module of this model (e.g. {examples}, ...)")
            mapping[name] = _device(dev, f"device_map[{name!r}]")
        _check_whole_blocks(model, mapping, no_split)
        mapping = _disjoint(model, mapping)
    else:
        if isinstance(device_map, str) and device_map.split(":")[0] not in ("cpu", "cuda", "mps", "xpu", "disk"):
            raise ConfigError(f"device_map={device_map!r} is unknown; use 'auto', 'balanced', 'balanced_low_0', "
                              "'sequential', 'cpu', a device or a dict module name -> device")
        mapping = {"": _device(device_map, "device_map")}
    uncovered = [n for n, _ in _tensors(model) if target(n, mapping) is None]
    if uncovered:
        raise ConfigError(f"device_map leaves {len(uncovered)} tensor(s) without a device ({', '.join(uncovered[:2])}); "
                          "map every module (or '' for the rest)")
    if "disk" in mapping.values() and offload_folder is None:
        disk = [n for n, d in mapping.items() if d == "disk"]
        raise ConfigError(f"device_map sends {', '.join(disk[:3]) or 'modules'} to the disk; pass offload_folder=<a folder>")
    return mapping


def _tensors(model):
    yield from model.named_parameters()
    yield from model.named_buffers()


def _check_whole_blocks(model, mapping: dict, no_split: list) -> None:
    """A key strictly inside a no-split block (a decoder layer) would split it across devices."""
    blocks = [n for n, m in model.named_modules() if type(m).__name__ in no_split]
    for name in mapping:
        for block in blocks:
            if name.startswith(block + "."):
                raise ConfigError(f"device_map splits {block} ({type(model.get_submodule(block)).__name__}) at {name!r}; "
                                  "map whole layers (a decoder layer runs on one device)")


def _disjoint(model, mapping: dict) -> dict:
    """The same placement with no key inside another ({"": "cpu", "model.layers.1": "disk"} ->
    one entry per untouched subtree), the form accelerate's hooks expect."""
    out: dict[str, str] = {}

    def walk(name: str, module, inherited):
        here = mapping.get(name, inherited)
        prefix = name + "." if name else ""
        if not any(k.startswith(prefix) and k != name for k in mapping):
            if here is not None:
                out[name] = here
            return
        own = [n for n, _ in module.named_parameters(recurse=False)] + [n for n, _ in module.named_buffers(recurse=False)]
        for leaf in own:  # tensors held by the module itself, beside its mapped children
            if here is not None:
                out[prefix + leaf] = here
        for child_name, child in module.named_children():
            walk(prefix + child_name, child, here)

    walk("", model, None)
    return out


def target(name: str, mapping: dict) -> Optional[str]:
    """The device of tensor ``name``: the map entry of its longest module prefix (None: unmapped)."""
    while True:
        if name in mapping:
            return mapping[name]
        if not name:
            return None
        name = name.rpartition(".")[0]


def main_device(model, mapping: dict) -> str:
    """Where inputs go first: the embedding's device when it is a GPU, else the first GPU, else the CPU."""
    embed = target(_embedding_name(model), mapping)
    if embed not in ("cpu", "disk", None):
        return embed
    gpus = [d for d in mapping.values() if d not in ("cpu", "disk")]
    return gpus[0] if gpus else "cpu"


def _embedding_name(model) -> str:
    embed = model.get_input_embeddings()
    return next(n for n, m in model.named_modules() if m is embed) + ".weight"


def dispatch(model, mapping: dict, offload_folder=None, offload_index: Optional[dict] = None):
    """Attach accelerate's hooks for ``mapping`` (weights already placed: GPU / CPU parts as real
    tensors, disk parts in ``offload_folder`` with ``offload_index``, still on meta in the model)."""
    from accelerate import dispatch_model

    if len(set(mapping.values())) > 1 or "disk" in mapping.values():
        dispatch_model(model, mapping, main_device=main_device(model, mapping),
                       offload_dir=None if offload_folder is None else str(offload_folder),
                       offload_index=offload_index or None)
    model.hf_device_map = dict(mapping)
    return model


def input_device(model) -> torch.device:
    """The device a model's inputs are built on: the embedding's execution device for a dispatched
    model (Hugging Face's convention), else the first parameter's."""
    mapping = getattr(model, "hf_device_map", None)
    if mapping:
        return torch.device(main_device(model, mapping))
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
