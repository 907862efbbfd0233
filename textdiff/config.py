"""Typed configuration: dataclasses loaded from YAML, strict on unknown keys and wrong types.

A recipe is a YAML file with one section per part::

    name: quickstart
    tokenizer: {train: bpe, vocab_size: 4096}
    data: {source: embedded, seq_len: 128}
    model: {hidden_size: 256, num_layers: 4, num_heads: 4}
    process: {name: masked, schedule: {name: loglinear}}
    sampler: {name: ancestral}
    train: {max_steps: 2000, lr: 1e-3}

``process``, ``schedule`` and ``sampler`` sections are polymorphic: their ``name`` picks a class in
:mod:`textdiff.registry`, whose own config dataclass validates the remaining keys. Sections live
beside their code where the import graph allows it (``TokenizerConfig`` in :mod:`textdiff.tokenization`,
``SFTConfig`` in :mod:`textdiff.sft`, each process / sampler / schedule config beside its class); this
module sits above them and holds the recipe's cross-section rules, all in :meth:`Recipe.validate`.

Overrides use dotted paths, ``train.lr=1e-4``; values are parsed with ``yaml.safe_load`` so
``true``, ``3``, ``1e-4`` and ``[0.9, 0.95]`` get their natural types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .adapt.config import AdaptConfig
from .dataclass_io import DEFAULT_NAMES, from_dict, resolve_section, to_dict  # noqa: F401  (re-exported)
from .dataclass_io import at_least, finite, in_range, not_blank
from .errors import ConfigError, IncompatibleError, warn
from .processes.base import causal_diffusion_note, process_class
from .registry import lookup
from .samplers.base import default_sampler
from .rl.config import RLConfig
from .signatures import checked
from .sft import SFTConfig
from .tokenization import TokenizerConfig

LR_WARNING = 0.1  # AdamW learning rates above this diverge for transformers (a typo like 1e6?)
TRACKERS = ("aim", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "swanlab")


# --------------------------------------------------------------------------------------------
# The recipe sections
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """The text corpus and how it becomes fixed-length token rows."""

    source: str = "embedded"  # 'embedded', a local .txt/.jsonl/.json/.parquet file or folder, or a hub name
    hub_config: Optional[str] = None  # the dataset config name for hub datasets
    split: str = "train"  # split read from the source
    text_field: str = "text"  # column holding the text (jsonl / parquet / hub)
    val_source: Optional[str] = None  # separate validation file; else a held-out fraction of source
    val_fraction: float = 0.05  # held-out fraction of documents when val_source is not given
    layout: Literal["wrap", "pad"] = "wrap"  # wrap: concatenate + cut; pad: one document per row
    seq_len: int = 128  # tokens per row (L)
    max_documents: Optional[int] = None  # cap on documents read (for quick runs)
    lines_are_documents: bool = False  # .txt files: one document per line instead of per blank-line paragraph
    num_proc: Optional[int] = None  # processes for datasets.map
    shuffle_seed: int = 0  # seed of the document / row shuffle
    streaming: bool = False  # read the source lazily (hub-scale corpora); see textdiff.streaming
    num_workers: int = 0  # streaming: DataLoader worker processes that tokenize on the fly
    shuffle_buffer: int = 1000  # streaming: rows shuffled together (a seeded permutation per window)
    val_documents: int = 500  # streaming without val_source: the first N documents are held out

    def validate(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction} must be in [0, 1)")
        if self.seq_len < 2:
            raise ConfigError(f"data.seq_len={self.seq_len} must be at least 2")
        for name in ("source", "split", "text_field", "val_source", "hub_config"):
            not_blank(f"data.{name}", getattr(self, name))
        at_least("data", self, 1, "max_documents", "num_proc", optional=True)
        at_least("data", self, 0, "shuffle_seed", "num_workers", "val_documents")
        at_least("data", self, 1, "shuffle_buffer")


@dataclass
class ModelConfig:
    """Architecture of the textdiff denoiser (turned into a ``TextDiffConfig``)."""

    hidden_size: int = 256  # width d
    num_layers: int = 4  # transformer blocks
    num_heads: int = 4  # attention heads (d must be divisible)
    mlp_ratio: float = 4.0  # MLP width / d
    dropout: float = 0.0  # dropout inside blocks
    max_seq_len: Optional[int] = None  # maximum positions; default data.seq_len
    cond_dim: int = 128  # width of the time embedding (used only with time conditioning)
    rope_theta: float = 10000.0  # rotary base
    attention: Literal["bidirectional", "causal", "block_causal"] = "bidirectional"
    block_size: Optional[int] = None  # block length L' for block_causal attention
    tie_word_embeddings: bool = False  # share input embedding and output projection
    time_scale: float = 1000.0  # the time embedding sees time_scale * (what the process feeds); 1 for the publishers' DiTs
    lm_head_bias: bool = False  # output projection with a bias (the publishers' DiTs)
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm

    def validate(self) -> None:
        at_least("model", self, 1, "hidden_size", "num_layers", "num_heads", "cond_dim")
        at_least("model", self, 1, "max_seq_len", "block_size", optional=True)
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}; "
                "pick a head count that divides it"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ConfigError(f"the head size model.hidden_size / model.num_heads = {self.hidden_size // self.num_heads} "
                              "must be even (rotary positions rotate pairs of channels)")
        if not self.mlp_ratio > 0 or int(self.hidden_size * self.mlp_ratio) < 1:
            raise ConfigError(f"model.mlp_ratio={self.mlp_ratio} must be positive (the MLP width is hidden_size * mlp_ratio)")
        finite("model.mlp_ratio", self.mlp_ratio)
        in_range("model.dropout", self.dropout, 0.0, 1.0, hi_open=True)
        if not self.rope_theta > 0:
            raise ConfigError(f"model.rope_theta={self.rope_theta} must be positive")
        finite("model.rope_theta", self.rope_theta)
        if self.block_size is not None and self.attention != "block_causal":
            raise ConfigError(f"model.block_size={self.block_size} is used only with model.attention=block_causal; "
                              "set the attention or drop the block size")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of a training run."""

    max_steps: int = 1000  # optimizer steps
    max_minutes: Optional[float] = None  # stop (and save) after this wall-clock budget
    batch_size: int = 32  # rows per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100  # linear warmup
    lr_schedule: Literal["cosine", "constant", "wsd"] = "cosine"  # after warmup; wsd = warmup-stable-decay
    decay_fraction: float = 0.2  # wsd: the lr decays linearly to min_lr_ratio over this last fraction
    weight_decay: float = 0.0  # AdamW decay on matrices
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # AdamW betas
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    ema: float = 0.0  # EMA decay of weights (0 = off); the EMA is used for eval and saving
    eval_every: int = 200  # steps between validations
    eval_batches: int = 16  # validation batches per evaluation (0 = whole split)
    eval_t_samples: int = 1  # t draws per validation row
    save_every: int = 500  # steps between resumable checkpoints
    keep_checkpoints: int = 2  # newest checkpoints kept
    log_every: int = 10  # steps between metrics lines
    seed: int = 0  # everything random derives from this
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    init_from: Optional[str] = None  # fine-tune: start from this model folder (a textdiff run or a published checkpoint) or hub id
    trust_remote_code: bool = False  # init_from is an external network whose modeling code transformers lacks (your choice, never the folder's)
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # accelerate trackers, when installed
    compile: bool = False  # torch.compile the denoiser
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward (less memory, ~1.3x time)
    num_threads: Optional[int] = None  # torch CPU threads (default: torch's choice)
    cond_dropout: float = 0.0  # probability of dropping the prompt during SFT (for guidance)

    def validate(self) -> None:
        for k in ("max_steps", "batch_size", "grad_accum", "eval_every", "save_every", "log_every", "eval_t_samples"):
            if getattr(self, k) < 1:
                raise ConfigError(f"train.{k}={getattr(self, k)} must be at least 1")
        at_least("train", self, 0, "warmup_steps", "eval_batches", "keep_checkpoints", "seed")
        at_least("train", self, 1, "num_threads", optional=True)
        if not self.lr > 0:
            raise ConfigError(f"train.lr={self.lr} must be positive")
        finite("train.lr", self.lr)
        if self.lr > LR_WARNING:
            warn(f"train.lr={self.lr:g} is far above the usual 1e-4..3e-3 for AdamW; training will likely diverge")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"train.max_minutes={self.max_minutes} must be positive (or leave it out)")
        in_range("train.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        in_range("train.decay_fraction", self.decay_fraction, 0.0, 1.0)
        if not self.weight_decay >= 0:
            raise ConfigError(f"train.weight_decay={self.weight_decay} must be >= 0")
        finite("train.weight_decay", self.weight_decay)
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas={self.betas} must be two numbers [beta1, beta2], e.g. [0.9, 0.98]")
        for i, b in enumerate(self.betas):
            in_range(f"train.betas[{i}]", b, 0.0, 1.0, hi_open=True)
        if not self.grad_clip >= 0:
            raise ConfigError(f"train.grad_clip={self.grad_clip} must be >= 0 (0 = no clipping)")
        finite("train.grad_clip", self.grad_clip)
        in_range("train.ema", self.ema, 0.0, 1.0, hi_open=True)
        in_range("train.cond_dropout", self.cond_dropout, 0.0, 1.0, hi_open=True)
        not_blank("train.init_from", self.init_from)
        unknown = [t for t in self.trackers if t not in TRACKERS]
        if unknown:
            raise ConfigError(f"train.trackers: unknown tracker(s) {unknown}; choose from {list(TRACKERS)} (or [] for none)")


@dataclass
class DenoiserConfig:
    """An external Hugging Face network used as the denoiser of the masked process
    (:mod:`textdiff.models.external`). Its tokenizer (``path`` unless ``tokenizer.path`` is given)
    and its own mask token are used; the recipe's ``model`` section is ignored."""

    path: str = ""  # local folder (or hub name when online) of the Hugging Face model
    kind: Literal["masked_lm", "bidirectional", "causal"] = "masked_lm"  # BERT-style / LLaDA-style / AR -> diffusion (Dream)
    init: Literal["pretrained", "random"] = "pretrained"  # random: the folder's config with fresh weights
    trust_remote_code: bool = False  # LLaDA / Dream checkpoints on the hub ship their own modeling code
    mask_token: Optional[str] = None  # the model's mask token when its tokenizer does not name one (LLaDA: <|mdm_mask|>)
    full_attention: bool = True  # kind=causal: attend both ways (Dream); false keeps the causal mask
    dtype: Optional[Literal["float32", "bfloat16", "float16"]] = None  # weights dtype (default: float32)

    def validate(self) -> None:
        if not self.path.strip():
            raise ConfigError("denoiser.path is required: a Hugging Face model folder (or hub name)")
        not_blank("denoiser.mask_token", self.mask_token)


@dataclass
class LoraConfig:
    """Low-rank adapters through peft (:mod:`textdiff.lora`) on the textdiff or an external denoiser."""

    r: int = 8  # rank
    alpha: float = 16.0  # scaling alpha / r
    dropout: float = 0.0  # dropout on the adapter input
    target_modules: list[str] = field(default_factory=lambda: ["qkv", "proj"])  # module name suffixes (BERT: query, value)
    modules_to_save: list[str] = field(default_factory=list)  # modules trained in full (e.g. lm_head)

    def validate(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r={self.r} must be at least 1")
        if not self.alpha > 0:
            raise ConfigError(f"lora.alpha={self.alpha} must be positive")
        in_range("lora.dropout", self.dropout, 0.0, 1.0, hi_open=True)
        if not self.target_modules:
            raise ConfigError("lora.target_modules is empty; name the linear layers to adapt, e.g. [qkv, proj]")


@dataclass
class Recipe:
    """A whole training recipe; ``textdiff train`` takes one."""

    name: str = "run"  # the run's name; default output_dir is runs/<name>
    output_dir: Optional[str] = None  # where config, metrics and checkpoints go
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(train="bpe"))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    process: Any = field(default=None, metadata={"registry": "process"})
    sampler: Any = field(default=None, metadata={"registry": "sampler"})
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: Optional[SFTConfig] = None  # supervised fine-tuning options (see textdiff.sft)
    denoiser: Optional[DenoiserConfig] = None  # external denoiser (see textdiff.models.external)
    lora: Optional[LoraConfig] = None  # train low-rank adapters only (see textdiff.lora)
    rl: Optional[RLConfig] = None  # reinforcement learning from rewards on the sft section's prompts (see textdiff.rl)
    adapt: Optional[AdaptConfig] = None  # train.init_from is a causal LM to turn into a diffusion LM (textdiff.adapt)

    def __post_init__(self) -> None:
        if self.process is None:
            self.process = resolve_section("process", {"name": "masked"}, "process")
        if self.sampler is None:  # the default sampler is one that serves the process
            self.sampler = resolve_section("sampler", {"name": default_sampler(self.process)}, "sampler")
        if self.output_dir is None:
            self.output_dir = str(Path("runs") / self.name)

    def validate(self) -> None:
        """The cross-section rules of a recipe, all here, before any work starts (each section has
        validated itself). Process and sampler are read through what they declare
        (:class:`~textdiff.processes.base.ForwardProcess`, :meth:`Sampler.serves`), from their configs."""
        if not self.name.strip():
            raise ConfigError("name is an empty string; give the run a name (the default output_dir is runs/<name>)")
        not_blank("output_dir", self.output_dir)
        lookup("sampler", self.sampler.name).check_serves(self.process, self.sampler.name)  # the sampler serves the process
        process = process_class(self.process)
        need = process.required_attention
        if need is not None and self.model.attention not in ("bidirectional", need):
            raise IncompatibleError(f"process {self.process.name!r} needs model.attention={need}, "
                                    f"not {self.model.attention}; set model.attention={need} (or leave it out)")
        attention = need or self.model.attention
        note = causal_diffusion_note(self.process.name, attention, process.is_diffusion, need)
        if note is not None:
            warn(f"{note} (model.attention=causal)")
        declared = process.config_block_size(self.process)  # block diffusion: L' of the process
        block = declared or self.model.block_size
        if attention == "block_causal":
            if block is None:
                raise ConfigError("model.attention=block_causal needs a block size; set model.block_size (or use process block)")
            if self.model.block_size is not None and declared not in (None, self.model.block_size):
                raise IncompatibleError(f"model.block_size={self.model.block_size} differs from process.block_size="
                                        f"{declared}; they must be equal")
            if self.data.seq_len % block:
                raise ConfigError(f"data.seq_len={self.data.seq_len} is not a multiple of the block size {block}; "
                                  "pick a seq_len divisible by it")
        max_len = self.model.max_seq_len
        if max_len is not None and self.data.seq_len > max_len and self.denoiser is None and self.train.init_from is None:
            raise ConfigError(f"data.seq_len={self.data.seq_len} exceeds model.max_seq_len={max_len}; "
                              "raise model.max_seq_len or lower data.seq_len")
        if self.train.cond_dropout > 0 and self.sft is None:
            raise ConfigError("train.cond_dropout drops SFT prompts; it needs an sft section (or set train.cond_dropout=0)")
        if self.train.init_from is not None and self.denoiser is not None:
            raise ConfigError("give either a denoiser section (a Hugging Face network) or train.init_from (a saved run), not both")
        if self.rl is not None:
            self._validate_rl(process)
        if self.adapt is not None:
            self._check_adapt()

    def _validate_rl(self, process) -> None:
        """RL's cross-section rules: prompts from the sft section, groups whole on each process, an
        absorbing (masked) process whose log-probabilities the estimators can read."""
        rl, tc = self.rl, self.train
        if self.sft is None:
            raise ConfigError("the rl section trains on the prompts of an sft section; add one (sft.source: a .jsonl "
                              "of prompts and answers, or synthetic with sft.tasks)")
        if tc.batch_size % rl.num_generations:
            raise ConfigError(f"train.batch_size={tc.batch_size} counts completions per process and must be a multiple of "
                              f"rl.num_generations={rl.num_generations} (whole groups); e.g. train.batch_size={rl.num_generations * max(1, tc.batch_size // rl.num_generations)}")
        if not getattr(process, "needs_mask_token", False) or process.required_attention == "block_causal":
            raise IncompatibleError(f"rl needs a masked-diffusion process (bidirectional, with [MASK]); process "
                                    f"{self.process.name!r} is not served by the RL log-probability estimators")
        if tc.cond_dropout > 0:
            raise ConfigError("train.cond_dropout drops SFT prompts and does not apply to rl; set train.cond_dropout=0")
        if rl.eval_every and self.sft.val_fraction == 0 and self.sft.val_source is None:
            raise ConfigError("rl.eval_every needs held-out prompts: set sft.val_fraction > 0 or sft.val_source (or rl.eval_every=0)")

    def _check_adapt(self) -> None:
        """``adapt:`` turns ``train.init_from`` (a causal LM) into the denoiser of the recipe's process."""
        adapt = self.adapt
        if self.train.init_from is None:
            raise ConfigError("the adapt section adapts train.init_from; set train.init_from=<causal LM folder or hub id>")
        if self.denoiser is not None:
            raise ConfigError("the adapt section builds its own denoiser from train.init_from; remove the denoiser section")
        want = "block" if adapt.target == "block" else "masked"
        if self.process.name != want:
            raise IncompatibleError(f"adapt.target={adapt.target} trains process {want!r}, not {self.process.name!r}; "
                                    f"set process.name={want}")
        if getattr(self.process, "time_conditioning", False):
            raise IncompatibleError("an adapted causal LM takes no time input; set process.time_conditioning=false")
        if want == "block" and self.process.block_size != adapt.block_size:
            raise IncompatibleError(f"process.block_size={self.process.block_size} differs from adapt.block_size="
                                    f"{adapt.block_size}; they must be equal (the target block size)")
        if want == "block":
            from .adapt.block_schedule import BlockSchedule

            BlockSchedule(adapt.block_schedule, adapt.block_size).check_divides(self.data.seq_len)


# --------------------------------------------------------------------------------------------
# Loading, overrides, saving
# --------------------------------------------------------------------------------------------


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """``["train.lr=1e-4", ...]`` -> ``[(["train", "lr"], 1e-4), ...]``."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.lr=1e-4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for path, value in parse_overrides(overrides):
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if isinstance(child, str) and part in DEFAULT_NAMES:  # "process: masked" shorthand
                child = node[part] = {"name": child}
            if not isinstance(child, dict):
                raise ConfigError(f"override {'.'.join(path)}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def load_yaml(path: str | Path, what: str = "recipe", example: str = "recipes/quickstart.yaml") -> dict:
    """A YAML file read with ``yaml.safe_load``; a missing file or bad YAML is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)!r} does not exist; pass a path like {example}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


