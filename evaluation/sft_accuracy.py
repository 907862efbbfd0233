"""Exact-match accuracy of an SFT model on fresh synthetic tasks (textdiff.sft.synthetic_examples).

    python -m evaluation.sft_accuracy runs/sft-quickstart/final --per-task 50 --seed 12345

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


def main(argv=None) -> dict:
    from textdiff import DiffusionLM
    from textdiff.sft import synthetic_examples

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--tasks", nargs="+", default=["next", "count", "add", "copy", "reverse"])
    p.add_argument("--per-task", type=int, default=50)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: fill each row to the model's seq_len")
    p.add_argument("--steps", type=int, default=None, help="default: one per new token")
    p.add_argument("--sampler", default="confidence")
    p.add_argument("--block-size", type=int, default=None, help="semi-autoregressive blocks (LLaDA-style)")
    args = p.parse_args(argv)

    lm = DiffusionLM.from_pretrained(args.model)
    examples = synthetic_examples(args.tasks, args.per_task * len(args.tasks), args.seed)
    lengths = [len(lm.tokenizer(e["prompt"], add_special_tokens=False)["input_ids"]) for e in examples]
    groups = defaultdict(list)  # new positions -> example indices
    for i, n in enumerate(lengths):
        groups[args.max_new_tokens or (lm.seq_len - n)].append(i)
    texts = [None] * len(examples)
    for new, members in groups.items():
        out = lm.generate([examples[i]["prompt"] for i in members], max_new_tokens=new, steps=args.steps or new,
                          sampler=args.sampler, temperature=0.0, seed=0, block_size=args.block_size)
        for i, text in zip(members, out):
            texts[i] = text
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
