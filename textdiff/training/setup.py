"""Everything a run needs before its first step: output folder checks, data, tokenizer, process,
model; plus the deterministic row stream and the final save."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from ..config import Recipe, save_recipe, to_dict
from ..errors import ConfigError
from ..models.external import folder_model_type
from ..processes.base import build_process
from .checkpoint import atomic_dir, commit_dir
from .checks import check_continues

PIPELINE_FILE = "textdiff.json"  # process + sampler configs saved beside every model
_MAY_CHANGE_ON_RESUME = {"train.max_steps", "train.max_minutes", "train.eval_every", "train.save_every",
                         "train.log_every", "train.keep_checkpoints", "train.trackers", "train.num_threads",
                         # per-process batch: a run resumed on another number of processes keeps its global batch
                         "train.batch_size", "train.grad_accum",
                         "data.num_workers",  # workers tokenize the same rows in the same order
                         "output_dir"}  # the folder being resumed IS the output_dir: a moved run folder resumes


@dataclass
class Run:
    recipe: Recipe
    tokenizer: Any
    process: Any
    model: torch.nn.Module
    train_rows: Any
    val_rows: Optional[Any]
    val_unigram_ppl: Optional[float]


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        path = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff_keys(va, vb, path + ".")
        elif va != vb:
            keys.append(path)
    return keys


def check_output_dir(recipe: Recipe, resume: bool) -> None:
    """Refuse to mix two runs in one folder; nothing is written or deleted here."""
    out = Path(recipe.output_dir)
    saved = out / "config.yaml"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {str(out)!r} is a file; choose a folder")
    if not saved.is_file():
        return
    if not resume:
        raise ConfigError(
            f"output folder {str(out)!r} already holds a run; pass --resume to continue it, or set output_dir=<new folder>"
        )
    differs = [k for k in _diff_keys(yaml.safe_load(saved.read_text()) or {}, to_dict(recipe)) if k not in _MAY_CHANGE_ON_RESUME]
    if differs:
        raise ConfigError(
            f"output folder {str(out)!r} holds a different run (differs in {', '.join(differs[:5])}); use another output_dir"
        )


def prepare_run(recipe: Recipe, resume: bool = False, is_main: bool = True) -> Run:
    import datasets

    from ..data import split_documents, tokenize_rows, unigram_log_probs, unigram_ppl
    from ..models.build import adapt_attention, check_model_process, denoiser_config, load_denoiser
    from ..models.modeling_textdiff import TextDiffModel
    from ..tokenization import build_tokenizer, ensure_special_tokens, load_tokenizer

    datasets.disable_progress_bars()
    check_output_dir(recipe, resume)
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = recipe.train
    torch.manual_seed(cfg.seed)
    published = None  # a published checkpoint (MDLM, BD3-LM, SEDD, ...) to fine-tune, converted on load
    if cfg.init_from is not None:
        from ..models.loading import resolve_model_path

        if recipe.denoiser is not None:
            raise ConfigError("give either a denoiser section (a Hugging Face network) or train.init_from (a saved run), not both")
        init_path = resolve_model_path(cfg.init_from, what="train.init_from folder")
        if not (init_path / PIPELINE_FILE).is_file() and folder_model_type(init_path) != "textdiff":
            from ..models.published import LoadOptions, load_published

            published = load_published(init_path, LoadOptions(tokenizer=recipe.tokenizer.path))
            check_continues(published.process, recipe)  # e.g. a SEDD checkpoint under a masked recipe
        else:
            from ..models.external import check_textdiff_folder

            check_textdiff_folder(init_path)  # one-line error for a folder of another architecture
    if cfg.cond_dropout > 0 and recipe.sft is None:
        raise ConfigError("train.cond_dropout drops SFT prompts; it needs an sft section (or set train.cond_dropout=0)")
    if not 0.0 <= cfg.cond_dropout < 1.0:
        raise ConfigError(f"train.cond_dropout={cfg.cond_dropout} must be in [0, 1)")

    clock = time.perf_counter()
    if recipe.sft is not None:  # instruction data replaces the corpus (textdiff.sft)
        from ..sft import example_texts, load_examples

        train_docs, val_docs = load_examples(recipe.sft)
        corpus_texts = example_texts(train_docs, recipe.sft)
    elif recipe.data.streaming:  # documents read lazily; the loop packs them (textdiff.streaming)
        from ..streaming import stream_split

        train_docs, val_docs, corpus_texts = stream_split(recipe.data)
    else:
        train_docs, val_docs = split_documents(recipe.data)
        corpus_texts = None
    n_val = len(val_docs) if val_docs is not None else 0
    if recipe.data.streaming and recipe.sft is None:
        clock = _phase(is_main, "data", f"streaming {recipe.data.source!r}: {n_val} validation documents held out, "
                       f"{len(corpus_texts)} training documents read for the tokenizer and unigram counts", clock)
    else:
        clock = _phase(is_main, "data", f"{len(train_docs)} training and {n_val} validation documents from "
                       f"{(recipe.sft.source if recipe.sft else recipe.data.source)!r}", clock)
    tok_dir = out / "tokenizer"
    reloaded = resume and (tok_dir / "tokenizer_config.json").is_file()
    if reloaded:
        tokenizer = load_tokenizer(str(tok_dir))
    elif recipe.denoiser is not None:  # an external network brings its own tokenizer and mask token
        from ..models.external import load_external_tokenizer

        tokenizer = load_external_tokenizer(recipe.denoiser, recipe.tokenizer.path)
    elif published is not None:
        tokenizer = published.tokenizer  # the checkpoint's tokenizer (or recipe.tokenizer.path)
    elif cfg.init_from is not None and recipe.tokenizer.path is None:
        tokenizer = load_tokenizer(str(init_path))  # fine-tuning keeps the model's tokenizer
    else:
        tokenizer = build_tokenizer(recipe.tokenizer, corpus_texts if corpus_texts is not None else train_docs["text"])
    ensure_special_tokens(tokenizer)
    if recipe.denoiser is None:  # a textdiff model reads at most this many positions
        tokenizer.model_max_length = recipe.model.max_seq_len or recipe.data.seq_len
    if is_main and not reloaded:  # rewriting it would race with the other processes reading it
        tokenizer.save_pretrained(tok_dir)
    how = f"trained {recipe.tokenizer.train}" if recipe.tokenizer.train and not reloaded else "loaded"
    clock = _phase(is_main, "tokenizer", f"{how}, {len(tokenizer)} tokens, saved to {tok_dir}", clock)

    if recipe.sft is not None:
        from ..sft import build_rows

        train_rows = build_rows(train_docs, tokenizer, recipe.data.seq_len, recipe.sft)
        val_rows = build_rows(val_docs, tokenizer, recipe.data.seq_len, recipe.sft, "validation") if val_docs else None
    else:
        train_rows = tokenize_rows(train_docs, tokenizer, recipe.data) if not recipe.data.streaming else train_docs
        val_rows = tokenize_rows(val_docs, tokenizer, recipe.data) if val_docs is not None else None
    vocab = len(tokenizer)
    counted = train_rows  # streaming: unigram counts of the sample the tokenizer was trained on
    if recipe.data.streaming and recipe.sft is None:
        counted = tokenize_rows(datasets.Dataset.from_dict({"text": corpus_texts}), tokenizer, recipe.data)
    val_ppl = unigram_ppl(val_rows, unigram_log_probs(counted, vocab)) if val_rows is not None else None
    n_train = "streamed" if recipe.data.streaming and recipe.sft is None else f"{len(train_rows):,}"
    clock = _phase(is_main, "data", f"{n_train} training rows and {len(val_rows) if val_rows is not None else 0:,} validation "
                   f"rows of {recipe.data.seq_len} tokens" + (f"; validation unigram PPL {val_ppl:.1f}" if val_ppl else ""), clock)

    process = build_process(recipe.process, vocab_size=vocab, mask_id=tokenizer.mask_token_id)
    if recipe.denoiser:
        from ..models.external import build_external_denoiser  # external HF denoisers (issue 7)

        model = build_external_denoiser(recipe.denoiser, tokenizer, process)
    elif published is not None:
        model = published.model
        if vocab > model.config.vocab_size:
            model.resize_token_embeddings(vocab)
        adapt_attention(model, process)  # e.g. BD3-LM fine-tuned from the published MDLM
    elif cfg.init_from is not None:
        from ..models.external import is_external_folder, load_external_denoiser

        if is_external_folder(init_path):
            model = load_external_denoiser(init_path, vocab, trust_remote_code=cfg.trust_remote_code)
        else:
            model = load_denoiser(str(init_path), vocab)
            adapt_attention(model, process)  # e.g. block diffusion fine-tuned from a masked checkpoint
    else:
        model = TextDiffModel(denoiser_config(recipe.model, vocab, process, recipe.data.seq_len, tokenizer.mask_token_id))
    check_model_process(model, process, recipe.data.seq_len)
    if cfg.gradient_checkpointing:
        from ..models.checkpointing import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    if recipe.lora is not None:  # train low-rank adapters only (textdiff.lora)
        from ..lora import apply_lora

        model = apply_lora(model, recipe.lora)
    n_params = sum(p.numel() for p in model.parameters())
    _phase(is_main, "model", f"{type(model).__name__}, {n_params / 1e6:.2f} M parameters, process {type(process).__name__}", clock)
    return Run(recipe, tokenizer, process, model, train_rows, val_rows, val_ppl)


def _phase(is_main: bool, name: str, message: str, since: float) -> float:
    """Print ``name: message (seconds since `since`)`` on the main process; returns the time now."""
    now = time.perf_counter()
    if is_main:
        print(f"{name}: {message} ({now - since:.1f} s)", flush=True)
    return now


def row_stream(run: Run, rank: int = 0, world: int = 1, resumed: Optional[dict] = None):
    """The training rows by global index: :class:`RowStream` in memory, or a
    :class:`textdiff.streaming.StreamRows` for this process (``resumed``: the positions a checkpoint kept)."""
    cfg = run.recipe.train
    if not (run.recipe.data.streaming and run.recipe.sft is None):
        return RowStream(run.train_rows, seed=cfg.seed)
    from ..streaming import StreamRows

    position = None
    if resumed and resumed.get("world") == world and resumed.get("batch_size") == cfg.batch_size:
        position = resumed["positions"][rank]
    elif resumed:
        print(f"note: the streamed run was saved on {resumed.get('world')} process(es) with batch {resumed.get('batch_size')}; "
              "replaying the stream from its start")
    return StreamRows(run.train_rows, run.tokenizer, run.recipe.data, cfg.seed, cfg.batch_size, rank, world, position)


class RowStream:
    """Rows by global index: row i of the stream is row perm_e[i mod N] of the dataset, where
    perm_e is a seeded permutation for epoch e = i // N. Resuming at any row is exact."""

    def __init__(self, rows, seed: int):
        self.data = rows
        self.n = len(rows)
        self.seed = seed
        self._perm: dict[int, torch.Tensor] = {}

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm:
            self._perm = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))}
        return self._perm[epoch]

    def rows(self, start: int, count: int) -> dict:
        index = [int(self.perm(i // self.n)[i % self.n]) for i in range(start, start + count)]
        return self.data[index]


def row_generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    """One generator per global row index: the noise of a row depends on nothing else."""
    return [torch.Generator().manual_seed(hash((seed, start + i)) & 0x7FFF_FFFF_FFFF_FFFF) for i in range(count)]


def _add_hub_files(run: Run, model, tmp: Path, path: Path) -> None:
    """The network's own modeling code + ``auto_map`` (for trust_remote_code users without
    textdiff; textdiff never runs it) and a model card with the recipe and metrics, as
    ``DiffusionLM.save_pretrained`` writes them."""
    from ..hub import add_remote_code, model_card
    from ..lm import DiffusionLM

    add_remote_code(tmp)
    lm = DiffusionLM(model, run.tokenizer, run.process, run.recipe.sampler, seq_len=run.recipe.data.seq_len)
    (tmp / "README.md").write_text(model_card(lm, tmp, source=path), encoding="utf-8")


def save_final(run: Run, model, path: Path, state_dict: dict | None = None) -> None:
    """Write the model (``state_dict``: its gathered weights when sharded), its tokenizer, its
    process/sampler configs and the recipe, atomically."""
    tmp = atomic_dir(path)
    model.save_pretrained(tmp, safe_serialization=True, **({} if state_dict is None else {"state_dict": state_dict}))
    run.tokenizer.save_pretrained(tmp)
    pipeline = {"process": to_dict(run.process.config), "sampler": to_dict(run.recipe.sampler),
                "mask_token_id": run.tokenizer.mask_token_id, "eos_token_id": run.tokenizer.eos_token_id,
                "pad_token_id": run.tokenizer.pad_token_id, "seq_len": run.recipe.data.seq_len}
    (tmp / PIPELINE_FILE).write_text(json.dumps(pipeline, indent=2))
    save_recipe(run.recipe, tmp / "config.yaml")
    _add_hub_files(run, model, tmp, path)
    commit_dir(tmp, path)
    shutil.rmtree(tmp, ignore_errors=True)
