"""The training loop, visible in one function: :func:`train`.

Runs unchanged on one CPU, one GPU or several under ``accelerate launch``. Data order and noise are
functions of (seed, global row index) only, so a resumed run continues with the same batches and
the same corruption, and N processes with batch b see exactly what one process with batch N·b sees.
"""
from __future__ import annotations

import gc
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..config import Recipe, save_recipe, to_dict
from ..errors import ConfigError
from ..models.format.writer import MARKER, temp_sibling
from ..objective import estimate_nelbo
from ..sft import with_prompt_dropout
from .checkpoint import load_checkpoint, load_objective_state, save_checkpoint, select_checkpoint, writer_tag
from .distributed import accelerator_kwargs, backward_scale, check_launch, configure_deepspeed, full_model_state
from .ema import EMA
from .optim import build_optimizer, build_scheduler
from .checks import check_init_from
from .progress import TrainBar, plot_curves, validation_line
from .runfolder import mark_run_folder, retire_run_folder, run_scoped_id
from .runlock import RunLock
from .setup import check_output_dir, prepare_run, row_generators, row_stream, save_final

VALIDATION_SEED = 1_000_003  # validation noise is fixed, so evaluations are comparable over time


@torch.no_grad()
def evaluate(model, process, rows, batch_size: int, max_batches: int, t_samples: int, device,
             seed: int = VALIDATION_SEED) -> dict:
    """Validation NELBO (nats per counted token) with fixed noise, by the one likelihood estimator
    (:func:`textdiff.objective.estimate_nelbo`: row i's noise depends on (seed, i) only, not on the
    batch size or the number of processes); the same loss code as training."""
    model.eval()
    nats, count = 0.0, 0.0
    n_rows = len(rows) if max_batches == 0 else min(len(rows), max_batches * batch_size)
    for start in range(0, n_rows, batch_size):
        batch = rows[start:min(start + batch_size, n_rows)]
        x0 = batch["input_ids"].to(device)  # [B, L]
        mask = batch["loss_mask"].to(device) if "loss_mask" in batch else None
        frozen = batch["prompt_mask"].to(device).bool() if "prompt_mask" in batch else None  # SFT prompts
        est = estimate_nelbo(model, process, x0, seed=seed, t_samples=t_samples, rows=range(start, start + x0.shape[0]),
                             loss_mask=mask, frozen=frozen, rows_per_call=batch_size)
        nats += float(est.nats.sum())
        count += float(est.tokens.sum())
    model.train()
    nelbo = nats / max(count, 1.0)
    return {"val_nelbo": nelbo, "val_ppl_bound": math.exp(min(nelbo, 700.0)), "val_tokens": count}


def train(recipe: Recipe, resume: bool = False, stop_at: int | None = None, overwrite: bool = False) -> Path:
    """Train ``recipe``; returns the folder of the final model (``<output_dir>/final``).

    ``output_dir`` must be new, empty or a run folder textdiff wrote (:mod:`.runfolder`): ``resume``
    continues the run in it, ``overwrite`` replaces it with a fresh run. ``stop_at``: end abruptly
    after this step, as a killed run would (no final save): used to test that ``resume=True``
    continues exactly.
    """
    try:
        return _setup_and_train(recipe, resume, stop_at, overwrite)
    finally:
        # The prepared (sharded) model sits in reference cycles (its hooks); free it, its device mesh and
        # communication handles now, while the interpreter is whole: left to interpreter shutdown, gloo's
        # threads can abort a process whose run succeeded.
        gc.collect()


