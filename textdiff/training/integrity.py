"""Integrity records of checkpoint folders: ``integrity.json`` = every file's size and SHA-256.

It is the LAST file written into a checkpoint's temporary folder (after every process's files are on
disk), so a folder that has one was complete when it was committed; on load every listed file must
exist with the recorded size and hash, and no file may have appeared beside them. Files above
:data:`HASH_LIMIT` bytes record their size only (hashing hundreds of GB at every save would cost
more than the save); their tensors are still checked for names and shapes when loaded.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import TextDiffError

INTEGRITY_FILE = "integrity.json"
HASH_LIMIT = 1 << 30  # bytes; bigger files record their size only


class CheckpointError(TextDiffError):
    """A checkpoint folder is damaged (missing, truncated or edited files, wrong tensors)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != INTEGRITY_FILE)


def write_integrity(folder: Path) -> dict:
    """Record size and hash of every file under ``folder`` (call when all of them are written)."""
    folder = Path(folder)
    record = {}
    for p in _files(folder):
        size = p.stat().st_size
        entry = {"size": size}
        if size <= HASH_LIMIT:
            entry["sha256"] = _sha256(p)
        record[p.relative_to(folder).as_posix()] = entry
    (folder / INTEGRITY_FILE).write_text(json.dumps({"version": 1, "files": record}, indent=1))
    return record


def check_integrity(folder: Path) -> bool:
    """Raise :class:`CheckpointError` naming the first damaged file; False when ``folder`` has no
    record (written before records existed), True when every file matches it."""
    folder = Path(folder)
    path = folder / INTEGRITY_FILE
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())["files"]
        if not isinstance(record, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path} is not a valid integrity record") from None
    for name, entry in record.items():
        p = folder / name
        if not p.is_file():
            raise CheckpointError(f"{p} is missing")
        if not isinstance(entry, dict) or p.stat().st_size != entry.get("size"):
            raise CheckpointError(f"{p} has {p.stat().st_size} bytes, the record says {entry.get('size') if isinstance(entry, dict) else entry}")
        if "sha256" in entry and _sha256(p) != entry["sha256"]:
            raise CheckpointError(f"{p} does not match its SHA-256 in {INTEGRITY_FILE} (edited or corrupted)")
    extra = [p.relative_to(folder).as_posix() for p in _files(folder) if p.relative_to(folder).as_posix() not in record]
    if extra:
        raise CheckpointError(f"{folder / extra[0]} is not in {INTEGRITY_FILE} (added after the checkpoint was written)")
    return True