@checked
def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None, raw: dict | None = None) -> Recipe:
    """Read a recipe YAML (or a dict), apply ``key=value`` overrides, validate strictly."""
    if path is not None and not isinstance(path, (str, Path)):
        raise ConfigError(f"load_recipe: path must be a recipe file path, got {type(path).__name__} {path!r:.60}")
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"load_recipe: raw must be a mapping of recipe sections, got {type(raw).__name__}")
    if overrides is not None and (isinstance(overrides, str) or not isinstance(overrides, (list, tuple))):
        raise ConfigError(f"load_recipe: overrides must be a list of 'key=value' strings, got {overrides!r:.60}")
    if raw is None:
        if path is not None:
            from .shipped import recipe_file

            path = recipe_file(path)  # a file, or a shipped recipe by name (textdiff train quickstart)
        raw = load_yaml(path) if path is not None else {}
        if path is not None:
            raw.setdefault("name", Path(path).stem)
    raw = apply_overrides(raw, overrides or [])
    recipe = from_dict(Recipe, raw, "recipe")
    given = raw.get("sampler")  # what the recipe set itself: a run from a model keeps the rest (training/decoding.py)
    recipe.sampler_given = sorted({"name"} if isinstance(given, str) else set(given) if isinstance(given, dict) else set())
    return recipe


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False))


for _section in (DataConfig, ModelConfig, TrainConfig, DenoiserConfig, LoraConfig, Recipe):  # Python-built configs:
    _section.__init__ = checked(_section.__init__)  # an unknown keyword is a one-line ConfigError listing the fields
