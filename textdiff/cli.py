"""The ``textdiff`` command line: ``train``, ``generate``, ``score``, ``convert``, ``serve``, ``eval``, ``lm-eval``,
``recipes``, ``list``.

User mistakes print one line ``error: ...`` and exit with status 2, never a traceback. Progress goes
to stderr: a bar on a terminal, a plain line every 30 s in a log (``textdiff.progress``); ``--quiet``
hides it. JSON output is UTF-8 (not escaped).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import TextDiffError


def _cmd_train(args) -> None:
    from .config import load_recipe
    from .training.loop import train

    recipe = load_recipe(args.recipe, args.overrides)
    final = train(recipe, resume=args.resume, overwrite=args.overwrite)
    from accelerate import PartialState

    if PartialState().is_main_process:  # under DDP every process returns here; one line
        print(f"saved {final}")


def _read_prompts(args) -> list:
    """Strings, or chats (lists of messages) with ``--chat`` / ``--messages-file``."""
    prompts = list(args.prompt or [])
    if args.prompt_file:
        prompts += read_prompt_file(args.prompt_file)
    if args.chat:  # each prompt is one user turn, through the model's chat template
        if not prompts:
            raise TextDiffError("--chat needs the user's messages: --prompt TEXT (repeatable) or --prompt-file FILE")
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    if args.messages_file:
        from .cli_commands import read_messages_file

        prompts += read_messages_file(args.messages_file)
    return prompts or [""]


def read_prompt_file(name: str) -> list[str]:
    """Prompts of a ``.txt`` file (one per non-blank line) or a ``.jsonl`` file ({"prompt": ...} per line)."""
    path = Path(name)
    if not path.exists():
        raise TextDiffError(f"prompt file {name!r} does not exist")
    if not path.is_file():
        raise TextDiffError(f"prompt file {name!r} is not a file; give a .txt or .jsonl file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TextDiffError(f"prompt file {name!r} is not UTF-8 text") from None
    prompts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line)
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise TextDiffError(f"{name}:{n}: not valid JSON ({getattr(e, 'msg', e)}); each line must be {{\"prompt\": \"...\"}}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise TextDiffError(f"{name}:{n}: each line must be an object with a string \"prompt\", got {line.strip()[:60]}")
        prompts.append(row["prompt"])
    if not prompts:
        raise TextDiffError(f"prompt file {name!r} holds no prompts")
    return prompts


def _check_output(name) -> None:
    """``--output`` must name a file whose folder exists (checked before any work)."""
    if name is None:
        return
    path = Path(name)
    if path.is_dir():
        raise TextDiffError(f"--output {name!r} is a folder; give a file name")
    if not path.parent.is_dir():
        raise TextDiffError(f"--output {name!r}: folder {str(path.parent)!r} does not exist; create it first")


def _write_atomically(name: str, text: str) -> None:
    """Write ``text`` to a temporary sibling and rename it: no half-written output on failure."""
    path = Path(name)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_lm(args):
    """The model of ``--model`` with the caller's loading flags (nothing in the folder decides them)."""
    from .lm import DiffusionLM

    import torch

    dtype = getattr(args, "dtype", None)
    return DiffusionLM.from_pretrained(args.model, device=args.device, tokenizer=args.tokenizer,
                                       trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle,
                                       dtype=getattr(torch, dtype) if dtype else None,
                                       device_map=_device_map_flag(args.device_map),
                                       max_memory=_max_memory_flag(args.max_memory), offload_folder=args.offload_folder)


def _device_map_flag(text):
    """--device-map: a strategy / device name, or a JSON object module -> device."""
    if text is None or not text.lstrip().startswith("{"):
        return text
    try:
        value = json.loads(text)
    except ValueError as e:
        raise TextDiffError(f"--device-map {text!r} is not a JSON object ({e}); e.g. '{{\"\": \"cpu\", \"model.layers.1\": \"disk\"}}'") from None
    return {k: int(v) if isinstance(v, str) and v.isdigit() else v for k, v in value.items()}


def _max_memory_flag(text):
    """--max-memory 0=20GiB,cpu=60GiB -> {0: "20GiB", "cpu": "60GiB"}."""
    if text is None:
        return None
    out = {}
    for part in text.split(","):
        key, sep, size = part.partition("=")
        if not sep or not key.strip() or not size.strip():
            raise TextDiffError(f"--max-memory {text!r}: write DEVICE=SIZE pairs separated by commas, e.g. 0=20GiB,cpu=60GiB")
        key = key.strip()
        out[int(key) if key.isdigit() else key] = size.strip()
    return out


