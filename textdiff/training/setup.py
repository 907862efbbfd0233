"""Everything a run needs before its first step: output folder checks, data, tokenizer, process,
model; plus the deterministic row stream and the final save."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from ..config import Recipe, to_dict
from ..errors import ConfigError
from ..processes.base import build_process
from .checks import check_continues
from .checkpoint import writer_tag
from .hooks import TrainHooks
from .runfolder import check_run_folder, run_id

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
    decoding: Any = None  # the sampler, generate defaults and stop tokens final/ is saved with (.decoding)
    objective: Any = None  # None: the process's NELBO; else the object owning each step (RL: textdiff.rl.trainer)
    hooks: TrainHooks = field(default_factory=TrainHooks)  # what a recipe section changes in the loop (adapt: textdiff.adapt.training)


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


def check_output_dir(recipe: Recipe, resume: bool, overwrite: bool = False) -> None:
    """Refuse to mix two runs in one folder, or to write into a folder textdiff did not make;
    nothing is written or deleted here (:mod:`.runfolder`)."""
    out = Path(recipe.output_dir)
    check_run_folder(out, resume, overwrite, sources=(recipe.train.init_from,))
    saved = out / "config.yaml"
    if not saved.is_file() or overwrite:
        return
    if not resume:
        raise ConfigError(
            f"output folder {str(out)!r} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or set output_dir=<new folder>"
        )
    differs = [k for k in _diff_keys(yaml.safe_load(saved.read_text()) or {}, to_dict(recipe)) if k not in _MAY_CHANGE_ON_RESUME]
    if differs:
        raise ConfigError(
            f"output folder {str(out)!r} holds a different run (differs in {', '.join(differs[:5])}); use another output_dir"
        )


def prepare_run(recipe: Recipe, resume: bool = False, is_main: bool = True) -> Run:
    """Data, tokenizer, rows, process and model of a run, in named steps (each prints one phase line)."""
    import datasets

    datasets.disable_progress_bars()
    cfg = recipe.train  # the output folder is checked, locked and marked by the caller (training/loop.py)
    torch.manual_seed(cfg.seed)
    hooks = _hooks(recipe)
    init = _init_source(recipe)
    from .decoding import base_decoding, run_decoding

    decoding = run_decoding(recipe, base_decoding(init.published, init.base_meta))  # before any work: a bad sampler fails now
    if is_main and decoding.note:
        print(decoding.note, flush=True)
    if cfg.cond_dropout > 0 and recipe.sft is None:
        raise ConfigError("train.cond_dropout drops SFT prompts; it needs an sft section (or set train.cond_dropout=0)")
    if not 0.0 <= cfg.cond_dropout < 1.0:
        raise ConfigError(f"train.cond_dropout={cfg.cond_dropout} must be in [0, 1)")
    clock = time.perf_counter()
    train_docs, val_docs, corpus_texts, clock = _documents(recipe, is_main, clock)
    tokenizer, clock = _tokenizer(recipe, resume, is_main, init, train_docs, corpus_texts, clock)
    train_rows, val_rows, val_ppl, clock = _rows(recipe, tokenizer, train_docs, val_docs, corpus_texts, is_main, clock)
    process = build_process(recipe.process, vocab_size=len(tokenizer), mask_id=tokenizer.mask_token_id)
    model = _model(recipe, tokenizer, process, init, hooks)
    n_params = sum(p.numel() for p in model.parameters())
    _phase(is_main, "model", f"{type(model).__name__}, {n_params / 1e6:.2f} M parameters, process {type(process).__name__}", clock)
    objective = None
    if recipe.rl is not None:  # before any update: the reference policy is this model
        from ..rl.trainer import RLObjective, stop_tokens

        objective = RLObjective(recipe, tokenizer, process, model, val_docs,
                                stop_tokens(tokenizer, init.published, init.path if cfg.init_from else None))
    return Run(recipe, tokenizer, process, model, train_rows, val_rows, val_ppl, decoding, objective, hooks)


@dataclass
class _Init:
    """Where ``train.init_from`` points (all None without it)."""

    path: Optional[Path] = None
    kind: Optional[str] = None
    published: Any = None  # a published checkpoint (MDLM, BD3-LM, SEDD, ...) to fine-tune, converted on load
    base_meta: Any = None  # the textdiff.json of a textdiff folder to fine-tune


def _init_source(recipe: Recipe) -> _Init:
    """Where ``train.init_from`` points: its path and folder kind, the published checkpoint to fine-tune
    (converted on load) or the textdiff.json of a textdiff folder (all None without it)."""
    cfg = recipe.train
    init_path = init_kind = None
    published = None  # a published checkpoint (MDLM, BD3-LM, SEDD, ...) to fine-tune, converted on load
    base_meta = None  # the textdiff.json of a textdiff folder to fine-tune
    if cfg.init_from is not None:
        from ..models.format import PIPELINE_FILE, PUBLISHED, folder_kind
        from ..models.loading import resolve_model_path

        if recipe.denoiser is not None:
            raise ConfigError("give either a denoiser section (a Hugging Face network) or train.init_from (a saved run), not both")
        init_path = resolve_model_path(cfg.init_from, what="train.init_from folder")
        init_kind = folder_kind(init_path)  # one-line error for a textdiff.json beside another architecture
        if init_kind == PUBLISHED and recipe.adapt is None:  # (adapt: a causal LM, read by the hooks)
            from ..models.published import LoadOptions, load_published

            published = load_published(init_path, LoadOptions(tokenizer=recipe.tokenizer.path))
            check_continues(published.process, recipe)  # e.g. a SEDD checkpoint under a masked recipe
        elif (init_path / PIPELINE_FILE).is_file():
            from ..models.format import read_pipeline

            base_meta = read_pipeline(init_path)
    return _Init(init_path, init_kind, published, base_meta)


def _documents(recipe: Recipe, is_main: bool, clock: float):
    """(training documents, validation documents or None, texts the tokenizer and unigram counts read
    (None: the training documents), clock): RL prompts, SFT examples, a stream or a corpus."""
    from ..data import split_documents

    if recipe.rl is not None:  # RL: the sft section's prompts and answers (textdiff.rl.data)
        from ..rl.data import load_prompts, prompt_texts_of

        train_docs, val_docs = load_prompts(recipe.sft)
        corpus_texts = prompt_texts_of(train_docs)
    elif recipe.sft is not None:  # instruction data replaces the corpus (textdiff.sft)
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
    return train_docs, val_docs, corpus_texts, clock


def _tokenizer(recipe: Recipe, resume: bool, is_main: bool, init: _Init, train_docs, corpus_texts, clock: float):
    """(tokenizer, clock): reloaded on resume, the denoiser's, the checkpoint's or trained; saved to the run folder."""
    from ..tokenization import build_tokenizer, ensure_special_tokens, load_tokenizer

    out, cfg, published, init_path = Path(recipe.output_dir), recipe.train, init.published, init.path
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
    if reloaded:
        how = "loaded from the run folder"
    elif recipe.tokenizer.path is not None:
        how = f"loaded from {recipe.tokenizer.path}"
    elif recipe.denoiser is not None:
        how = "copied from the denoiser's checkpoint"
    elif cfg.init_from is not None:  # fine-tuning never retrains the model's tokenizer
        how = f"copied from the checkpoint {cfg.init_from}"
    else:
        how = f"trained {recipe.tokenizer.train}"
    clock = _phase(is_main, "tokenizer", f"{how}, {len(tokenizer)} tokens, saved to {tok_dir}", clock)
    return tokenizer, clock


def _rows(recipe: Recipe, tokenizer, train_docs, val_docs, corpus_texts, is_main: bool, clock: float):
    """(training rows, validation rows or None, validation unigram PPL or None, clock)."""
    import datasets

    from ..data import tokenize_rows, unigram_log_probs, unigram_ppl

    if recipe.rl is not None:  # prompt rows; the held-out ones go to the RL evaluation, not the NELBO one
        from ..rl.data import as_dataset

        train_rows, val_rows = as_dataset(train_docs), None
    elif recipe.sft is not None:
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
    # a unigram baseline is a corpus figure: none for SFT answers, which are scored given their prompts
    val_ppl = unigram_ppl(val_rows, unigram_log_probs(counted, vocab)) if val_rows is not None and recipe.sft is None else None
    n_train = "streamed" if recipe.data.streaming and recipe.sft is None else f"{len(train_rows):,}"
    clock = _phase(is_main, "data", f"{n_train} training rows and {len(val_rows) if val_rows is not None else 0:,} validation "
                   f"rows of {recipe.data.seq_len} tokens" + (f"; validation unigram PPL {val_ppl:.1f}" if val_ppl else ""), clock)
    return train_rows, val_rows, val_ppl, clock


def _model(recipe: Recipe, tokenizer, process, init: _Init, hooks: TrainHooks):
    """The network to train: external, adapted from a causal LM, a published or textdiff checkpoint, or
    fresh; then gradient checkpointing and LoRA as the recipe asks."""
    from ..models.build import adapt_attention, check_model_process, denoiser_config
    from ..models.modeling_textdiff import TextDiffModel

    cfg, vocab, published, init_path, init_kind = recipe.train, len(tokenizer), init.published, init.path, init.kind
    if recipe.denoiser:
        from ..models.external import build_external_denoiser  # external HF denoisers (issue 7)

        model = build_external_denoiser(recipe.denoiser, tokenizer, process)
    elif recipe.adapt is not None:  # a causal LM turned into the denoiser of the process (textdiff.adapt)
        model = hooks.build_model(init_path, init_kind, tokenizer, process, recipe.data.seq_len)
    elif published is not None:
        model = published.model
        if vocab > model.config.vocab_size:
            model.resize_token_embeddings(vocab)
        adapt_attention(model, process)  # e.g. BD3-LM fine-tuned from the published MDLM
    elif cfg.init_from is not None:  # a textdiff model folder or checkpoint (or an external network's)
        from ..models.format import EXTERNAL, read_network

        model = read_network(init_path, init_kind, vocab_size=vocab, trust_remote_code=cfg.trust_remote_code)
        if init_kind != EXTERNAL:
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
    return model


def _hooks(recipe: Recipe) -> TrainHooks:
    """The loop's hooks for this recipe: adaptation of a causal LM, or none."""
    if recipe.adapt is None:
        return TrainHooks()
    from ..adapt.training import Adaptation

    return Adaptation(recipe.adapt, recipe.data.seq_len)


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


def save_final(run: Run, model, path: Path, state_dict: dict | None = None) -> None:
    """Write the model (``state_dict``: its gathered weights when sharded) as a model folder, through the
    writer ``DiffusionLM.save_pretrained`` uses: tokenizer, process/sampler configs, the recipe, the
    modeling code and a model card with the run's metrics, atomically. The run's own earlier ``final/``
    (a resumed run) is replaced; a folder textdiff did not write there is refused."""
    from ..models.format import RECIPE_FILE, pipeline, save_model_folder

    out = Path(path).parent
    decoding = run.decoding
    meta = (pipeline(run.process.config, run.recipe.sampler, run.tokenizer, run.recipe.data.seq_len) if decoding is None else
            pipeline(run.process.config, decoding.sampler, run.tokenizer, run.recipe.data.seq_len, decoding.generation,
                     decoding.stop_token_ids))
    save_model_folder(path, model, run.tokenizer, meta, state_dict=state_dict,
                      recipe_text=(out / RECIPE_FILE).read_text(), metrics_file=out / "metrics.jsonl",
                      overwrite=True, writer_id=f"{run_id(out)}-{writer_tag()}")