def _setup_and_train(recipe: Recipe, resume: bool, stop_at: int | None, overwrite: bool = False) -> Path:
    from accelerate import Accelerator

    cfg = recipe.train
    if recipe.lora is not None:  # before anything is read or written
        from ..extras import require

        require("peft", "lora", "LoRA (the recipe's lora section)")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    precision = resolve_precision(cfg.mixed_precision)
    _forget_previous_accelerator(precision)
    acc = Accelerator(mixed_precision=precision, log_with=_trackers(cfg.trackers), project_dir=recipe.output_dir,
                      kwargs_handlers=accelerator_kwargs())
    check_launch(acc)
    out = Path(recipe.output_dir)
    check_output_dir(recipe, resume, overwrite)  # read-only: a refused run writes nothing
    check_init_from(recipe)
    if overwrite and acc.is_main_process:
        retire_run_folder(out)  # the old run (textdiff's, not being written) goes; the new one starts fresh
    lock = RunLock(out) if acc.is_main_process else None  # one writer per folder; only the main process writes
    had_tokenizer, marked = (out / "tokenizer").exists(), False
    try:
        if lock is not None:
            lock.acquire()
            rid, marked = mark_run_folder(out)
            for left in lock.clean_temporary(rid):  # temporary entries of this run's writers that were killed
                acc.print(f"note: removed {left.name}, left in {out} by an interrupted run")
        return _train(acc, recipe, resume, stop_at)
    except BaseException:
        if lock is not None and lock.held and not resume and not (out / "metrics.jsonl").exists():
            _discard_setup(out, lock, had_tokenizer, marked)  # a fresh run that failed before its first step leaves nothing
        raise
    finally:
        if lock is not None:
            lock.release()


def _discard_setup(out: Path, lock: RunLock, had_tokenizer: bool, marked: bool) -> None:
    """Remove what this run wrote: the whole folder when it made it, else its tokenizer and marker."""
    if lock.created_folder:
        for p in out.iterdir():
            if p.name != ".lock":
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        return
    if not had_tokenizer:
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
    if marked:
        (out / MARKER).unlink(missing_ok=True)


def _nelbo_step(acc, model, run, stream, step: int, base: int, scale: float):
    """The process's NELBO over ``grad_accum`` micro-batches of this process's rows (backward on each):
    (summed loss, global counted tokens, tokens of the step). Row r's t and noise depend on (seed, step, r)."""
    cfg, process = run.recipe.train, run.process
    world, rank = acc.num_processes, acc.process_index
    rows_per_step = cfg.batch_size * cfg.grad_accum * world
    t_all = process.sample_t(rows_per_step, device=acc.device, seq_len=run.recipe.data.seq_len,
                             generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))  # [G] or [G, L]
    micro = []
    for j in range(cfg.grad_accum):
        offset = (j * world + rank) * cfg.batch_size  # this process's rows within the step
        batch = stream.rows(base + offset, cfg.batch_size)
        x0 = batch["input_ids"].to(acc.device)  # [b, L]
        mask = batch["loss_mask"].to(acc.device).float() if "loss_mask" in batch else torch.ones_like(x0, dtype=torch.float)
        prompt = batch["prompt_mask"].to(acc.device).bool() if "prompt_mask" in batch else None  # SFT: never corrupted
        micro.append((offset, x0, mask, prompt))
    local_tokens = sum(m.sum() for _, _, m, _ in micro)
    global_tokens = acc.reduce(local_tokens.detach().clone(), reduction="sum")  # normaliser of the step
    step_loss = torch.zeros((), device=acc.device)
    for j, (offset, x0, mask, prompt) in enumerate(micro):
        gens = row_generators(cfg.seed, base + offset, x0.shape[0])
        t = t_all[offset:offset + x0.shape[0]]
        acc.sync_gradients = j == cfg.grad_accum - 1  # DeepSpeed steps at this boundary
        sync = acc.no_sync(model) if j < cfg.grad_accum - 1 else nullcontext()  # DDP: all-reduce on the last only
        net = with_prompt_dropout(model, prompt, cfg.cond_dropout, process.mask_id, cfg.seed, base + offset)
        with sync, acc.autocast():
            terms = run.hooks.nelbo_terms(net, process, x0, loss_mask=mask, t=t, frozen=prompt, generator=gens)
            loss = terms.loss.sum() * world / global_tokens * scale  # DDP averages over processes
        acc.backward(loss)
        step_loss += terms.loss.sum().detach()
    step_tokens = rows_per_step * x0.shape[1]
    return step_loss, global_tokens, step_tokens


def _validate(acc, metrics, bar, run, raw_model, ema, step: int, first_eval: bool) -> bool:
    """Validation NELBO (EMA weights swapped in), logged and shown; returns whether the first eval is still due."""
    cfg, process, recipe = run.recipe.train, run.process, run.recipe
    with ema.swapped_in(raw_model) if ema is not None else nullcontext():
        line = {"step": step, **evaluate(raw_model, process, run.val_rows, cfg.batch_size, cfg.eval_batches,
                                         cfg.eval_t_samples, acc.device)}
    if first_eval and run.val_unigram_ppl is not None:  # none for SFT answers
        line["val_unigram_ppl"] = run.val_unigram_ppl
        first_eval = False
    _log(acc, metrics, line)
    loss_kind = "sft" if recipe.sft is not None else "nelbo" if process.is_diffusion else "nll"  # not `objective`: the step hook
    bar.write(validation_line(line, run.val_unigram_ppl, loss_kind))
    return first_eval


