"""One writer per run folder: an exclusive lock file ``<output_dir>/.lock``.

The lock is an ``fcntl.flock`` on ``.lock``, held for the whole run by the process that writes the
folder (the main process under ``accelerate launch``; the others never touch it). The kernel drops
a flock when its holder dies, so a crash never leaves the folder locked; the file's content (pid,
host, start time) only says who holds it, for the error message and the note printed when a lock
left behind by a crashed run is taken over. A lock file naming another host whose flock is free is
NOT taken over (a shared filesystem may not carry flocks between hosts): the error says to delete it.

Released on every way out of :func:`textdiff.training.loop.train`: return, exception, and SIGTERM
(turned into ``SystemExit`` while the lock is held, so ``finally`` blocks run). A folder that the
lock created and that stayed empty is removed again, so a run refused early leaves nothing behind.
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from ..errors import ConfigError

LOCK_FILE = ".lock"


class RunLockedError(ConfigError):
    """Another live process writes this run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _read(path: Path) -> dict:
    try:
        info = json.loads(path.read_text() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """``with RunLock(folder):`` or ``acquire()`` / ``release()``; re-entrant within one object."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._created_folder = False
        self._previous_handler = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def created_folder(self) -> bool:
        """True while held when the folder did not exist before :meth:`acquire`."""
        return self._created_folder

    def acquire(self) -> "RunLock":
        import fcntl

        if self.held:
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"output_dir {str(self.folder)!r} is a file; choose a folder")
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                self._forget_folder()
                info = _read(self.path)
                raise RunLockedError(
                    f"output folder {str(self.folder)!r} is being written by another run (pid {info.get('pid', '?')} on "
                    f"{info.get('host', '?')} since {info.get('started', '?')}); wait for it to end or use another output_dir"
                ) from None
            try:  # the holder may have unlinked the file between our open and our flock: retry on the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read(self.path)
        host = socket.gethostname()
        if previous.get("pid") is not None and previous.get("pid") != os.getpid():
            if previous.get("host") not in (None, host):
                os.close(fd)
                self._forget_folder()
                raise RunLockedError(
                    f"output folder {str(self.folder)!r} has a lock from pid {previous['pid']} on host {previous['host']!r} "
                    f"(since {previous.get('started', '?')}) that this host cannot check; if that run is gone, delete "
                    f"{str(self.path)!r}"
                )
            state = "is gone" if not _pid_alive(int(previous["pid"])) else "no longer holds it"
            print(f"note: taking over the lock of {str(self.folder)!r} left by a crashed run (pid {previous['pid']} "
                  f"{state}, started {previous.get('started', '?')})", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": host,
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        os.fsync(fd)
        self._fd = fd
        self._catch_sigterm()
        atexit.register(self.release)  # also when the interpreter exits without unwinding to our caller
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding the flock: nobody can take a half-released lock
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        atexit.unregister(self.release)
        self._restore_sigterm()
        self._forget_folder()

    def clean_temporary(self, run_id: str) -> list[Path]:
        """Remove what killed writers of the run ``run_id`` left (entries whose names carry that id,
        see :mod:`textdiff.training.runfolder`); nothing else. Only the holder may."""
        from ..models.format.writer import remove_own_temporaries

        if not self.held:
            raise RuntimeError("clean_temporary needs the lock")
        return remove_own_temporaries(self.folder, run_id)

    def _forget_folder(self) -> None:
        """A folder this lock created and nothing else wrote to disappears again."""
        if self._created_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass
            self._created_folder = False

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum, frame):
            raise SystemExit(128 + signum)  # finally blocks run: the lock is released

        self._previous_handler = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_handler)
        self._previous_handler = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
