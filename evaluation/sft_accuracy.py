"""Exact-match accuracy of an SFT model on fresh synthetic tasks (textdiff.sft.synthetic_examples).

    python -m evaluation.sft_accuracy runs/sft-quickstart/final --per-task 50 --seed 12345

The prompts come from a seed the training run did not use, so most are unseen; the answer is the
generated text up to the first EOS, compared with the reference response after stripping spaces.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict


def main(argv=None) -> dict:
    from textdiff import DiffusionLM
    from textdiff.sft import synthetic_examples

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--tasks", nargs="+", default=["next", "count", "add", "copy", "reverse"])
    p.add_argument("--per-task", type=int, default=50)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--sampler", default="confidence")
    p.add_argument("--block-size", type=int, default=None, help="semi-autoregressive blocks (LLaDA-style)")
    args = p.parse_args(argv)

    lm = DiffusionLM.from_pretrained(args.model)
    examples = synthetic_examples(args.tasks, args.per_task * len(args.tasks), args.seed)
    prompts = [e["prompt"] for e in examples]
    texts = lm.generate(prompts, max_new_tokens=args.max_new_tokens, steps=args.steps, sampler=args.sampler,
                        temperature=0.0, seed=0, block_size=args.block_size)
    correct, total = defaultdict(int), defaultdict(int)
    for i, (e, text) in enumerate(zip(examples, texts)):
        task = args.tasks[i % len(args.tasks)]
        answer = text[len(lm.tokenizer.decode(lm.tokenizer(e["prompt"], add_special_tokens=False)["input_ids"])):]
        total[task] += 1
        correct[task] += int(answer.strip() == e["response"].strip())
    result = {t: correct[t] / total[t] for t in args.tasks}
    result["all"] = sum(correct.values()) / sum(total.values())
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
