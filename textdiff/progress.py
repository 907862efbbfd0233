"""Progress bars for the user-facing loops (generate, score, eval, lm-eval): tqdm on stderr.

A bar is shown only when ``enabled`` is true and stderr is a terminal (``enabled=None``: decide by
the terminal alone), so logs, pipes and tests stay clean. ``TEXTDIFF_PROGRESS=0`` (or ``1``)
overrides the terminal check. Each bar counts items (samples, texts, requests) and shows tokens/s
from the tokens reported with :meth:`Progress.update`.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional


def progress_enabled(enabled: Optional[bool] = None) -> bool:
    """False when asked for quiet; otherwise true when stderr is a terminal (or TEXTDIFF_PROGRESS=1)."""
    if enabled is False:
        return False
    env = os.environ.get("TEXTDIFF_PROGRESS")
    if env is not None and env.strip():
        return env.strip().lower() not in ("0", "false", "no", "off")
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class Progress:
    """``with Progress(total, "generate", unit="sample") as bar: bar.update(n, tokens=k)``.

    Keeps counting (``items``, ``tokens``, ``tokens_per_s``) when the bar itself is hidden."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", enabled: Optional[bool] = None):
        self.items = 0
        self.tokens = 0
        self.started = time.perf_counter()
        self._bar = None
        if progress_enabled(enabled):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)

    def update(self, n: int = 1, tokens: int = 0) -> None:
        self.items += n
        self.tokens += tokens
        if self._bar is not None:
            if self.tokens:
                self._bar.set_postfix_str(f"{self.tokens_per_s:,.0f} tok/s", refresh=False)
            self._bar.update(n)

    def close(self) -> None:
        """Finish the bar (a loop that ended early, e.g. skipped sampler steps, counts as done), draw
        its final state with tokens/s, and remove it."""
        if self._bar is not None:
            bar = self._bar
            if bar.total is not None and bar.n < bar.total:
                bar.n = bar.total
            if self.tokens:
                bar.set_postfix_str(f"{self.tokens_per_s:,.0f} tok/s", refresh=False)
            bar.refresh()
            bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
