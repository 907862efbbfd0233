"""The one weight-loading engine: a folder's tensors, renamed by a declared table, into a network.

Every published family and every converted folder loads through :func:`load_weights`. A family
declares HOW its names map (a list of rules, first match wins), never how to load:

    renames = [
        Rename(r"model\\.transformer\\.wte\\.weight", "model.embed_tokens.weight"),
        Split(r"model\\.transformer\\.blocks\\.(\\d+)\\.att_proj\\.weight",                 # fused [q; k; v] rows
              ("model.layers.\\1.self_attn.q_proj.weight", "model.layers.\\1.self_attn.k_proj.weight",
               "model.layers.\\1.self_attn.v_proj.weight"), sizes=(4096, 1024, 1024)),
        Stack(r"model\\.layers\\.(\\d+)\\.mlp\\.experts\\.(\\d+)\\.(gate|up)_proj\\.weight",  # per-expert -> [E, 2I, d]
              "model.layers.\\1.mlp.experts.gate_up_proj", count=64, parts=("gate", "up")),
        Drop(r"lm_head\\.weight"),                                              # a tied copy
        Rename(r".*"),                                                          # the rest: the same names
    ]

Rules: :class:`Rename` (``re`` replacement), :class:`Split` (a fused projection cut along ``dim``
into ``sizes``), :class:`Stack` (one tensor per expert stacked into [E, ...], each expert's
``parts`` concatenated first), :class:`Drop`, :class:`Aside` (kept out of the network and returned,
e.g. BD3-LM's clipped mask-rate scalars) and :class:`Expect` (a buffer the network recomputes:
checked against ``value``, then dropped). A name no rule matches is reported as a tensor "this
layout does not have"; a table that ends with the identity rule passes unknown names on, and the
final check reports them as unexpected.

Low memory: the network is built on the meta device (no allocation, no random init); each tensor
read from the shards (:func:`~textdiff.models.loading.iter_tensors`, one file at a time) is
converted, cast and ASSIGNED as the parameter itself, so peak memory is one copy of the weights.
With ``device_map`` (see :mod:`textdiff.models.dispatch`) the plan is made on the meta model
first; each tensor then goes straight to its device, or (``"disk"``) into ``offload_folder`` as
accelerate's memory-mapped ``.dat`` file while its parameter stays on meta, and accelerate's hooks
are attached at the end: no device ever holds more than its part. Buffers that are never saved
(rotary inverse frequencies) are rebuilt from the config. Every problem is one line naming the
tensor: missing, misshapen, unknown, or a fused tensor whose rows do not add up.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import ConfigError
from .loading import check_state_dict, iter_tensors, weight_files


@dataclass(frozen=True)
class Rule:
    """A pattern that must match a stored tensor's whole name."""

    pattern: str

    def match(self, name: str):
        return re.fullmatch(self.pattern, name)


@dataclass(frozen=True)
class Rename(Rule):
    target: str = r"\g<0>"  # a ``re`` replacement: \1 is the pattern's first group


@dataclass(frozen=True)
class Split(Rule):
    targets: tuple = ()  # one replacement per part
    sizes: tuple = ()  # the parts' sizes along ``dim``
    dim: int = 0


@dataclass(frozen=True)
class Stack(Rule):
    target: str = ""  # replacement naming the stacked tensor (the same for every expert of a layer)
    count: int = 0  # E: experts per stacked tensor
    index: int = 2  # group of ``pattern`` holding the expert index
    parts: tuple = ()  # names (group ``part``) concatenated along dim 0 per expert, in this order
    part: int = 3


@dataclass(frozen=True)
class Drop(Rule):
    pass


@dataclass(frozen=True)
class Aside(Rule):
    pass


@dataclass(frozen=True, eq=False)
class Expect(Rule):
    value: Optional[torch.Tensor] = None
    hint: str = ""  # what the error says about the tensor, e.g. "is not the base-10000 table ..."


