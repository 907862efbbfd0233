"""The family base: what one publisher's layout declares, and the one way every family is loaded.

How to add a family (LLaDA 2.1, SDAR, Fast-dLLM v2, a causal LM to adapt, ...):

1. Write ``textdiff/models/published/<name>.py`` with one subclass of :class:`Family` (or of a shared
   base: :class:`~.dit.DiTFamily` for the MDLM-style DiT exports, :class:`~.decoder.DecoderFamily`
   for transformers decoders run bidirectionally) that declares

   * ``name`` (the table key) and ``label`` (how messages name its checkpoints);
   * ``matches(config)``: True for its own config.json, from the file's fields only (never the
     folder's name), and False for every other family's (loading refuses an ambiguous folder);
   * ``network(config, tokenizer, source)``: the network class and its config built from
     config.json, with a one-line error for every value the conversion cannot express;
   * ``renames(config, network)``: the rename table of :mod:`textdiff.models.weights` (``Rename``,
     ``Split`` fused projections, ``Stack`` experts, ``Drop``, ``Aside``, ``Expect``);
   * the defaults it was released with: ``process(config, network)``, ``sampler``,
     ``tokenizer_default`` (the hub id of its tokenizer), ``generation`` (e.g. ``{"block_size": 32}``),
     ``stop_tokens``, ``notes``.
2. Add one line ``"<name>": "<module>.<Class>"`` to ``FAMILIES`` in ``published/__init__.py``.
3. Make a tiny random checkpoint in the publisher's layout with the publisher's own code
   (``tests/fixtures/published/make_<name>.py --publisher-code PATH``) and test parity on it.

Helpers shared by several families live in shared modules (``dit.py``, ``decoder.py``, ``moe.py``);
a family never imports another family's file. Nothing here imports or runs a file from a folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch

from ...errors import ConfigError
from ..weights import load_weights


@dataclass
class Published:
    """A converted published checkpoint: everything ``DiffusionLM`` needs."""

    model: torch.nn.Module  # the textdiff denoiser call: model(input_ids [B, L], t, ...) -> logits [B, L, V]
    tokenizer: Any  # a transformers tokenizer with mask / eos / pad tokens set
    process: dict  # process config spec, e.g. {"name": "masked", "schedule": {"name": "loglinear"}}
    sampler: dict  # the default sampler spec, e.g. {"name": "ancestral"}
    seq_len: int  # the training context length
    family: str = ""
    notes: dict = field(default_factory=dict)  # what the family wants recorded (source, protocol)


@dataclass
class LoadOptions:
    """What the caller chose; nothing here can come from a file in the folder."""

    tokenizer: Any = None  # a tokenizer object or a path / hub id; default: the folder's or the family's
    dtype: Optional[torch.dtype] = None
    device: Optional[str] = None
    allow_pickle: bool = False
    revision: Optional[str] = None
    low_cpu_mem_usage: bool = True
    device_map: Any = None  # "auto" / "balanced" / "sequential" / "cpu" / {module: device} (models/dispatch.py)
    max_memory: Optional[dict] = None  # device -> size for the automatic device maps
    offload_folder: Any = None  # where device_map's "disk" part is written


class Family:
    """One published layout (see the module docstring for what a subclass declares)."""

    name: ClassVar[str] = "?"
    label: ClassVar[str] = "?"
    #: the released decoding: sampler spec, ``generate`` defaults, token strings that end an answer
    sampler: ClassVar[dict] = {"name": "ancestral"}
    generation: ClassVar[Optional[dict]] = None
    stop_tokens: ClassVar[tuple] = ()
    protocol: ClassVar[str] = ""  # how the publisher decodes, in words (recorded in the notes)
    tokenizer_default: ClassVar[str] = ""
    #: weights placed with a ``device_map`` (large models); the others refuse one
    supports_device_map: ClassVar[bool] = False
    #: dtype of the weights when the caller names none (None: as stored)
    default_dtype: ClassVar[Optional[torch.dtype]] = None
    #: :meth:`write_back` inverts the rename table: ``textdiff convert --to published`` (families
    #: other engines serve); the converted folder then records config.json (``notes["published"]``)
    writes_back: ClassVar[bool] = False

    @classmethod
    def matches(cls, config: dict) -> bool:
        raise NotImplementedError

    @classmethod
    def tokenizer(cls, folder: Path, config: dict, options: LoadOptions):
        """The tokenizer as read (before the network is known)."""
        raise NotImplementedError

    @classmethod
    def network(cls, config: dict, tokenizer, source: str) -> tuple[type, Any]:
        """(network class, its config) for config.json."""
        raise NotImplementedError

    @classmethod
    def renames(cls, config: dict, network) -> list:
        raise NotImplementedError

    @classmethod
    def process(cls, config: dict, network) -> dict:
        raise NotImplementedError

    @classmethod
    def finish_tokenizer(cls, tokenizer, config: dict, network):
        """The tokenizer with the model's special tokens set (default: as read)."""
        return tokenizer

    @classmethod
    def seq_len(cls, config: dict, network) -> int:
        return int(network.max_position_embeddings)

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        """What to record beside the model: its source, released ``generation`` and stop tokens."""
        notes = {"source": str(folder)}
        if cls.generation is not None:
            notes["generation"] = dict(cls.generation)
        if cls.stop_tokens:
            notes["stop_token_ids"] = token_ids(tokenizer, cls.stop_tokens)
        if cls.protocol:
            notes["protocol"] = cls.protocol
        if cls.writes_back:
            notes["published"] = {"family": cls.name, "config": config}
        return notes

    @classmethod
    def write_back(cls, tensors: dict, config: dict) -> dict:
        """The network's tensors (textdiff's names) -> the publisher's names and shapes: the inverse of
        :meth:`renames` (:mod:`.export`)."""
        raise ConfigError(f"textdiff cannot write {cls.label} checkpoints in the publisher's layout yet")

    @classmethod
    def load(cls, folder: Path, config: dict, options: LoadOptions) -> Published:
        """The converted model, tokenizer, process, sampler and context of ``folder``."""
        source = f"{cls.label} checkpoint {str(folder)!r}"
        tokenizer = cls.tokenizer(folder, config, options)
        network_class, network = cls.network(config, tokenizer, source)
        model, aside = load_weights(
            network_class, network, folder, cls.renames(config, network), source=source,
            dtype=options.dtype or cls.default_dtype, device=options.device, allow_pickle=options.allow_pickle,
            device_map=options.device_map, max_memory=options.max_memory, offload_folder=options.offload_folder)
        tokenizer = cls.finish_tokenizer(tokenizer, config, network)
        return Published(model=model, tokenizer=tokenizer, process=cls.process(config, network), sampler=dict(cls.sampler),
                         seq_len=cls.seq_len(config, network), family=cls.name,
                         notes=cls.notes(folder, config, tokenizer, aside))


def token_ids(tokenizer, tokens) -> list[int]:
    """The ids of ``tokens`` the tokenizer knows (unknown ones left out)."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    return [i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt")


def read_tokenizer(folder: Path, options: LoadOptions, default: str, read=None, files=TOKENIZER_FILES):
    """The caller's tokenizer object as is; else the caller's folder / hub id, the model folder when it
    holds one of ``files``, or ``default`` (a hub id), read with ``read(where)`` (default: textdiff's
    ``load_tokenizer``)."""
    from ...tokenization import load_tokenizer
    from ..loading import resolve_model_path

    source = options.tokenizer
    if source is not None and not isinstance(source, (str, Path)):
        return source
    if source is None:
        own = any((Path(folder) / f).is_file() for f in files)
        source = folder if own else default
    try:
        where = resolve_model_path(source, what="tokenizer folder")
    except ConfigError as e:
        raise ConfigError(f"{e}; this checkpoint ships no tokenizer: pass tokenizer=<folder with the {default} "
                          f"tokenizer files> (CLI: --tokenizer)") from None
    return read(where) if read is not None else load_tokenizer(str(where))
