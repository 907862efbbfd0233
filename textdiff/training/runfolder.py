"""The run folder (``output_dir``): what may become one, its marker and id, and what a run may remove.

A run writes only into a folder that is new, empty, or its own: one holding textdiff's marker
(``.textdiff-folder.json`` with ``"kind": "run"``, written when the run first takes the folder), or
the ``config.yaml`` of a run written by an older textdiff. A folder holding anything else is refused
(one line) before any work: a run never mixes its files with the user's. ``--resume`` continues the
run in it; ``--overwrite`` replaces a marked run folder with a fresh run (refused while another run
writes it). The marker carries the run's id, which every temporary name of the run carries too
(``.tmp-checkpoint-6-<id>-<pid>-<random>``): a resumed run removes what its killed predecessor left
and nothing else (:func:`textdiff.models.format.writer.remove_own_temporaries`).
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from ..models.format.writer import MARKER, new_id, read_marker, temp_sibling, write_marker
from .runlock import LOCK_FILE, RunLock

RECIPE_FILE = "config.yaml"


def check_run_folder(out: Path, resume: bool, overwrite: bool, sources: tuple = ()) -> None:
    """One-line errors for an ``output_dir`` a run may not write into; reads only. ``sources``: what the
    run reads (``train.init_from``), which ``overwrite`` may not delete."""
    out = Path(out)
    name = str(out)
    if resume and overwrite:
        raise ConfigError("pass either --resume (continue the run in output_dir) or --overwrite (replace it), not both")
    if out.is_symlink() and not out.exists():
        raise ConfigError(f"output_dir {name!r} is a dangling symbolic link (to {os.readlink(out)!r}); "
                          "create its target or choose another output_dir")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {name!r} is a file; choose a folder")
    if not out.exists():
        return
    if overwrite and (out.resolve() == Path.cwd().resolve() or out.resolve() in Path.cwd().resolve().parents):
        raise ConfigError(f"output_dir {name!r} is the working folder or holds it, which --overwrite would delete; "
                          "run from another folder or choose another output_dir")
    for source in sources if overwrite else ():
        if source is not None and Path(source).expanduser().exists():
            src, full = Path(source).expanduser().resolve(), out.resolve()
            if src == full or full in src.parents:
                raise ConfigError(f"train.init_from {str(source)!r} is inside output_dir {name!r}, which --overwrite would "
                                  "delete; copy it elsewhere first or choose another output_dir")
    marker = read_marker(out)
    if marker is not None and marker.get("kind") != "run":
        raise ConfigError(f"output_dir {name!r} is a textdiff {marker.get('kind')} folder, not a run folder; "
                          "choose another output_dir")
    if marker is None and (out / RECIPE_FILE).is_file():  # a run of a textdiff without markers
        if overwrite:
            raise ConfigError(f"output_dir {name!r} holds a run without textdiff's marker ({MARKER}), which --overwrite "
                              "does not replace; remove it yourself or choose another output_dir")
        return
    if marker is None:
        entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)  # (a lock: a run's, maybe live)
        if entries:
            raise ConfigError(f"output_dir {name!r} already holds files textdiff did not write (e.g. {entries[0]!r}); "
                              "train into a new or empty folder")


def mark_run_folder(out: Path) -> tuple[str, bool]:
    """(the run's id, True when the marker was written now); call holding the run lock."""
    marker = read_marker(out)
    if marker is not None and marker.get("kind") == "run" and isinstance(marker.get("id"), str):
        return marker["id"], False
    rid = secrets.token_hex(6)
    write_marker(out, "run", rid)
    return rid, True


def run_id(out: Path) -> Optional[str]:
    """The id in a run folder's marker (None for a folder without one)."""
    marker = read_marker(out)
    return marker.get("id") if marker is not None and marker.get("kind") == "run" else None


def run_scoped_id(out: Path, tag: str) -> str:
    """The id a temporary entry of this run carries: the run's id, then the writer's ``tag``."""
    rid = run_id(out)
    return f"{rid}-{tag}" if rid else tag


def retire_run_folder(out: Path) -> None:
    """``--overwrite``: the marked run folder ``out`` (no live run writing it: its lock is taken first)
    is renamed aside and deleted, so the new run starts in a fresh folder."""
    out = Path(out)
    if not out.exists() or read_marker(out) is None:
        return
    lock = RunLock(out).acquire()  # refuses while another run writes the folder
    try:
        aside = temp_sibling(out, new_id(), "old")
        os.rename(out, aside)
    finally:
        lock.release()
    shutil.rmtree(aside, ignore_errors=True)
