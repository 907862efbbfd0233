"""RL rollouts: textdiff's decoding (textdiff.rl.rollout) against d1's own rollout code, on the same
LLaDA-layout model and decoding settings, as ratios measured in one process.

    python benchmarks/rl_rollouts.py --publisher-code /tmp/d1                      # the tiny LLaDA fixture
    python benchmarks/rl_rollouts.py --publisher-code /tmp/d1 --model random       # random LLaDA-layout Llama, real vocabulary

``--publisher-code ROOT`` is a checkout of dllm-reasoning/d1 as released (NEVER copied into this
repository); its ``diffu-grpo/diffu_grpo_trainer.py`` holds ``DiffuGRPOTrainer.generate`` (LLaDA's
semi-autoregressive low-confidence decoding, batched) with its helpers ``get_num_transfer_tokens``
and ``add_gumbel_noise``. The file imports TRL, wandb and an old transformers API at module level, so
this script reads the three methods out of it with ``ast`` and runs them, unchanged, on a small
stand-in for the trainer (``self.args.fp16 = False``); nothing else of d1 runs.

The model: ``fixture`` = tests/fixtures/published/llada (LLaDA's published layout, 2 layers, d 32,
vocab 80) loaded natively by textdiff; ``random`` = a random textdiff bidirectional Llama in
LLaDA's shapes family (``--d-model``, ``--layers``, ``--vocab``; default LLaDA's 126,464-token
vocabulary on a 2-layer d-128 trunk). BOTH sides call the same network object (d1's code calls
``model(x).logits``), so the ratio measures the rollout code: its loop, what each step computes
(d1: logits, a softmax and a gather over every position of every row, then a per-row top-k in
Python; textdiff: the output layer on the window's masked rows only, one batched commit), and the
caches / threshold rule d1's code does not have.

Settings (``--prompts``, ``--num-generations``, ``--prompt-length``, ``--gen-length``, ``--block``,
``--steps``): d1's GSM8K recipe decodes 256 tokens in blocks of 32 with 128 steps (2 tokens per
step), 6 generations per prompt; the defaults scale that to the fixture (64 tokens, blocks of 32,
32 steps). Modes (textdiff side; d1 always runs its one decoder at the same settings):

* ``greedy``: temperature 0, textdiff's confidence sampler (LLaDA low-confidence, linear schedule),
  no cache. The semantics are d1's: in float32 the tokens must be IDENTICAL (asserted; the [MASK]
  output row is zeroed, as in the fixture, so [MASK] is never an argmax; in bf16 the agreement is
  reported, rounding may split near-ties);
* ``sampled``: temperature ``--temperature`` (d1's GRPOConfig default 0.9), no cache: the same
  distribution of decoding, different random draws (tokens not compared);
* ``sampled + dual cache``: textdiff's approximate dual KV cache (Fast-dLLM);
* ``sampled + threshold + dual cache``: commit every token above ``--threshold`` (at least one per
  step), fewer forwards.

d1 runs under ``torch.no_grad()`` here (its trainer calls ``generate`` with gradients enabled; this
only favours d1). Timing: both sides ALTERNATELY ``--repeats`` times after one warm-up each; tokens/s
= rows × gen_length / seconds (both decode every position).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from published_decoding import RESULTS, machine, timed_pair  # noqa: E402

FIXTURE = HERE.parent / "tests" / "fixtures" / "published" / "llada"
D1_METHODS = ("generate", "get_num_transfer_tokens", "add_gumbel_noise")


def d1_rollout_code(root: Path):
    """An object whose ``generate(model, prompt, steps, gen_length, block_length, temperature, cfg_scale,
    remasking, mask_id)`` is d1's own method, read out of its trainer file (module docstring)."""
    path = root / "diffu-grpo" / "diffu_grpo_trainer.py"
    if not path.is_file():
        sys.exit(f"error: --publisher-code {root} has no diffu-grpo/diffu_grpo_trainer.py; give a checkout of dllm-reasoning/d1")
    tree = ast.parse(path.read_text(), filename=str(path))
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DiffuGRPOTrainer"), None)
    methods = [n for n in (cls.body if cls else []) if isinstance(n, ast.FunctionDef) and n.name in D1_METHODS]
    if len(methods) != len(D1_METHODS):
        sys.exit(f"error: {path} has no DiffuGRPOTrainer with {', '.join(D1_METHODS)}; is it d1's trainer?")
    shell = ast.Module(body=[ast.ClassDef(name="D1Rollout", bases=[], keywords=[], body=methods, decorator_list=[])],
                       type_ignores=[])
    namespace = {"torch": torch, "F": F, "np": np}
    exec(compile(ast.fix_missing_locations(shell), str(path), "exec"), namespace)
    obj = namespace["D1Rollout"]()
    obj.args = types.SimpleNamespace(fp16=False)
    return obj