def _finish(acc, run, out: Path, prepared, raw_model, ema, metrics, objective) -> Path:
    """final/ (EMA weights when kept), the training curves and the objective's own end; then every process lets go."""
    acc.wait_for_everyone()
    final = out / "final"
    with ema.swapped_in(raw_model) if ema is not None else nullcontext():
        weights = full_model_state(prepared)  # gathered on every process when sharded, else None
        if acc.is_main_process:
            save_final(run, raw_model, final, state_dict=weights)
    if acc.is_main_process:
        metrics.close()
        plot = plot_curves(out / "metrics.jsonl", out / "training_curves.png")
        if plot is not None:
            print(f"training curves: {plot}")
        if objective is not None:
            objective.finish(out)
    acc.wait_for_everyone()  # every process is done communicating before any closes the group
    acc.free_memory()  # the Accelerator lets go of the prepared objects (DeepSpeed's engine is destroyed)
    acc.end_training()
    return final


def _prepare(acc, run, out: Path, resume: bool):
    """(checkpoint to resume or None, prepared model, optimizer, scheduler, unwrapped model, EMA or None,
    the model the steps call: compiled when ``train.compile``)."""
    cfg, model = run.recipe.train, run.model
    # newest intact checkpoint, weights loaded into the plain model (FSDP / DeepSpeed shard what they are given)
    ckpt = select_checkpoint(out, model, say=acc.print) if resume else None
    optimizer = build_optimizer(model.to(acc.device), cfg)
    scheduler = build_scheduler(optimizer, cfg)
    configure_deepspeed(acc, cfg)
    prepared, optimizer = acc.prepare(model, optimizer)  # DDP / FSDP2 / DeepSpeed wrapper; `prepared` saves and loads
    raw_model = acc.unwrap_model(prepared)  # (LoRA under FSDP2 / ZeRO-3 saves merged weights from the gathered state)
    ema = EMA(raw_model, cfg.ema) if cfg.ema > 0 else None
    return ckpt, prepared, optimizer, scheduler, raw_model, ema, torch.compile(prepared) if cfg.compile else prepared


def _save(acc, out: Path, cfg, tag: str, state, stream, objective, step: int, rows_seen: int, elapsed: float) -> None:
    """checkpoint-{step}: ``state`` = (prepared model, optimizer, scheduler, EMA or None), where the
    streams resume, the objective's own state (every process: sharded state is gathered collectively)."""
    prepared, optimizer, scheduler, ema = state
    trainer_state = {"step": step, "rows_seen": rows_seen, "elapsed": elapsed}
    if hasattr(stream, "position"):  # streaming: where each process's stream resumes
        from accelerate.utils import gather_object

        trainer_state["streams"] = {"world": acc.num_processes, "batch_size": cfg.batch_size,
                                    "positions": gather_object([stream.position(rows_seen)])}
    save_checkpoint(acc, out, step, prepared, optimizer, scheduler, ema, trainer_state, cfg.keep_checkpoints, tag,
                    objective.state(step) if objective is not None else None)


def _resume(acc, recipe: Recipe, out: Path, ckpt, resume: bool, state) -> dict:
    """The trainer state of ``ckpt`` loaded into ``state`` = (prepared model, optimizer, scheduler, EMA or
    None) ({} for a fresh run); metrics.jsonl cut back to the checkpoint, config.yaml and the trackers."""
    trainer_state = {}
    if ckpt is not None:
        trainer_state = load_checkpoint(acc, ckpt, *state)
        acc.print(f"resumed from {ckpt} at step {trainer_state['step']}")
    if resume and acc.is_main_process:  # drop lines the killed run wrote after its checkpoint
        _truncate_metrics(out / "metrics.jsonl", trainer_state.get("step", 0))
    if acc.is_main_process:
        save_recipe(recipe, out / "config.yaml")
        acc.init_trackers(recipe.name, config=_flat(to_dict(recipe)))
    return trainer_state


