"""The embedded default corpus: real English prose that ships with every CPython install.

Two sources, both read without a download and without executing any code:

* ``pydoc_data.topics``: the reference-manual sections that ``help()`` shows (about 0.5 M characters);
* the docstrings of the pure-Python standard library, read by parsing each module's source with
  ``ast`` (never importing it); one document per module (module, class and function docstrings).

Tests, idle and similar packages are skipped. Order is deterministic (sorted paths), so every machine
with the same Python version builds the same corpus.
"""
from __future__ import annotations

import ast
import functools
import json
import os
import sys
import sysconfig
import textwrap
from pathlib import Path

CORPUS_VERSION = 1  # bump when the extraction rules change
_SKIP_PARTS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo",
               "ensurepip", "pydoc_data", "__pycache__", "encodings"}


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= 40:  # skip one-word stubs
                docs.append(doc.strip())
    return docs


def _stdlib_documents(min_chars: int = 200) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        if _SKIP_PARTS & set(path.relative_to(root).parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        doc = "\n\n".join(_docstrings(text))
        if len(doc) >= min_chars:
            out.append(doc)
    return out


def _topic_documents() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        return []
    return [textwrap.dedent(topics[k]).strip() for k in sorted(topics)]


def _cache_file() -> Path:
    root = Path(os.environ.get("TEXTDIFF_CACHE", Path.home() / ".cache" / "textdiff"))
    version = "{}.{}.{}".format(*sys.version_info[:3])
    return root / f"embedded-corpus-py{version}-v{CORPUS_VERSION}.json"


@functools.lru_cache(maxsize=1)
def embedded_documents() -> tuple[str, ...]:
    """All documents of the embedded corpus (deterministic order).

    Parsing the standard library takes a few seconds, so the result is kept as JSON in
    ``~/.cache/textdiff`` (``TEXTDIFF_CACHE`` overrides), keyed by the Python version.
    """
    path = _cache_file()
    try:
        docs = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(docs, list) and docs:
            return tuple(docs)
    except (OSError, ValueError):
        pass
    docs = [d for d in _topic_documents() + _stdlib_documents() if d.strip()]
    try:  # write-then-rename: a concurrent reader never sees half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(docs), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home is fine: we just parse again next time
    return tuple(docs)