def _cmd_generate(args) -> None:
    from .arguments import device

    if args.num_samples < 1:
        raise TextDiffError(f"--num-samples {args.num_samples} must be at least 1")
    _check_output(args.output)
    device(args.device)
    prompts = _read_prompts(args)  # before the model loads: a bad prompt file costs nothing
    options = _sampler_options(args.sampler_option)
    lm = _load_lm(args)
    from .bounds import check_memory, logit_bytes

    check_memory(len(prompts) * args.num_samples, min(args.block_size or args.max_new_tokens, args.max_new_tokens),
                 lm.process.vocab_size, lm.device, "use a smaller --num-samples or fewer prompts", logit_bytes(lm.model))
    from .lm import _sampler_options as named_options
    from .samplers.base import describe_sampler

    options = named_options(options, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    block_size, _, options = lm.cache_rules(args.cache, args.block_size, options)  # Dream's caches: Fast-dLLM's rules
    sampler = lm.sampler_config_for(args.sampler, **options)
    announce = None
    if not args.quiet:  # what decodes, in one line, once decoding starts (after every check): a switch of
        line = describe_sampler(sampler, sampler.kept, lm.sampler_config.name)  # sampler never silently resets an option

        def announce(info, shown=[]):
            if not shown:
                shown.append(print(line, file=sys.stderr))
    prompts = [p for p in prompts for _ in range(args.num_samples)]
    texts, out = lm.generate(
        prompts, max_new_tokens=args.max_new_tokens, steps=args.steps, sampler=sampler, seed=args.seed,
        block_size=block_size, return_output=True, guidance_weight=args.guidance,
        guidance_uncond=args.guidance_uncond,
        use_cache=args.cache, progress=None if not args.quiet else False, callback=announce,
    )
    chunks = []
    for i, (prompt, text) in enumerate(zip(prompts, texts)):
        if args.format == "jsonl":
            chunks.append(json.dumps({"prompt": prompt, "text": text, "new_tokens": out.lengths[i]}, ensure_ascii=False) + "\n")
        else:
            chunks.append(text + ("\n" + "-" * 40 + "\n" if i < len(texts) - 1 else "\n"))
    if args.output:
        _write_atomically(args.output, "".join(chunks))
    else:
        sys.stdout.write("".join(chunks))
    positions = len(texts) * args.max_new_tokens
    print(f"[{len(texts)} samples, {out.nfe} denoiser steps (NFE), {out.model_calls} network forwards, "
          f"{out.seconds:.2f} s, {positions / max(out.seconds, 1e-9):,.1f} tokens/s]", file=sys.stderr)


def _sampler_options(items) -> dict:
    """``["threshold=0.8", "ordering=margin"]`` -> ``{"threshold": 0.8, "ordering": "margin"}``."""
    import yaml

    options = {}
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise TextDiffError(f"--sampler-option {item!r} must look like key=value, e.g. threshold=0.8")
        key, raw = item.split("=", 1)
        try:
            options[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            options[key.strip()] = raw
    return options


def _cmd_score(args) -> None:
    from .arguments import device

    if not args.text and not args.file:
        raise TextDiffError("give the texts to score with --text TEXT (repeatable) or --file FILE")
    if args.t_samples < 1:
        raise TextDiffError(f"--t-samples {args.t_samples} must be at least 1")
    device(args.device)
    texts = list(args.text or [])
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise TextDiffError(f"--file {args.file!r} does not exist" if not path.exists() else f"--file {args.file!r} is not a file")
        try:
            texts += [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except UnicodeDecodeError:
            raise TextDiffError(f"--file {args.file!r} is not UTF-8 text") from None
        if not texts:
            raise TextDiffError(f"--file {args.file!r} holds no text (one text per non-blank line)")
    if args.per_token and args.format != "jsonl":
        raise TextDiffError("--per-token writes lists per text; use it with --format jsonl")
    lm = _load_lm(args)
    scores = lm.score(texts, t_samples=args.t_samples, seed=args.seed, progress=None if not args.quiet else False)
    from .cli_commands import print_scores

    print_scores(lm, texts, scores, args)


def _cmd_convert(args) -> None:
    """A published checkpoint (or any loadable folder) -> a native textdiff folder (safetensors)."""
    from .models.format import check_target

    # before the (maybe long) load: never the source, a file, the working folder or a folder the user did not ask to replace
    check_target(args.dst, "model", overwrite=args.overwrite, sources=[args.model], what="DST", flag="--overwrite")
    if args.to == "published":
        from .models.loading import resolve_model_path
        from .models.published.export import write_published

        if args.dtype is not None:
            raise TextDiffError("--to published writes the tensors as they are stored; drop --dtype")
        write_published(resolve_model_path(args.model), args.dst, overwrite=args.overwrite)
        print(f"saved {args.dst} in the publisher's layout (config.json and tensors as published)")
        return
    lm = _load_lm(args)  # --dtype: cast as each tensor is read
    lm.save_pretrained(args.dst, overwrite=args.overwrite)
    print(f"saved {args.dst} (loads with DiffusionLM.from_pretrained, no converter needed)")


def _cmd_serve(args) -> None:
    """An OpenAI-compatible HTTP server for the model (textdiff.serve; needs textdiff[serve])."""
    from .serve import require_extra

    require_extra()  # before the model loads
    from .serve.admission import ServeOptions
    from .serve.server import serve

    for flag in ("max_batch", "max_tokens_in_flight", "max_queue", "default_max_tokens"):
        if getattr(args, flag) < 1:
            raise TextDiffError(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be at least 1")
    for flag in ("request_timeout", "shutdown_timeout"):
        if not getattr(args, flag) > 0:
            raise TextDiffError(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be a positive number of seconds")
    api_key = args.api_key or os.environ.get("TEXTDIFF_API_KEY") or None
    name = args.model_name or args.model
    options = ServeOptions(model_name=name, api_key=api_key, max_batch=args.max_batch,
                           max_tokens_in_flight=args.max_tokens_in_flight, max_queue=args.max_queue,
                           request_timeout=args.request_timeout, shutdown_timeout=args.shutdown_timeout,
                           default_max_tokens=args.default_max_tokens, exact_batching=args.exact_batching)
    lm = _load_lm(args)
    print(f"serving {name!r} on http://{args.host}:{args.port}/v1 (OpenAI API; /health, /metrics)", file=sys.stderr)
    serve(lm, options, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")


def _add_loading_flags(parser) -> None:
    parser.add_argument("--device", default=None)
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder or hub id, for published checkpoints that ship none (default: the family's)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow transformers to run the folder's modeling code (external networks only; never needed for "
                             "textdiff or the published families)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read *.bin weights with torch.load(weights_only=True) (refused by default)")
    parser.add_argument("--device-map", default=None,
                        help="spread a large model (LLaDA / Dream) over devices: auto, balanced, balanced_low_0, sequential, "
                             "cpu, or a JSON object module -> device ('cpu', 'cuda:0', 0, 'disk'); instead of --device")
    parser.add_argument("--max-memory", default=None, help="with --device-map auto: DEVICE=SIZE pairs, e.g. 0=20GiB,cpu=60GiB")
    parser.add_argument("--offload-folder", default=None, help="where --device-map puts its 'disk' part")


def _cmd_list(args) -> None:
    from .models import published
    from .registry import available

    for kind in ("process", "schedule", "sampler"):
        print(f"{kind}: {', '.join(available(kind))}")
    print(f"family: {', '.join(published.available())}")


def _cmd_eval(args) -> None:
    from .harness.run import main as run_suite  # package code only: nothing from the working directory

    run_suite([args.suite, *args.overrides], progress=None if not args.quiet else False, overwrite=args.overwrite)


def _cmd_recipes(args) -> None:
    from .cli_commands import cmd_recipes

    cmd_recipes(args)


def lm_eval_main(argv: list[str]) -> None:
    """``textdiff lm-eval ARGS``: lm-eval's own CLI with the ``textdiff`` model registered; every
    argument goes to lm-eval unchanged (``--model textdiff`` is added when no --model is given)."""
    from .eval.common import require

    require("lm_eval", "lmeval", "textdiff lm-eval")
    from .models.auto import register_auto_classes

    register_auto_classes()
    from .eval import lm_eval_adapter  # noqa: F401  (registers the model name "textdiff")

    argv = list(argv)
    listing = bool(argv) and argv[0] in ("ls", "list", "validate", "-h", "--help")
    if not listing and not any(a == "--model" or a.startswith("--model=") for a in argv):
        argv = ["--model", "textdiff", *argv]
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes are one line ``error: ...`` on stderr and exit status 2, like every other."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="textdiff", description="Train, sample from and evaluate discrete text diffusion LMs.")
    p.add_argument("--version", action="version", version=f"textdiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe (YAML) with key=value overrides")
    t.add_argument("recipe", help="a recipe YAML, or the name of a shipped recipe (textdiff recipes), e.g. quickstart")
    t.add_argument("overrides", nargs="*", default=[], help="section.key=value overrides, e.g. train.lr=1e-4")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run folder output_dir with a fresh run (only a run folder textdiff wrote)")
    t.set_defaults(func=_cmd_train)

    _add_generate(sub)

    s = sub.add_parser("score", help="NELBO (nats) of texts under a saved model")
    s.add_argument("--model", required=True)
    s.add_argument("--text", action="append", help="a text to score (repeatable)")
    s.add_argument("--file", help="texts to score, one per non-blank line")
    s.add_argument("--t-samples", type=int, default=32, help="draws of t per text (stratified)")
    s.add_argument("--seed", type=int, default=0, help="text i uses seed + i")
    s.add_argument("--format", choices=["jsonl", "text"], default="jsonl",
                   help="jsonl: {\"text\", \"nelbo\"} per line (default); text: NELBO<TAB>text per line")
    s.add_argument("--per-token", action="store_true",
                   help="with --format jsonl: each token's NELBO term (nats; they add up with \"prior\" to \"nelbo\")")
    _add_loading_flags(s)
    s.add_argument("--quiet", action="store_true", help="no progress (bar or log lines)")
    s.set_defaults(func=_cmd_score)

    c = sub.add_parser("convert", help="write a published checkpoint (MDLM, BD3-LM, SEDD, DUO, LLaDA, Dream) as a textdiff folder")
    c.add_argument("model", metavar="SRC", help="the published folder (or hub id)")
    c.add_argument("dst", metavar="DST", help="the textdiff folder to write")
    c.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="cast the weights before saving")
    c.add_argument("--to", choices=["textdiff", "published"], default="textdiff",
                   help="published: write a folder converted from a block-causal family other engines serve "
                        "(LLaDA 2.0) back in its publisher's layout, for SGLang / vLLM")
    c.add_argument("--overwrite", action="store_true",
                   help="replace DST if it is a model folder textdiff wrote (never the source, a file or the working folder)")
    _add_loading_flags(c)
    c.set_defaults(func=_cmd_convert)

    _add_serve(sub)

    e = sub.add_parser("eval", help="run an evaluation suite: a YAML file or a shipped one (quickstart, zero_shot, "
                                    "process_comparison); `textdiff eval sft MODEL` scores an SFT model's exact-match accuracy")
    e.add_argument("suite", help="a suite YAML, or the name of a shipped suite, e.g. quickstart")
    e.add_argument("overrides", nargs="*", default=[], help="dotted key=value overrides, e.g. models.0.path=runs/x/final output_dir=runs/eval/x")
    e.add_argument("--quiet", action="store_true", help="no progress (bars or log lines)")
    e.add_argument("--overwrite", action="store_true", help="replace the suite's output_dir if it is a report folder textdiff wrote")
    e.set_defaults(func=_cmd_eval)

    sub.add_parser("lm-eval", add_help=False,
                   help="lm-evaluation-harness's own CLI with the textdiff model registered; every argument "
                        "passes through, e.g. --model_args pretrained=runs/x/final --tasks lambada_openai")

    r = sub.add_parser("recipes", help="list the shipped recipes; `recipes show NAME` prints one, `recipes path NAME` its file")
    r.add_argument("action", nargs="?", choices=["list", "show", "path"], default="list")
    r.add_argument("name", nargs="?", help="a shipped recipe, e.g. quickstart or accelerate/ddp")
    r.set_defaults(func=_cmd_recipes)

    ls = sub.add_parser("list", help="list registered processes, schedules and samplers")
    ls.set_defaults(func=_cmd_list)
    p.commands = {name: parser for name, parser in sub.choices.items() if name != "lm-eval"}
    return p


def _add_generate(sub) -> None:
    """``textdiff generate``'s flags."""
    g = sub.add_parser("generate", help="sample text from a saved model")
    g.add_argument("--model", required=True, help="a model folder (a run's final/, a published checkpoint) or hub id")
    g.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    g.add_argument("--prompt-file", help="prompts, one per line (.txt) or {'prompt': ...} per line (.jsonl)")
    g.add_argument("--chat", action="store_true",
                   help="each prompt is a user message, sent through the model's chat template (instruct models); "
                        "the output is the answer")
    g.add_argument("--messages-file", help="chats, one {\"messages\": [{\"role\": ..., \"content\": ...}]} per line (.jsonl)")
    g.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--steps", type=int, default=None, help="sampler steps (default: max-new-tokens)")
    g.add_argument("--sampler", default=None,
                   help="sampler name (default: the model's saved sampler; another name keeps the saved options it shares, "
                        "e.g. temperature)")
    g.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's saved sampler's)")
    g.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default: the saved sampler's)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus mass in (0, 1] (default: the saved sampler's)")
    g.add_argument("--block-size", type=int, default=None,
                   help="decode blocks of this many tokens left to right (default: the model's, e.g. 32 for LLaDA; one window otherwise)")
    g.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i (repeatable, batch-invariant)")
    g.add_argument("--sampler-option", action="append", metavar="KEY=VALUE",
                   help="any field of the chosen sampler's config, e.g. temperature=0, threshold=0.8 or ordering=margin (repeatable; "
                        "the model's saved options that apply to the chosen sampler are kept unless given)")
    g.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight w (0 = none)")
    g.add_argument("--guidance-uncond", choices=["mask", "drop"], default="mask",
                   help="unconditional branch: prompt replaced by [MASK] or hidden from attention")
    g.add_argument("--cache", choices=["auto", "none", "exact", "prefix", "dual"], default="auto",
                   help="KV cache mode for block-wise decoding (prefix/dual are approximate; Dream's take Fast-dLLM's "
                        "rules: blocks of 32, first_commit=leftmost, lookback 0, unless given)")
    g.add_argument("--format", choices=["text", "jsonl"], default="text")
    g.add_argument("--output", help="write samples here instead of stdout")
    _add_loading_flags(g)
    g.add_argument("--quiet", action="store_true", help="no progress (bar or log lines)")
    g.set_defaults(func=_cmd_generate)


def _add_serve(sub) -> None:
    """``textdiff serve``'s flags."""
    v = sub.add_parser("serve", help="serve a model over HTTP with OpenAI's completions / chat API (pip install 'textdiff[serve]')")
    v.add_argument("model", metavar="MODEL", help="a model folder (a run's final/, a published checkpoint) or hub id")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--model-name", default=None, help="the name clients pass as 'model' (default: MODEL as given)")
    v.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 (or set TEXTDIFF_API_KEY)")
    v.add_argument("--max-batch", type=int, default=8, help="rows decoded together")
    v.add_argument("--max-tokens-in-flight", type=int, default=8192,
                   help="positions (prompt + answer, padded) of the rows decoded together")
    v.add_argument("--max-queue", type=int, default=64, help="rows waiting; beyond it requests get 429 with Retry-After")
    v.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request; then 408")
    v.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="on SIGINT / SIGTERM: seconds running rows get to finish before they are cancelled")
    v.add_argument("--default-max-tokens", type=int, default=64, help="answer length when a request gives no max_tokens")
    v.add_argument("--exact-batching", action="store_true",
                   help="merged forwards give every row the same bits as alone (rows padded to widths of 32, "
                        "all logits computed; slower): the default agrees to float32 rounding")
    _add_loading_flags(v)
    v.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="cast the weights when loading")
    v.add_argument("--quiet", action="store_true", help="only warnings in the log")
    v.set_defaults(func=_cmd_serve)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, flags anywhere: ``train quickstart a=1 --resume b=2`` is one recipe, two
    overrides and a flag (each command parses intermixed; argparse's own ``parse_args`` would stop the
    overrides at the first flag)."""
    parser = build_parser()
    if argv and argv[0] in parser.commands:
        args = parser.commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


#: the libraries each command uses whose own progress bars it silences (only those are imported:
#: ``textdiff generate`` never pays for importing datasets, ``textdiff list`` for transformers)
USES = {"train": ("transformers", "datasets"), "eval": ("transformers", "datasets"), "generate": ("transformers",),
        "score": ("transformers",), "convert": ("transformers",)}


def _quiet_libraries(command: str) -> None:
    """No per-shard / per-map progress bars from transformers and datasets: the CLI prints its own."""
    uses = USES.get(command, ())
    try:
        if "transformers" in uses:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        if "datasets" in uses:
            import datasets

            datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "lm-eval":  # lm-eval parses its own arguments
        try:
            lm_eval_main(argv[1:])
        except TextDiffError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if argv[:2] == ["eval", "sft"]:  # the SFT accuracy evaluation parses its own flags
        from .eval.sft_accuracy import main as sft_main

        _quiet_libraries("generate")
        try:
            sft_main(argv[2:], parser_class=_Parser)
        except TextDiffError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    args = parse_args(argv)
    _quiet_libraries(args.command)
    try:
        args.func(args)
    except TextDiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is intact (resume with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