def load_model(args):
    """(model, process, mask_id, eos_id, vocab): the fixture, or a random LLaDA-layout Llama."""
    from textdiff.lm import DiffusionLM
    from textdiff.models.modeling_bidirectional import DiffusionLlamaConfig, DiffusionLlamaModel
    from textdiff import build_process

    if args.model == "fixture":
        lm = DiffusionLM.from_pretrained(str(FIXTURE), device=args.device, dtype=args.torch_dtype)
        return lm.model.eval(), lm.process, lm.process.mask_id, lm.tokenizer.eos_token_id, lm.model.config.vocab_size
    V = args.vocab
    mask_id, eos_id = (126336, 126081) if V >= 126464 else (V - 2, V - 4)  # LLaDA's ids, or kept near the top
    torch.manual_seed(0)
    cfg = DiffusionLlamaConfig(mask_token_id=mask_id, vocab_size=V, hidden_size=args.d_model, intermediate_size=3 * args.d_model,
                               num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                               max_position_embeddings=4096, rope_theta=500000.0, initializer_range=0.5,
                               eos_token_id=eos_id, pad_token_id=eos_id)
    model = DiffusionLlamaModel(cfg).eval().to(device=args.device, dtype=args.torch_dtype)
    with torch.no_grad():
        model.lm_head.weight[mask_id] = 0.0  # [MASK] never the argmax (as the fixture)
    return model, build_process("masked", vocab_size=V, mask_id=mask_id), mask_id, eos_id, V


def modes(args):
    conf = {"name": "confidence", "ordering": "confidence", "commit_schedule": "linear"}
    thr = {"name": "threshold", "threshold": args.threshold}
    τ = args.temperature
    return [("greedy", 0.0, {**conf, "temperature": 0.0}, "none"),
            ("sampled", τ, {**conf, "temperature": τ}, "none"),
            ("sampled + dual cache", τ, {**conf, "temperature": τ}, "dual"),
            ("sampled + threshold + dual cache", τ, {**thr, "temperature": τ}, "dual")]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--publisher-code", required=True, type=Path, help="a checkout of dllm-reasoning/d1")
    ap.add_argument("--model", choices=["fixture", "random"], default="fixture")
    ap.add_argument("--vocab", type=int, default=126464, help="random model: vocabulary (LLaDA's by default)")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=2, help="distinct prompts per rollout batch")
    ap.add_argument("--num-generations", type=int, default=6, help="completions per prompt (d1: 6)")
    ap.add_argument("--prompt-length", type=int, default=16)
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default=None, help="results file stem (default: rl_rollouts_<model>)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    args.torch_dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    d1 = d1_rollout_code(args.publisher_code.expanduser().resolve())

    from textdiff import build_sampler
    from textdiff.rl.rollout import rollout, rollout_seeds

    model, process, mask_id, eos_id, V = load_model(args)
    g = torch.Generator().manual_seed(1)
    low = min(mask_id, eos_id) - 1  # ordinary tokens only
    prompts = torch.randint(0, low, (args.prompts, args.prompt_length), generator=g)  # equal lengths: no padding
    G, N, B = args.num_generations, args.gen_length, args.prompts * args.num_generations
    d1_prompt = prompts.repeat_interleave(G, 0).to(args.device)  # [B, P] the group layout d1's trainer feeds
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    started, rows = time.perf_counter(), []
    for name, temp, spec, cache in modes(args):
        sampler = build_sampler(spec, process)

        def ours(gen=N, steps=args.steps):
            return rollout(model, process, sampler, prompts.tolist(), rollout_seeds(0, 0, range(args.prompts), G),
                           num_generations=G, max_completion_length=gen, steps=steps, block_size=args.block,
                           use_cache=cache, stop_token_ids=[eos_id], pad_token_id=eos_id)

        def theirs(gen=N, steps=args.steps):
            torch.manual_seed(0)
            with torch.no_grad():
                return d1.generate(model, d1_prompt, steps=steps, gen_length=gen, block_length=args.block,
                                   temperature=temp, cfg_scale=0.0, remasking="low_confidence", mask_id=mask_id)

        one = args.steps // (N // args.block)
        warm = (lambda: theirs(args.block, one), lambda: ours(args.block, one))
        ((t_d1, med_d1), x_d1), ((t_td, med_td), out) = timed_pair(theirs, ours, args.repeats, sync, warm)
        a = x_d1[:, args.prompt_length:].cpu()
        row = {"mode": name, "d1_s": round(t_d1, 4), "textdiff_s": round(t_td, 4),
               "d1_tokens_per_s": round(B * N / t_d1, 1), "textdiff_tokens_per_s": round(B * N / t_td, 1),
               "speedup": round(t_d1 / t_td, 2), "speedup_median": round(med_d1 / med_td, 2), "textdiff_nfe": out.nfe}
        if temp == 0.0:
            # d1 writes every position; textdiff's canonical completions end at the first EOS: compare up to it
            mask = out.completion_mask.bool()
            agree = int((a[mask] == out.completion_ids[mask]).sum())
            row["tokens_identical"] = agree == int(mask.sum())
            row["tokens_agree"] = f"{agree}/{int(mask.sum())}"
            if not row["tokens_identical"] and args.torch_dtype == torch.float32:  # bf16 rounding may split near-ties
                sys.exit(f"error: greedy tokens differ between d1 and textdiff ({row['tokens_agree']} agree)")
        rows.append(row)
        print(json.dumps(row), flush=True)
    write(args, rows, model, V, B, time.perf_counter() - started)