@dataclass
class _Stacks:
    """Per-expert tensors waiting for the rest of their layer."""

    waiting: dict = field(default_factory=dict)

    def add(self, rule: Stack, m, tensor: torch.Tensor, name: str, expected: dict, source: str) -> list:
        target = m.expand(rule.target)
        j = int(m.group(rule.index))
        part = m.group(rule.part) if rule.parts else None
        whole = expected.get(target)
        if whole is not None:
            want = (whole[1] // max(len(rule.parts), 1), *whole[2:])
            if j >= rule.count or tuple(tensor.shape) != want:
                raise ConfigError(f"{source}: tensor {name!r} has shape {list(tensor.shape)} but the config gives "
                                  f"{list(want)} (of {rule.count} experts); config.json does not match the weights")
        got = self.waiting.setdefault(target, {})
        got[(j, part)] = tensor
        if len(got) < rule.count * max(len(rule.parts), 1):
            return []
        del self.waiting[target]
        if rule.parts:  # [E, sum of parts, ...]
            return [(target, torch.stack([torch.cat([got[(e, p)] for p in rule.parts], 0) for e in range(rule.count)]))]
        return [(target, torch.stack([got[(e, None)] for e in range(rule.count)]))]


def convert(name: str, tensor: torch.Tensor, renames: Sequence[Rule], stacks: _Stacks, expected: dict, aside: dict,
            source: str) -> Optional[list]:
    """[(network name, tensor)] for one stored tensor (``[]``: dropped, set aside or waiting for its
    stack); None when no rule matches."""
    for rule in renames:
        m = rule.match(name)
        if m is None:
            continue
        if isinstance(rule, Rename):
            return [(m.expand(rule.target), tensor)]
        if isinstance(rule, Split):
            if tensor.shape[rule.dim] != sum(rule.sizes):
                raise ConfigError(f"{source}: fused tensor {name!r} has shape {list(tensor.shape)} but the config splits its "
                                  f"dim {rule.dim} into {' + '.join(map(str, rule.sizes))}; config.json does not match the weights")
            return [(m.expand(t), part) for t, part in zip(rule.targets, tensor.split(list(rule.sizes), dim=rule.dim))]
        if isinstance(rule, Stack):
            return stacks.add(rule, m, tensor, name, expected, source)
        if isinstance(rule, Expect):
            want = rule.value
            if tuple(tensor.shape) != tuple(want.shape) or not torch.allclose(tensor.float(), want.float(), rtol=1e-5):
                raise ConfigError(f"{source}: {name} {rule.hint}")
        if isinstance(rule, Aside):
            aside[name] = tensor
        return []  # Drop, Aside, Expect (checked)
    return None


def _assign(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)


def load_weights(network_class, config, folder: Path, renames: Sequence[Rule], *, source: str, dtype=None, device=None,
                 allow_pickle: bool = False, device_map=None, max_memory: Optional[dict] = None, offload_folder=None):
    """(``network_class(config)`` holding the folder's weights renamed by ``renames``, {name: tensor} set
    aside by :class:`Aside` rules). ``dtype``: cast floating tensors (default: as stored); ``device`` or
    ``device_map`` (+ ``max_memory``, ``offload_folder``): where each tensor goes as it is read."""
    from . import dispatch

    with torch.device("meta"):
        model = network_class(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if tied:
        expected.pop("lm_head.weight", None)
    mapping = None
    if device_map is not None:
        mapping = dispatch.plan(model, device_map, max_memory, dtype or stored_dtype(folder, allow_pickle), offload_folder)
        if offload_folder is not None:
            Path(offload_folder).mkdir(parents=True, exist_ok=True)
    offload_index: dict = {}
    seen: dict[str, torch.Tensor] = {}
    aside: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    stacks = _Stacks()
    for name, raw in iter_tensors(folder, allow_pickle):
        converted = convert(name, raw, renames, stacks, expected, aside, source)
        if converted is None:
            unknown.append(name)
            continue
        for new, tensor in converted:
            if new in expected and tuple(tensor.shape) == expected[new]:
                cast = (dtype or tensor.dtype) if tensor.is_floating_point() else None
                where = (device or "cpu") if mapping is None else dispatch.target(new, mapping)
                if where == "disk":  # accelerate's memory-mapped file; the parameter stays on meta
                    from accelerate.utils import offload_weight

                    offload_weight(tensor.to(dtype=cast), new, str(offload_folder), index=offload_index)
                    # the hooks cast what they read back to the meta parameter's dtype: give it the file's
                    _assign(model, new, torch.empty(tensor.shape, dtype=cast or tensor.dtype, device="meta"))
                else:
                    _assign(model, new, tensor.to(device=where, dtype=cast))
            seen[new] = torch.empty(tensor.shape, device="meta")
            del tensor
        del raw
    if unknown:
        raise ConfigError(f"{source} has {len(unknown)} tensor(s) this layout does not have ({', '.join(unknown[:3])}); "
                          "the folder holds another architecture")
    check_state_dict(expected, seen, source)
    if tied:
        model.get_submodule("lm_head").weight = model.get_input_embeddings().weight
    _rebuild_buffers(model, config, mapping)
    for p in model.parameters():
        p.requires_grad_(True)
    if mapping is not None:
        if offload_index:
            from accelerate.utils import save_offload_index

            save_offload_index(offload_index, str(offload_folder))
        dispatch.dispatch(model, mapping, offload_folder, offload_index)
    return model.eval(), aside


def _rebuild_buffers(model: torch.nn.Module, config, mapping: Optional[dict]) -> None:
    """Modules whose buffers were never saved (rotary inverse frequencies: still on meta) are built
    again from the config, on the device of the embedding or of their place in the map."""
    from . import dispatch

    for name, module in list(model.named_modules()):
        buffers = [b for b, v in module.named_buffers(recurse=False) if v.is_meta]
        if not buffers or not name:
            continue
        if mapping is None:
            device = model.get_input_embeddings().weight.device
        else:  # a disk / CPU-offloaded module gets its buffers moved by the hooks
            device = dispatch.target(f"{name}.{buffers[0]}", mapping)
            device = "cpu" if device == "disk" else device
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, type(module)(config=config).to(device))


def stored_dtype(folder: Path, allow_pickle: bool = False):
    """The dtype of the first floating tensor in the folder (sizes for an automatic device map),
    read from the safetensors header only."""
    from safetensors import safe_open

    for path in weight_files(folder, allow_pickle):
        if path.suffix != ".safetensors":
            return None
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                dtype = getattr(torch, {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}.get(
                    f.get_slice(key).get_dtype(), ""), None)
                if isinstance(dtype, torch.dtype):
                    return dtype
    return None