def _train(acc, recipe: Recipe, resume: bool, stop_at: int | None) -> Path:
    from accelerate.utils import broadcast_object_list

    cfg = recipe.train
    run = prepare_run(recipe, resume=resume, is_main=acc.is_main_process)  # data, tokenizer, model, process
    acc.wait_for_everyone()  # every process has checked the output folder before the main one writes to it
    out = Path(recipe.output_dir)
    tag = broadcast_object_list([writer_tag()])[0]  # the main process's: names this run's temporary folders
    ckpt, prepared, optimizer, scheduler, raw_model, ema, model = _prepare(acc, run, out, resume)
    compile_start = time.perf_counter() if cfg.compile else None
    state = _resume(acc, recipe, out, ckpt, resume, (prepared, optimizer, scheduler, ema))
    step, rows_seen, elapsed = state.get("step", 0), state.get("rows_seen", 0), state.get("elapsed", 0.0)
    metrics = open(out / "metrics.jsonl", "a") if acc.is_main_process else None

    world, rank = acc.num_processes, acc.process_index
    scale = backward_scale(acc, cfg)
    rows_per_step = cfg.batch_size * cfg.grad_accum * world
    stream = row_stream(run, rank, world, state.get("streams"))
    objective = run.objective  # None: the process's NELBO below; else it owns each step's forward and backward (RL)
    if objective is not None:
        objective.attach(acc, prepared, stream, load_objective_state(ckpt, rank) if ckpt is not None else None)
    bar = TrainBar(acc.is_local_main_process, step, cfg.max_steps, cfg.max_minutes, elapsed)
    spikes = LossSpikes()
    started, window_tokens, window_start = time.perf_counter() - elapsed, 0, time.perf_counter()
    first_eval = not (out / "metrics.jsonl").exists() or ckpt is None
    model.train()
    while step < cfg.max_steps:
        # ---- one optimizer step over grad_accum micro-batches on every process ------------------
        scheduler.apply(step, time.perf_counter() - started)  # before backward: DeepSpeed steps inside it
        run.hooks.before_step(step, raw_model, run.process)  # e.g. adaptation: attention annealing, block size
        base = rows_seen  # global index of the first row of this step
        report = objective.step(model, step) if objective is not None else None  # RL: rollouts, rewards, backward
        if report is not None:
            step_loss, global_tokens, step_tokens = report.loss, torch.ones((), device=acc.device), report.tokens
        else:
            step_loss, global_tokens, step_tokens = _nelbo_step(acc, model, run, stream, step, base, scale)
        if cfg.grad_clip > 0:
            acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()  # (a no-op under DeepSpeed, whose engine stepped in acc.backward)
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(raw_model, step)
        step += 1
        rows_seen += rows_per_step
        window_tokens += step_tokens
        # ---- bookkeeping: log, validate, checkpoint ---------------------------------------------
        train_loss = float(acc.reduce(step_loss, reduction="sum") / global_tokens)
        if not math.isfinite(train_loss):
            raise ConfigError(f"the loss became {train_loss} at step {step}; lower train.lr or raise train.warmup_steps")
        spikes.observe(step, train_loss, acc.print)
        elapsed = time.perf_counter() - started
        out_of_time = cfg.max_minutes is not None and elapsed >= cfg.max_minutes * 60
        last = step >= cfg.max_steps or out_of_time
        if step % cfg.log_every == 0 or last:
            tok_s = window_tokens / max(time.perf_counter() - window_start, 1e-9)
            window_tokens, window_start = 0, time.perf_counter()
            line = {"step": step, "train_loss": train_loss, "lr": scheduler.get_last_lr()[0], "tokens_per_s": tok_s, "elapsed_s": elapsed,
                    **(report.metrics if report is not None else {})}
            _log(acc, metrics, line)
            bar.show(loss=f"{train_loss:.3f}", tok_s=f"{tok_s:,.0f}", **(objective.show(line) if objective is not None else {}))
        for extra in report.lines if report is not None else []:  # the objective's own evaluations (RL: held-out reward)
            _log(acc, metrics, extra)
            bar.write(objective.describe(extra))
        if run.val_rows is not None and (step % cfg.eval_every == 0 or last):
            first_eval = _validate(acc, metrics, bar, run, raw_model, ema, step, first_eval)
        if step % cfg.save_every == 0 or last:  # every process: sharded state is gathered collectively
            _save(acc, out, cfg, tag, (prepared, optimizer, scheduler, ema), stream, objective, step, rows_seen, elapsed)
        if compile_start is not None:  # the first step traced and compiled the model
            bar.write(f"compile: torch.compile, first step {time.perf_counter() - compile_start:.1f} s")
            compile_start = None
        bar.advance(step, elapsed)
        if stop_at is not None and step >= stop_at:
            bar.close()
            metrics and metrics.close()
            return out / f"checkpoint-{step}"
        if out_of_time:
            bar.write(f"stopping at step {step}: train.max_minutes={cfg.max_minutes} reached")
            break
    bar.close()
    return _finish(acc, run, out, prepared, raw_model, ema, metrics, objective)


