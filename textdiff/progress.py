"""Progress for the user-facing loops (train, generate, score, eval, lm-eval), on stderr.

On a terminal a tqdm bar; when stderr is a file or a pipe (nohup, SLURM, CI, ``2> log``) one plain
line every ``TEXTDIFF_PROGRESS_EVERY`` seconds (default 30) instead of bar frames, so a log holds a
few readable lines, not thousands of carriage returns. ``enabled=False`` (``--quiet``) shows
nothing; ``TEXTDIFF_PROGRESS=0`` shows nothing, ``=1`` forces the bar. Each :class:`Progress`
counts items (samples, texts, requests) and tokens/s from the tokens given to :meth:`Progress.update`.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional


LINE_EVERY_S = 30.0  # seconds between two plain progress lines (TEXTDIFF_PROGRESS_EVERY overrides)


def progress_mode(enabled: Optional[bool] = None) -> Optional[str]:
    """``"bar"`` (stderr is a terminal, or TEXTDIFF_PROGRESS=1), ``"lines"`` (stderr is a file or a
    pipe) or None (``enabled=False``, or TEXTDIFF_PROGRESS=0)."""
    if enabled is False:
        return None
    env = os.environ.get("TEXTDIFF_PROGRESS")
    if env is not None and env.strip():
        return "bar" if env.strip().lower() not in ("0", "false", "no", "off") else None
    return "bar" if getattr(sys.stderr, "isatty", lambda: False)() else "lines"


def clock() -> float:
    """Seconds on a monotonic clock (one name, so tests can move time)."""
    return time.monotonic()


def duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def line_every() -> float:
    """Seconds between plain lines: TEXTDIFF_PROGRESS_EVERY when set, else :data:`LINE_EVERY_S`."""
    env = os.environ.get("TEXTDIFF_PROGRESS_EVERY", "").strip()
    if not env:
        return LINE_EVERY_S
    try:
        every = float(env)
    except ValueError:
        every = -1.0
    if not every >= 0:
        from .errors import ConfigError

        raise ConfigError(f"TEXTDIFF_PROGRESS_EVERY={env!r} is not a number of seconds >= 0; set it to e.g. 60 or unset it")
    return every


class Lines:
    """Plain progress lines for logs: :meth:`due` is true once every ``every`` seconds; a line equal
    to the one before is not repeated."""

    def __init__(self, every: Optional[float] = None):
        self.every = line_every() if every is None else every
        self.last = clock()
        self.printed = 0
        self.previous = None

    def due(self) -> bool:
        return clock() - self.last >= self.every

    def print(self, text: str) -> None:
        if text == self.previous:
            return
        self.previous = text
        print(text, file=sys.stderr, flush=True)
        self.last = clock()
        self.printed += 1


class Progress:
    """``with Progress(total, "generate", unit="sample") as bar: bar.update(n, tokens=k)``.

    Keeps counting (``items``, ``tokens``, ``tokens_per_s``) when nothing is shown. In ``"lines"``
    mode it prints ``generate: 12/40 step (30%), 1,234 tok/s, 0:30 elapsed, eta 1:10`` every
    :func:`line_every` seconds, and one closing line when it printed any (a short loop prints none)."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", enabled: Optional[bool] = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.items = 0
        self.tokens = 0
        self.started = time.perf_counter()
        self._bar = None
        self.mode = progress_mode(enabled)
        self._lines = Lines() if self.mode == "lines" else None
        self._said_done = False
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    @property
    def shown(self) -> bool:
        """True when progress is displayed (a bar or plain lines): callers feed :meth:`update` then."""
        return self._bar is not None or self._lines is not None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)

    def line(self, done: bool = False) -> str:
        """The plain progress line: ``desc: items/total unit (pct), tok/s, elapsed, eta``; ``done``:
        the loop has ended (one that ended early, e.g. skipped sampler steps, counts as complete)."""
        spent = time.perf_counter() - self.started
        items = max(self.items, self.total or 0) if done else self.items
        parts = [f"{items}/{self.total} {self.unit}" if self.total else f"{items} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * items / self.total:.0f}%)"
        if self.tokens:
            parts.append(f"{self.tokens_per_s:,.0f} tok/s")
        parts.append(f"{duration(spent)} elapsed")
        if self.total and 0 < items < self.total:
            parts.append(f"eta {duration(spent * (self.total - items) / items)}")
        return f"{self.desc}: " + ", ".join(parts)

    def update(self, n: int = 1, tokens: int = 0) -> None:
        self.items += n
        self.tokens += tokens
        if self._bar is not None:
            if self.tokens:
                self._bar.set_postfix_str(f"{self.tokens_per_s:,.0f} tok/s", refresh=False)
            self._bar.update(n)
        elif self._lines is not None and self._lines.due():
            self._lines.print(self.line())
            self._said_done = self.total is not None and self.items >= self.total

    def close(self) -> None:
        """Finish the bar (a loop that ended early, e.g. skipped sampler steps, counts as done), draw
        its final state with tokens/s, and remove it; in lines mode, the closing line."""
        if self._bar is not None:
            bar = self._bar
            if bar.total is not None and bar.n < bar.total:
                bar.n = bar.total
            if self.tokens:
                bar.set_postfix_str(f"{self.tokens_per_s:,.0f} tok/s", refresh=False)
            bar.refresh()
            bar.close()
            self._bar = None
        if self._lines is not None:
            if self._lines.printed and not self._said_done:  # unless the last line already said 100%
                self._lines.print(self.line(done=True))
            self._lines = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
