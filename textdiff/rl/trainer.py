"""The RL objective as the training loop's step hook (:class:`RLObjective`): the loop
(:mod:`textdiff.training.loop`) keeps its optimizer, schedule, accelerate launch, checkpoints and
logging; this object owns what one optimizer step computes.

Steps follow TRL's ``GRPOTrainer``: ``train.max_steps`` counts OPTIMIZER steps, and one rollout
batch serves ``rl.num_iterations`` (μ) consecutive steps::

    step s:  generation g = s // μ, inner iteration k = s mod μ
    k = 0:   prompts of generation g -> rollouts -> rewards -> advantages
             (μ > 1: old log-probs of every k; β > 0: reference log-probs of every k, no grad)
    every s: policy log-probs under the masks of (g, k) -> clipped surrogate + β·KL -> backward

Sizes: ``train.batch_size`` = completions per process per micro-batch (a multiple of
``num_generations``: groups never straddle processes, so advantages need no communication),
``train.grad_accum`` micro-batches per step; a generation takes
``batch_size · grad_accum · processes / num_generations`` prompts from the loop's seeded row stream.
Every draw (rollout noise, prompt masks, ELBO masks) is a function of (seed, generation, iteration,
GLOBAL prompt / row index), so 2 processes compute what 1 computes, and a resumed run makes the
same rollouts; a checkpoint inside a generation (k > 0) keeps that generation's rollouts and
old / reference log-probs (``rl_state-<rank>.safetensors``) so the next steps continue exactly.

The reference policy π_ref (β > 0) is the model the run started from: with LoRA the same network
with its adapters switched off (peft's ``disable_adapter``; no second copy of the weights), else a
frozen copy made before any update.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..contexts import takes_logits_to_keep
from ..errors import ConfigError
from .advantages import combine_rewards, group_advantages
from .feedback import describe, plot_rl_curves, reward_metrics
from .logprob import elbo_logprobs, mask_generators, one_step_logprobs, policy_denoiser
from .loss import sequence_policy_loss, token_policy_loss
from .rewards import compute_rewards, load_reward
from .rollout import as_completions, encode_prompts, prompt_texts, rollout, rollout_seeds

BUFFER_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "rows", "old", "ref")
EVAL_SEED = 7_777_777  # held-out rollouts use fixed seeds: evaluations are comparable over time


@dataclass
class StepReport:
    loss: torch.Tensor  # this process's share of the step's loss (the processes' shares sum to it)
    tokens: int  # completion positions this process scored
    metrics: dict  # the step's RL metrics (already combined over processes)
    lines: list = field(default_factory=list)  # held-out evaluation lines to log


def stop_tokens(tokenizer, published=None, init_path=None) -> list[int]:
    """Tokens that end a completion: the tokenizer's EOS, then the end-of-turn tokens the model's
    publisher names (LLaDA ``<|eot_id|>``, Dream ``<|im_end|>``) or a textdiff folder's ``textdiff.json`` lists."""
    ids = [tokenizer.eos_token_id]
    if published is not None:
        ids += list(published.notes.get("stop_token_ids") or [])
    elif init_path is not None:
        from ..models.format import PIPELINE_FILE

        meta_file = Path(init_path) / PIPELINE_FILE
        if meta_file.is_file():
            ids += list(json.loads(meta_file.read_text()).get("stop_token_ids") or [])
    return [int(i) for i in dict.fromkeys(ids) if i is not None]


def inner_network(model):
    """The network under LoRA / wrappers, to read what it accepts (``logits_to_keep``)."""
    if hasattr(model, "peft"):
        return model.outer if model.outer is not None else model.peft.get_base_model()
    return model