# ---------------------------------------------------------------------------------------------


class LossSpikes:
    """Warns when a step's loss jumps far above its running mean (a sign of a too-high lr or bad rows)."""

    def __init__(self, factor: float = 2.0, margin: float = 1.0, after: int = 10, every: int = 50, beta: float = 0.9):
        self.factor, self.margin, self.after, self.every, self.beta = factor, margin, after, every, beta
        self.mean, self.seen, self.last_warning = None, 0, -every

    def observe(self, step: int, loss: float, say=print) -> bool:
        spike = (self.seen >= self.after and loss > self.factor * self.mean and loss - self.mean > self.margin)
        if spike and step - self.last_warning >= self.every:
            say(f"warning: loss spike at step {step}: {loss:.3f} against a running mean of {self.mean:.3f}; "
                "if it recurs, lower train.lr or raise train.warmup_steps", file=sys.stderr)
            self.last_warning = step
        self.mean = loss if self.mean is None else self.beta * self.mean + (1 - self.beta) * loss
        self.seen += 1
        return spike


def _forget_previous_accelerator(precision: str) -> None:
    """Accelerate keeps one global state per process; a second ``train`` call in the same process
    (a notebook, a test) with another precision must start from a clean one."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != precision:
        AcceleratorState._reset_state()


def resolve_precision(requested: str) -> str:
    """'auto': bf16 on GPU, fp32 on CPU. bf16 on a CPU without native bf16 (AVX512-BF16 / AMX) would
    be emulated and slow, so it falls back to fp32 with a warning."""
    if requested == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    if requested == "bf16" and not torch.cuda.is_available():
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        if not native:
            print("warning: this CPU has no native bfloat16; training in float32 instead")
            return "no"
    if requested == "fp16" and not torch.cuda.is_available():  # accelerate would run it without autocast or scaler
        from ..errors import warn

        warn("train.mixed_precision=fp16 needs a GPU (CPUs have no float16 autocast with loss scaling); training in "
             "float32 instead (use bf16 or no on CPU)")
        return "no"
    return requested


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the lines of steps <= ``step`` (and drop a line cut short by a kill), by writing a new file
    and renaming it over the old one: a kill at any moment leaves the old or the new history, whole."""
    if not path.is_file():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            line = json.loads(ln)
        except ValueError:
            continue  # blank, or the half-written last line of a killed run
        if isinstance(line, dict) and line.get("step", 0) <= step:
            keep.append(ln)
    tmp = temp_sibling(path, run_scoped_id(path.parent, writer_tag()))  # a leftover: removed by this run's next lock holder
    with open(tmp, "w") as f:
        f.write("".join(ln + "\n" for ln in keep))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _trackers(names):
    """Accelerate trackers that are installed; a configured one that is not gets a warning."""
    import importlib.util
    import os

    wanted = []
    for name in names:
        module = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}.get(name, name)
        if importlib.util.find_spec(module) is not None:
            wanted.append(name)
        elif os.environ.get("RANK", "0") == "0":  # once, from the main process of a launch
            how = "pip install 'textdiff[tensorboard]'" if name == "tensorboard" else f"pip install {module}"
            print(f"warning: train.trackers names {name!r}, which is not installed ({how}); "
                  "it is skipped: metrics still go to metrics.jsonl (train.trackers=[] silences this)")
    return wanted or None


def _flat(d, prefix=""):
    """Nested config -> flat {a.b: scalar} for trackers."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = "none" if v is None else v
        else:
            out[key] = str(v)
    return out


def _log(acc, metrics, line: dict) -> None:
    if metrics is not None:
        metrics.write(json.dumps(line) + "\n")
        metrics.flush()
    acc.log({k: v for k, v in line.items() if k != "step" and isinstance(v, (int, float))}, step=line["step"])