def write(args, rows, model, V, B, seconds):
    n_params = sum(p.numel() for p in model.parameters())
    shape = ("tests/fixtures/published/llada (LLaDA layout, 2 layers, d 32, vocab 80)" if args.model == "fixture" else
             f"random LLaDA-layout Llama: {args.layers} layers, d {args.d_model}, vocab {V}")
    meta = {"model": f"{shape}, {n_params / 1e6:.2f}M parameters, {str(args.torch_dtype).split('.')[-1]}",
            "decoding": f"{args.prompts} prompts x {args.num_generations} generations = {B} rows, prompt {args.prompt_length}, "
                        f"gen_length {args.gen_length}, block {args.block}, steps {args.steps}, temperature {args.temperature} "
                        f"(greedy row: 0), threshold {args.threshold}",
            "command": "python " + " ".join(sys.argv), "device": args.device, "machine": machine(args.device),
            "threads": args.threads, "torch": torch.__version__, "repeats": args.repeats,
            "load_average": [round(x, 1) for x in os.getloadavg()], "total_seconds": round(seconds, 1),
            "publisher_code": "dllm-reasoning/d1 diffu-grpo/diffu_grpo_trainer.py: DiffuGRPOTrainer.generate, "
                              "get_num_transfer_tokens, add_gumbel_noise, run unchanged under torch.no_grad()"}
    keys = ["mode", "d1_s", "textdiff_s", "d1_tokens_per_s", "textdiff_tokens_per_s", "speedup", "speedup_median",
            "textdiff_nfe", "tokens_identical", "tokens_agree"]
    lines = [f"# RL rollouts: textdiff vs d1's rollout code ({meta['model']})", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']} ({meta['device']}, {meta['threads']} thread(s)), "
             f"torch {meta['torch']}, load average at the end {meta['load_average']} (a shared machine: compare ratios).  ",
             f"Decoding: {meta['decoding']}; best and median of {args.repeats} alternating runs after a one-block warm-up.  ",
             f"Publisher code: {meta['publisher_code']}.", "",
             "speedup = d1 seconds / textdiff seconds (best runs; speedup_median: of the medians); tokens/s = rows x gen_length / s. "
             "d1 has one decoder (no cache, no threshold): every row is the same d1 run at the same settings.", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "-")) for k in keys) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        stem = args.name or f"rl_rollouts_{args.model}"
        (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        (RESULTS / f"{stem}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
