"""Exact-match accuracy of an SFT model on fresh synthetic tasks (textdiff.sft.synthetic_examples).

    textdiff eval sft runs/sft-quickstart/final --per-task 50 --seed 12345

The prompts come from a seed the training run did not use, so most are unseen; the answer is the
generated text up to the first EOS, compared with the reference response after stripping spaces.

SFT rows are always ``data.seq_len`` long (prompt, response, EOS padding), and a small model learns to
rely on that length. By default each prompt therefore gets ``seq_len - len(prompt)`` new positions
(prompts are generated in groups of equal token length); ``--max-new-tokens N`` uses N for all.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Optional

from ..errors import ConfigError

TASKS = ("next", "count", "add", "copy", "reverse")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("model", help="the SFT model folder, e.g. runs/sft-quickstart/final")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), help=f"synthetic tasks (default: {' '.join(TASKS)})")
    p.add_argument("--per-task", type=int, default=50, help="prompts per task")
    p.add_argument("--seed", type=int, default=12345, help="the prompts' seed (one the training run did not use)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: fill each row to the model's seq_len")
    p.add_argument("--steps", type=int, default=None, help="default: one per new token")
    p.add_argument("--sampler", default="confidence", help="decoded greedily (temperature 0)")
    p.add_argument("--block-size", type=int, default=None, help="semi-autoregressive blocks (LLaDA-style)")
    return p


def sft_accuracy(lm, tasks=TASKS, per_task: int = 50, seed: int = 12345, max_new_tokens: Optional[int] = None,
                 steps: Optional[int] = None, sampler: str = "confidence", block_size: Optional[int] = None) -> dict:
    """{task: exact-match accuracy, ..., "all": overall} of ``lm`` decoding greedily."""
    from ..sft import synthetic_examples

    tasks = list(tasks)
    if per_task < 1:
        raise ConfigError(f"--per-task {per_task} must be at least 1")
    examples = synthetic_examples(tasks, per_task * len(tasks), seed)
    lengths = [len(lm.tokenizer(e["prompt"], add_special_tokens=False)["input_ids"]) for e in examples]
    groups = defaultdict(list)  # new positions -> example indices
    for i, n in enumerate(lengths):
        groups[max_new_tokens or (lm.seq_len - n)].append(i)
    texts = [None] * len(examples)
    for new, members in groups.items():
        out = lm.generate([examples[i]["prompt"] for i in members], max_new_tokens=new, steps=steps or new,
                          sampler=sampler, temperature=0.0, seed=0, block_size=block_size)
        for i, text in zip(members, out):
            texts[i] = text
    correct, total = defaultdict(int), defaultdict(int)
    for i, (e, text) in enumerate(zip(examples, texts)):
        task = tasks[i % len(tasks)]
        answer = text[len(lm.tokenizer.decode(lm.tokenizer(e["prompt"], add_special_tokens=False)["input_ids"])):]
        total[task] += 1
        correct[task] += int(answer.strip() == e["response"].strip())
    result = {t: correct[t] / total[t] for t in tasks}
    result["all"] = sum(correct.values()) / sum(total.values())
    return result


def main(argv=None, parser_class=argparse.ArgumentParser) -> dict:
    """``textdiff eval sft MODEL [--per-task N ...]``: prints the accuracies as JSON."""
    from ..lm import DiffusionLM

    args = add_arguments(parser_class(prog="textdiff eval sft", description=__doc__.splitlines()[0])).parse_args(argv)
    lm = DiffusionLM.from_pretrained(args.model)
    result = sft_accuracy(lm, args.tasks, args.per_task, args.seed, args.max_new_tokens, args.steps, args.sampler,
                          args.block_size)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
