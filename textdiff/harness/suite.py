"""Suite files: YAML (``yaml.safe_load``) checked strictly against the dataclasses below.

A suite names the models, the tasks and where the report goes::

    name: quickstart
    output_dir: runs/eval/quickstart      # optional: runs/eval/<name> by default
    seed: 0
    models:
      - {path: /tmp/qsA/final, label: quickstart}
    tasks:
      - metric: likelihood
        name: embedded-val
        dataset: {path: embedded, format: embedded, part: validation}
        layout: wrap
        t_samples: 8
      - metric: generation
        name: unconditional
        steps: [16, 32, 64, 128]
        num_samples: 32
        reference: {path: /tmp/ref-ar/final}
        metrics: [gen_ppl, diversity, speed]

Unknown keys, unknown metrics and wrong types raise one-line :class:`ConfigError`s. Relative paths
(datasets, models, output_dir) are resolved from the current working directory, so a suite runs from
any folder of an installed package; ``../shared/data/ptb/ptb.test.txt`` run from a checkout's root
means the shared data beside it. A suite is a YAML path or the name of a suite shipped with the
package (:data:`SUITES_DIR`: ``quickstart``, ``zero_shot``, ``process_comparison``).
``key=value`` overrides use dotted paths; list items by index (``tasks.0.t_samples=4``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional


from textdiff.config import from_dict, parse_overrides
from textdiff.errors import ConfigError

SUITES_DIR = Path(__file__).resolve().parent / "suites"  # package data: the shipped suites


@dataclass
class ModelSpec:
    path: str  # a saved textdiff model folder (a run's final/)
    label: Optional[str] = None  # name in tables and plots (default: the folder's parent name)
    sampler: Optional[dict] = None  # sampler config for generation (default: the model's saved sampler)
    tokenizer: Optional[str] = None  # published checkpoints that ship none: a tokenizer folder (default: the family's hub id)


@dataclass
class DatasetSpec:
    path: str  # a file (relative to the repository root) or "embedded"
    format: Literal["lines", "paragraphs", "wikitext", "jsonl", "embedded"] = "lines"
    text_field: str = "text"  # jsonl
    detokenizer: Literal["none", "ptb", "wikitext", "lm1b"] = "none"
    part: Literal["all", "train", "validation"] = "all"  # embedded: the training run's split
    val_fraction: float = 0.05  # embedded: as in the training recipe
    shuffle_seed: int = 0  # embedded: as in the training recipe
    max_documents: Optional[int] = None
    protocol: str = ""  # free text copied into the report (why this layout / context / detokenizer)


@dataclass
class LikelihoodTask:
    metric: str
    name: str
    dataset: DatasetSpec
    layout: Literal["wrap", "pad"] = "wrap"
    seq_len: Optional[int] = None  # default: the model's context
    t_samples: int = 8
    t_sampling: Literal["stratified", "antithetic", "iid"] = "stratified"
    batch_size: int = 16
    max_rows: Optional[int] = None
    ci_level: float = 0.95
    bootstrap: int = 1000


@dataclass
class ConditionalTask:
    metric: str
    name: str
    dataset: DatasetSpec
    style: Literal["last_word"] = "last_word"  # LAMBADA: context -> " " + last word
    mc_samples: int = 32
    max_examples: Optional[int] = None
    greedy: bool = True  # also report greedy-decoding accuracy of the answer
    ci_level: float = 0.95


@dataclass
class ReferenceSpec:
    path: str  # a local HF causal-LM folder, a hub name (online) or a textdiff 'ar' model folder
    optional: bool = False  # a missing local folder skips gen_ppl with a printed note instead of failing
    note: str = ""  # e.g. "small textdiff AR trained on the same corpus; NOT GPT-2 Large"


@dataclass
class MauveSpec:
    dataset: DatasetSpec  # human text to compare with
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    num_buckets: Optional[int] = None


GENERATION_METRICS = ("gen_ppl", "diversity", "speed", "mauve")


@dataclass
class GenerationTask:
    metric: str
    name: str
    steps: list[int] = field(default_factory=lambda: [64])
    num_samples: int = 16
    max_new_tokens: Optional[int] = None  # default: the model's context
    batch_size: int = 8
    block_size: Optional[int] = None
    sampler: Optional[dict] = None  # overrides the model's sampler for this task
    reference: Optional[ReferenceSpec] = None
    eos: Literal["drop", "append"] = "drop"
    retokenize: Literal["auto", "always", "never"] = "auto"
    metrics: list[str] = field(default_factory=lambda: ["gen_ppl", "diversity", "speed"])
    mauve: Optional[MauveSpec] = None
    keep_samples: int = 3  # samples quoted in the report per (model, steps)
    ci_level: float = 0.95

    def validate(self) -> None:
        unknown = [m for m in self.metrics if m not in GENERATION_METRICS]
        if unknown:
            raise ConfigError(f"task {self.name!r}: unknown generation metric(s) {unknown}; available: {', '.join(GENERATION_METRICS)}")
        if "gen_ppl" in self.metrics and self.reference is None:
            raise ConfigError(f"task {self.name!r}: gen_ppl needs reference: {{path: <causal LM folder>}}")
        if "mauve" in self.metrics and self.mauve is None:
            raise ConfigError(f"task {self.name!r}: mauve needs a mauve: {{dataset: ...}} section")
        if not self.steps or min(self.steps) < 1:
            raise ConfigError(f"task {self.name!r}: steps must be a non-empty list of positive integers")


TASKS = {"likelihood": LikelihoodTask, "conditional": ConditionalTask, "generation": GenerationTask}


@dataclass
class Suite:
    name: str
    models: list[ModelSpec]
    tasks: list[Any]
    seed: int = 0
    device: Optional[str] = None  # default: cuda when available, else cpu
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    threads: Optional[int] = None  # torch CPU threads
    max_rows: Optional[int] = None  # caps every likelihood task (quick runs; recorded in the report)
    max_examples: Optional[int] = None  # caps every conditional task
    max_samples: Optional[int] = None  # caps every generation task's num_samples
    notes: str = ""
    output_dir: Optional[str] = None  # default runs/eval/<name>, relative to the working directory


def _set(node, path: list[str], value, full: str) -> None:
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {full}: {part!r} is not an index of a list of {len(node)}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"override {full}: {part!r} is not inside a section")


def load_suite(path, overrides: list[str] = ()) -> tuple[Suite, dict]:
    """(Suite, the raw resolved mapping) from a YAML file and ``key=value`` overrides."""
    from textdiff.config import load_yaml

    path = suite_path(path)
    raw = load_yaml(path, what="suite", example="textdiff eval quickstart")
    if not isinstance(raw, dict):
        raise ConfigError(f"suite {str(path)!r} must be a mapping with name, output_dir, models and tasks")
    for keys, value in parse_overrides(list(overrides)):
        _set(raw, keys, value, ".".join(keys))
    models = raw.get("models")
    if isinstance(models, (str, dict)):
        raw["models"] = [models]
    raw["models"] = [{"path": m} if isinstance(m, str) else m for m in raw.get("models") or []]
    if not raw["models"]:
        raise ConfigError("suite: models is empty; give at least one model folder")
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError("suite: tasks must be a non-empty list")
    built = []
    for i, t in enumerate(tasks):
        if not isinstance(t, dict) or "metric" not in t:
            raise ConfigError(f"suite: tasks[{i}] must be a mapping with a 'metric' key ({', '.join(TASKS)})")
        if t["metric"] not in TASKS:
            raise ConfigError(f"suite: tasks[{i}] names unknown metric {t['metric']!r}; available: {', '.join(TASKS)}")
        built.append(from_dict(TASKS[t["metric"]], t, f"tasks[{i}]"))
    names = [t.name for t in built]
    if len(set(names)) != len(names):
        raise ConfigError(f"suite: task names must be unique, got {names}")
    suite = from_dict(Suite, {**raw, "tasks": []}, "suite")
    suite.tasks = built
    return suite, raw


def packaged_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_path(name) -> Path:
    """A YAML file, or the shipped suite of that name (``quickstart`` -> suites/quickstart.yaml)."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    if p.suffix == "" and (SUITES_DIR / f"{p.name}.yaml").is_file() and len(p.parts) == 1:
        return SUITES_DIR / f"{p.name}.yaml"
    raise ConfigError(f"suite {str(name)!r} is neither a YAML file nor a shipped suite ({', '.join(packaged_suites())})")


def resolve(path: str) -> Path:
    """A suite path relative to the current working directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path.cwd() / p


def output_dir(suite) -> Path:
    return resolve(suite.output_dir or f"runs/eval/{suite.name}")