class RLObjective:
    """diffu-GRPO / sequence-ELBO policy optimisation as the loop's step (module docstring)."""

    def __init__(self, recipe, tokenizer, process, model, val_rows, stop_token_ids):
        cfg = recipe.rl
        self.cfg, self.train_cfg, self.tokenizer, self.process = cfg, recipe.train, tokenizer, process
        self.val_rows = (val_rows or [])[: cfg.eval_prompts] if cfg.eval_every else []
        self.stop_ids = list(dict.fromkeys(int(i) for i in stop_token_ids if i is not None))
        if not self.stop_ids:
            raise ConfigError("RL rollouts need an EOS token to end completions; the tokenizer has none")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.rewards = [(name, load_reward(name, cfg.reward_kwargs.get(name))) for name in cfg.reward_funcs]
        from ..samplers.base import build_sampler

        self.sampler = build_sampler(cfg.rollout_sampler(), process)
        self.eval_sampler = build_sampler(dataclasses.replace(cfg.sampler, temperature=cfg.eval_temperature), process)
        policy_denoiser(model, process)  # one-line error for a process / model the estimators do not serve
        self.lora = hasattr(model, "peft")
        self.reference = None
        if cfg.beta > 0 and not self.lora:  # a frozen copy of the starting weights (LoRA: adapters off instead)
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.buffer, self.generation, self.buffer_metrics = None, None, {}

    # ---- wiring ---------------------------------------------------------------------------------
    def attach(self, acc, prepared, stream, saved: dict | None = None) -> None:
        """Called by the loop after ``accelerate.prepare``; ``saved``: this rank's buffer from a checkpoint."""
        from ..training.distributed import is_sharded, uses_deepspeed

        if is_sharded(acc.unwrap_model(prepared)) or uses_deepspeed(acc):
            raise ConfigError("rl runs on one process or under DDP (recipes/accelerate/ddp.yaml); FSDP and DeepSpeed "
                              "shard the weights that rollouts read whole, which is not wired yet")
        self.acc, self.stream = acc, stream
        self.raw = acc.unwrap_model(prepared)
        if self.reference is not None:
            self.reference.to(acc.device)
        if saved:
            tensors, meta = saved
            state = json.loads(meta["rl"])
            self.generation, self.buffer_metrics = state["generation"], state["metrics"]
            self.buffer = {k: v.to(acc.device) for k, v in tensors.items()}

    def state(self, step: int) -> tuple[dict, dict] | None:
        """(tensors, metadata) to keep in a checkpoint at ``step``: the rollout buffer when the next
        step still uses it (inside a generation), else None."""
        if self.buffer is None or step % self.cfg.num_iterations == 0:
            return None
        meta = json.dumps({"generation": self.generation, "metrics": self.buffer_metrics})
        return {k: v.contiguous().cpu() for k, v in self.buffer.items()}, {"rl": meta}

    def _denoiser(self, model):
        """The estimators' denoiser calling ``model`` (the prepared wrapper: DDP syncs its gradients)."""
        if takes_logits_to_keep(inner_network(self.raw)) and not takes_logits_to_keep(model):
            def net(input_ids, logits_to_keep=0, **kwargs):
                return model(input_ids, logits_to_keep=logits_to_keep, **kwargs)
            return policy_denoiser(net, self.process)
        return policy_denoiser(model, self.process)

    def _reference(self):
        """(denoiser of π_ref, context that switches it on)."""
        if self.lora:
            return self._denoiser(self.raw), self.raw.peft.disable_adapter()
        return self._denoiser(self.reference), nullcontext()

    # ---- one step -------------------------------------------------------------------------------
    def step(self, model, step: int) -> StepReport:
        cfg, tc = self.cfg, self.train_cfg
        generation, k = divmod(step, cfg.num_iterations)
        lines = [self.evaluate(0)] if step == 0 and self.val_rows and self.acc.is_main_process else []
        started = time.perf_counter()
        rollout_s = 0.0
        if self.generation != generation:
            self._generate(generation)
            rollout_s = time.perf_counter() - started
        updated = time.perf_counter()
        loss, tokens, stats = self._update(model, generation, k)
        metrics = {**self.buffer_metrics, **stats, "rollout_s": rollout_s, "update_s": time.perf_counter() - updated}
        if not rollout_s:
            metrics["rollout_tokens_per_s"] = float("nan")  # no rollouts this step (inner iteration k > 0)
        if self.val_rows and self.acc.is_main_process and ((step + 1) % cfg.eval_every == 0 or step + 1 == tc.max_steps):
            lines.append(self.evaluate(step + 1))
        return StepReport(loss=loss, tokens=tokens, metrics=metrics, lines=lines)

    def _prompts(self, generation: int) -> tuple[list[int], dict]:
        """Global indices and columns of this process's prompts of ``generation`` (micro-batch order)."""
        tc, G = self.train_cfg, self.cfg.num_generations
        world, rank = self.acc.num_processes, self.acc.process_index
        per_micro = tc.batch_size // G
        first = generation * per_micro * tc.grad_accum * world
        index = [first + (j * world + rank) * per_micro + i for j in range(tc.grad_accum) for i in range(per_micro)]
        columns: dict = {}
        for j in range(tc.grad_accum):
            rows = self.stream.rows(index[j * per_micro], per_micro)
            for key, values in rows.items():
                columns.setdefault(key, []).extend(values)
        return index, columns

    @torch.no_grad()
    def _decode(self, prompts: list, columns: dict, seeds: list[int], G: int, sampler):
        """Rollouts of ``prompts`` (dataset values) and their rewards [B, F]."""
        cfg = self.cfg
        texts, chat = prompt_texts([{"prompt": p} for p in prompts], self.tokenizer, "prompt")
        ids = encode_prompts(texts, self.tokenizer, cfg.max_prompt_length)
        was_training = self.raw.training
        self.raw.eval()
        out = rollout(self.raw, self.process, sampler, ids, seeds, num_generations=G,
                      max_completion_length=cfg.max_completion_length, steps=cfg.steps, stop_token_ids=self.stop_ids,
                      block_size=cfg.block_size, use_cache=cfg.use_cache, pad_token_id=self.pad_id,
                      generation_batch_size=cfg.generation_batch_size, tokenizer=self.tokenizer)
        self.raw.train(was_training)
        repeat = lambda values: [v for v in values for _ in range(G)]  # noqa: E731
        extra = {k: repeat(v) for k, v in columns.items() if k != "prompt"}
        kept = [ids[:n] for ids, n in zip(out.completion_ids.tolist(), out.lengths.tolist())]
        rewards = compute_rewards(self.rewards, repeat(prompts), as_completions(out.texts, chat), kept, extra)
        return out, rewards

    def _generate(self, generation: int) -> None:
        cfg, acc, G = self.cfg, self.acc, self.cfg.num_generations
        index, columns = self._prompts(generation)
        seeds = rollout_seeds(self.train_cfg.seed, generation, index, G)
        out, rewards = self._decode(columns["prompt"], columns, seeds, G, self.sampler)
        total = combine_rewards(rewards, cfg.weights())
        adv = group_advantages(total, G, cfg.scale_rewards)
        dev = acc.device
        buf = {"prompt_ids": out.prompt_ids.to(dev), "prompt_mask": out.prompt_mask.to(dev),
               "completion_ids": out.completion_ids.to(dev), "completion_mask": out.completion_mask.to(dev),
               "advantages": adv.advantages.to(dev), "rows": torch.tensor([i * G + g for i in index for g in range(G)], device=dev)}
        if cfg.mask_truncated_completions:
            buf["completion_mask"] = buf["completion_mask"] * (~out.truncated.to(dev))[:, None].long()
        self.buffer, self.generation = buf, generation
        self._old_and_reference(generation)
        # metrics of the whole generation, over every process
        gathered = acc.gather(torch.cat([rewards, total[:, None]], 1).to(dev)).cpu()  # [B_all, F + 1]
        lengths = acc.gather(out.lengths.float().to(dev)).cpu()
        clipped = acc.gather(out.truncated.float().to(dev)).cpu()
        zero = acc.gather(torch.tensor([adv.frac_reward_zero_std], device=dev)).mean()
        seconds = acc.gather(torch.tensor([out.seconds], device=dev)).max()
        self.buffer_metrics = {**reward_metrics(cfg.reward_funcs, gathered[:, :-1], gathered[:, -1]),
                               "frac_reward_zero_std": float(zero), "completions/mean_length": float(lengths.mean()),
                               "completions/clipped_ratio": float(clipped.mean()),
                               "rollout_tokens_per_s": float(lengths.numel() * cfg.max_completion_length / max(float(seconds), 1e-9))}

    @torch.no_grad()
    def _old_and_reference(self, generation: int) -> None:
        """π_old (μ > 1) and π_ref (β > 0) log-probs of every inner iteration, under its masks."""
        cfg, buf = self.cfg, self.buffer
        mu = cfg.num_iterations
        was_training = self.raw.training
        self.raw.eval()
        if mu > 1:
            buf["old"] = torch.stack([self._logprobs(self._denoiser(self.raw), generation, k) for k in range(mu)])
        if cfg.beta > 0:
            denoise, ctx = self._reference()
            with ctx:
                buf["ref"] = torch.stack([self._logprobs(denoise, generation, k) for k in range(mu)])
        self.raw.train(was_training)

    def _logprobs(self, denoise, generation: int, k: int, rows: slice = slice(None), grad: bool = False):
        """[b, N] token log-probs (diffu_grpo) or [b] ELBOs of the buffer rows ``rows`` under the masks of (generation, k)."""
        cfg, buf = self.cfg, self.buffer
        b = self.train_cfg.batch_size
        parts = []
        span = range(buf["rows"].shape[0])[rows]
        for lo in range(span.start, span.stop, b):  # micro-batch chunks: the memory of one training forward
            sl = slice(lo, min(lo + b, span.stop))
            gens = mask_generators(self.train_cfg.seed, generation, k, buf["rows"][sl].tolist())
            args = (denoise, self.process, buf["prompt_ids"][sl], buf["prompt_mask"][sl], buf["completion_ids"][sl],
                    buf["completion_mask"][sl])
            if cfg.objective == "diffu_grpo":
                parts.append(one_step_logprobs(*args, p_mask_prompt=cfg.p_mask_prompt, generator=gens))
            else:
                parts.append(elbo_logprobs(*args, t_samples=cfg.elbo_t_samples, antithetic=cfg.antithetic,
                                           coupled=cfg.coupled, generator=gens))
        if grad:
            return parts
        return torch.cat([p.logp if cfg.objective == "diffu_grpo" else p.elbo for p in parts]).detach()

    def _update(self, model, generation: int, k: int):
        """Backward of the policy loss over this process's micro-batches; the loop steps the optimizer."""
        from ..training.distributed import backward_scale

        cfg, tc, acc, buf = self.cfg, self.train_cfg, self.acc, self.buffer
        world, b = acc.num_processes, tc.batch_size
        mask = buf["completion_mask"]
        token_level = cfg.objective == "diffu_grpo"
        counted = mask.sum() if token_level else (mask.sum(1) > 0).sum()
        global_items = float(acc.reduce(counted.float().clone(), reduction="sum"))
        global_rows = float(buf["rows"].numel() * world)
        scale = backward_scale(acc, tc)
        loss_sum = torch.zeros((), device=acc.device)
        stats = torch.zeros(6, device=acc.device, dtype=torch.float64)  # weighted kl, clip lo/hi/region, entropy, weight
        denoise = self._denoiser(model)
        for j in range(tc.grad_accum):
            sl = slice(j * b, (j + 1) * b)
            acc.sync_gradients = j == tc.grad_accum - 1
            sync = acc.no_sync(model) if j < tc.grad_accum - 1 else nullcontext()
            with sync, acc.autocast():
                lp = self._logprobs(denoise, generation, k, sl, grad=True)[0]
                old = buf["old"][k][sl] if "old" in buf else None
                ref = buf["ref"][k][sl] if "ref" in buf else None
                pl = self._loss(lp, buf["advantages"][sl], mask[sl], old, ref, global_items, global_rows)
                loss = pl.loss * world * scale  # DDP averages gradients over processes
            acc.backward(loss)
            loss_sum += pl.loss.detach()
            w = float(mask[sl].sum() if token_level else (mask[sl].sum(1) > 0).sum())
            stats += torch.tensor([pl.kl * w, pl.clip_ratio_low * w, pl.clip_ratio_high * w, pl.clip_ratio * w,
                                   pl.entropy * w, w], device=acc.device, dtype=torch.float64)
        stats = acc.reduce(stats, reduction="sum")
        total_w = max(float(stats[5]), 1.0)
        names = ("kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "entropy")
        tokens = int(acc.reduce(mask.sum().clone(), reduction="sum"))
        return loss_sum, tokens, {n: float(stats[i]) / total_w for i, n in enumerate(names)}

    def _loss(self, lp, adv, mask, old, ref, global_items: float, global_rows: float):
        cfg = self.cfg
        common = dict(epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta, kl_estimator=cfg.kl_estimator)
        if cfg.objective == "elbo":
            rows = (mask.sum(1) > 0).float()
            return sequence_policy_loss(lp.elbo, adv, lp.num_tokens, old_elbo=old, ref_elbo=ref, row_mask=rows,
                                        num_items=global_items, entropy=lp.entropy, **common)
        if cfg.loss_type in ("dapo", "bnpo"):  # tokens of the whole step (every process and micro-batch)
            return token_policy_loss(lp.logp, adv, mask, old_logp=old, ref_logp=ref, loss_type="dapo",
                                     num_items=global_items, entropy=lp.entropy, **common)
        pl = token_policy_loss(lp.logp, adv, mask, old_logp=old, ref_logp=ref, loss_type=cfg.loss_type,
                               max_completion_length=cfg.max_completion_length, entropy=lp.entropy, **common)
        pl.loss = pl.loss * (mask.shape[0] / global_rows)  # a per-row mean over this micro-batch -> over the step
        return pl

    # ---- what the loop shows --------------------------------------------------------------------
    @staticmethod
    def show(line: dict) -> dict:
        """Progress-bar fields of a training line."""
        return {"reward": f"{line['reward']:.3f}", "kl": f"{line['kl']:.3g}"}

    @staticmethod
    def describe(line: dict) -> str:
        return describe(line)

    def finish(self, out: Path) -> None:
        """After the run (main process): ``rl_curves.png`` beside ``metrics.jsonl``."""
        png = plot_rl_curves(Path(out) / "metrics.jsonl", Path(out) / "rl_curves.png")
        if png is not None:
            print(f"rl curves: {png}")

    # ---- held-out evaluation --------------------------------------------------------------------
    def evaluate(self, step: int) -> dict:
        """The same rewards on the held-out prompts (``rl.eval_prompts`` of them, ``num_generations_eval``
        completions each at ``eval_temperature``, fixed seeds); main process only (no collectives)."""
        cfg, G = self.cfg, self.cfg.num_generations_eval
        prompts = [r["prompt"] for r in self.val_rows]
        columns = {k: [r.get(k) for r in self.val_rows] for k in self.val_rows[0]}
        seeds = rollout_seeds(EVAL_SEED, 0, range(len(prompts)), G)
        out, rewards = self._decode(prompts, columns, seeds, G, self.eval_sampler)
        total = combine_rewards(rewards, cfg.weights())
        return {"step": step, **reward_metrics(cfg.reward_funcs, rewards, total, prefix="eval_"),
                "eval_prompts": len(prompts), "eval_completions/mean_length": float(out.lengths.float().mean())}
