"""The user-path commands of the ``textdiff`` CLI beside :mod:`textdiff.cli`: the shipped recipes
(``textdiff recipes``), chats from a file (``generate --messages-file``) and ``score``'s output
formats. Errors are one-line :class:`~textdiff.errors.TextDiffError` s (exit status 2)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import TextDiffError


def cmd_recipes(args) -> None:
    """``textdiff recipes``: the shipped recipes (package data); ``show NAME`` prints one, ``path NAME`` its file."""
    from .shipped import shipped_recipe, shipped_recipes, summary

    if args.action == "list":
        if args.name is not None:
            raise TextDiffError(f"textdiff recipes takes no name; use `textdiff recipes show {args.name}`")
        names = shipped_recipes()
        width = max(len(n) for n in names)
        for name in names:
            print(f"{name:<{width}}  {summary(shipped_recipe(name))}")
        print("(textdiff train NAME trains one from any folder; textdiff recipes show NAME > my.yaml gives a copy to edit)")
        return
    if args.name is None:
        raise TextDiffError(f"textdiff recipes {args.action} needs a recipe name, e.g. textdiff recipes {args.action} quickstart")
    path = shipped_recipe(args.name)
    print(path.read_text(encoding="utf-8"), end="") if args.action == "show" else print(path)


def read_messages_file(name: str) -> list[list[dict]]:
    """Chats of a ``.jsonl`` file: one ``{"messages": [{"role": ..., "content": ...}, ...]}`` per line."""
    path = Path(name)
    if not path.is_file():
        raise TextDiffError(f"--messages-file {name!r} " + ("is not a file" if path.exists() else "does not exist"))
    chats = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TextDiffError(f"--messages-file {name!r} is not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise TextDiffError(f"{name}:{n}: not valid JSON ({getattr(e, 'msg', e)}); each line must be "
                                '{"messages": [{"role": "user", "content": "..."}]}') from None
        messages = row.get("messages") if isinstance(row, dict) else None
        if (not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages)):
            raise TextDiffError(f'{name}:{n}: each line must be {{"messages": [{{"role": ..., "content": ...}}, ...]}} '
                                f"with string roles and contents, got {line.strip()[:60]}")
        chats.append(messages)
    if not chats:
        raise TextDiffError(f"--messages-file {name!r} holds no chats")
    return chats


def print_scores(lm, texts: list, scores: list, args) -> None:
    """``textdiff score``'s output: ``--format jsonl`` (``{"text", "nelbo"}`` per line, with
    ``--per-token`` each token's NELBO term from the same draws) or ``--format text``."""
    for i, (text, nelbo) in enumerate(zip(texts, scores)):
        if args.format == "text":
            print(f"{nelbo:.4f}\t{text}")
            continue
        row = {"text": text, "nelbo": nelbo}
        if args.per_token:  # the same draws as score's (seed, row i): the terms add up to its NELBO
            from .eval.token_terms import token_nelbo_terms

            terms = token_nelbo_terms(lm, text, t_samples=args.t_samples, seed=args.seed, row=i)
            row.update({k: terms[k] for k in ("tokens", "token_ids", "nelbo_terms", "prior")})
        print(json.dumps(row, ensure_ascii=False))


