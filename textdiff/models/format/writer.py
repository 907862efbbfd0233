"""Writing a folder without destroying what the user did not name.

Every folder textdiff writes (a model folder by ``save_pretrained``, ``textdiff convert`` or a
training run's ``final/``, an evaluation report, a run folder) follows one rule set:

* it is written into a new temporary sibling ``.tmp-<name>-<id>`` (``<id>``: this writer's unique
  id) and renamed into place once complete, so a failure or a kill never leaves a half-written target;
* a target that does not exist, or is an empty folder, is created; an existing one is refused with a
  one-line error unless the caller asked to overwrite (``overwrite=True`` / ``--overwrite``), and even
  then only a folder that textdiff wrote, of the same kind, is replaced: one holding textdiff's
  marker file ``.textdiff-folder.json`` (``{"written_by": "textdiff", "kind": ..., "id": ...}``);
* never a file, a symbolic link (dangling or not), the source being converted or saved (nor a folder
  inside it or holding it), or the working folder (nor a folder holding it);
* cleanup removes only entries whose names carry this writer's id (a run folder's id persists in its
  marker, so a resumed run removes what its killed predecessor left, and nothing else);
* an unwritable destination is a one-line error, not a traceback.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from ...errors import ConfigError

MARKER = ".textdiff-folder.json"  # in every folder textdiff writes: who wrote it and what it is
KINDS = ("model", "run", "eval")
PathLike = Union[str, Path]


def new_id() -> str:
    """A name part no other writer uses: this process's id and a random suffix."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def temp_sibling(target: Path, writer_id: str, role: str = "tmp") -> Path:
    """``.<role>-<name>-<id>`` beside ``target`` (role: ``tmp`` = being written, ``old`` = being replaced)."""
    return target.parent / f".{role}-{target.name}-{writer_id}"


def carries_id(name: str, writer_id: str) -> bool:
    """True when ``name`` is a temporary entry (:func:`temp_sibling`) of the writer ``writer_id``
    (or of a writer whose id starts with it followed by ``-``: a run's id and one of its processes)."""
    return re.fullmatch(rf"\.(?:tmp|old)-.+-{re.escape(writer_id)}(?:-[0-9a-f]+)*", name) is not None


def read_marker(folder: Path) -> Optional[dict]:
    """The marker of a folder textdiff wrote, or None."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("written_by") == "textdiff" else None


def write_marker(folder: Path, kind: str, writer_id: str) -> dict:
    """Write the marker into ``folder`` (atomically: a kill never leaves a half-written one)."""
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}; one of {KINDS}")
    marker = {"written_by": "textdiff", "kind": kind, "id": writer_id}
    tmp = temp_sibling(Path(folder) / MARKER, writer_id)
    tmp.write_text(json.dumps(marker) + "\n", encoding="utf-8")
    os.replace(tmp, Path(folder) / MARKER)
    return marker


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _empty(folder: Path) -> bool:
    return not any(folder.iterdir())


def check_target(target: PathLike, kind: str, overwrite: bool = False, sources: Iterable[PathLike] = (),
                 what: str = "destination", flag: str = "overwrite=True (CLI: --overwrite)") -> Path:
    """Refuse, with one line, a target this writer may not create or replace (module docstring).
    Nothing is written here: call it before any work."""
    target = Path(target).expanduser()
    name = str(target)
    if target.is_symlink():
        dangling = "a dangling symbolic link" if not target.exists() else "a symbolic link"
        raise ConfigError(f"{what} {name!r} is {dangling} (to {os.readlink(target)!r}); textdiff does not write through "
                          "links it would replace: give a real folder name")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{what} {name!r} is a file; textdiff writes a folder there only where nothing is: "
                          "choose another name")
    full = target.resolve()
    if _is_within(Path.cwd().resolve(), full):
        raise ConfigError(f"{what} {name!r} is the working folder or holds it; textdiff never replaces it: "
                          "give a new folder name, e.g. ./out")
    for source in sources:
        if source is None:
            continue
        src = Path(source).expanduser().resolve()
        if _is_within(full, src) or _is_within(src, full):
            relation = "is" if full == src else ("is inside" if _is_within(full, src) else "holds")
            raise ConfigError(f"{what} {name!r} {relation} the source {str(source)!r}; write to a folder outside it")
    if target.is_dir() and not _empty(target):
        if not overwrite:
            raise ConfigError(f"{what} {name!r} already exists; choose a new folder, or pass {flag} to replace a "
                              "folder textdiff wrote")
        marker = read_marker(target)
        if marker is None or marker.get("kind") != kind:
            found = f"a textdiff {marker.get('kind')} folder, not a {kind} folder" if marker else \
                f"not a folder textdiff wrote (no {MARKER})"
            raise ConfigError(f"{what} {name!r} is {found}; textdiff replaces only its own {kind} folders: "
                              "choose a new folder, or remove it yourself")
    return target


@contextmanager
def staged_folder(target: PathLike, kind: str, *, overwrite: bool = False, sources: Iterable[PathLike] = (),
                  writer_id: Optional[str] = None, what: str = "destination",
                  flag: str = "overwrite=True (CLI: --overwrite)") -> Iterator[Path]:
    """``with staged_folder(target, "model") as tmp:`` write into ``tmp``; on leaving, ``tmp`` (with the
    marker) becomes ``target`` under the rules of the module docstring; on an error it is removed and
    ``target`` is untouched. ``writer_id``: the id temporary names carry (default: a new one)."""
    sources = list(sources)
    target = check_target(target, kind, overwrite, sources, what, flag)
    writer_id = writer_id or new_id()
    tmp = temp_sibling(target, writer_id)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        raise ConfigError(f"cannot write {what} {str(target)!r} ({e.strerror or type(e).__name__} at "
                          f"{str(e.filename or target.parent)!r}); choose a folder you can write to") from None
    try:
        yield tmp
        write_marker(tmp, kind, writer_id)
        check_target(target, kind, overwrite, sources, what, flag)  # nothing appeared meanwhile
        commit(tmp, target, writer_id)
    except OSError as e:
        raise ConfigError(f"writing {what} {str(target)!r} failed ({e.strerror or type(e).__name__}); "
                          "nothing there was changed") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def current_umask() -> int:
    """The process's file-mode creation mask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give every file under ``folder`` the mode the user's umask gives a new file (0644 under umask
    022): libraries that write through private temporary files (the weights) leave them 0600."""
    mask = current_umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o111
                os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def commit(tmp: Path, target: Path, writer_id: str) -> None:
    """``tmp`` becomes ``target``, its files with the user's umask (:func:`apply_umask`); a replaced
    target (checked by the caller to be textdiff's own) is renamed aside first and removed only once
    the new one is in place."""
    apply_umask(tmp)
    if not target.exists() or _empty(target):
        os.rename(tmp, target)  # (an empty folder is replaced by the rename itself)
        return
    old = temp_sibling(target, writer_id, "old")
    os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def remove_own_temporaries(folder: Path, writer_id: str) -> list[Path]:
    """Remove the entries of ``folder`` that carry ``writer_id`` (temporary folders and files of a
    killed writer with that id); returns them. Nothing else is touched."""
    removed = [p for p in Path(folder).iterdir() if carries_id(p.name, writer_id)]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    return removed
