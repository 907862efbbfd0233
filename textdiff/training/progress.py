"""What a training run tells its user (setup phases are printed by ``setup.prepare_run``): progress
that counts steps (or, under a time budget, seconds), validation lines, and a PNG of the training
curves at the end. Only the main process speaks."""
from __future__ import annotations

import json
from pathlib import Path

from ..progress import Lines, duration, progress_mode


class TrainBar:
    """Progress over optimizer steps, or over seconds when ``max_minutes`` bounds the run. Under a
    budget the total is whichever ends first: the budget, or the time ``max_steps`` takes at the pace
    so far, so its ETA is the run's real end either way.

    On a terminal a tqdm bar; when stderr is a file or a pipe (nohup, SLURM, CI) one plain line
    every few seconds (:class:`textdiff.progress.Lines`) and a last one at :meth:`close`:
    ``train: step 400/1200 (33%), loss 4.512, 32,982 tok/s, 0:40 elapsed, eta 1:20``."""

    def __init__(self, enabled: bool, step: int, max_steps: int, max_minutes: float | None, elapsed: float):
        self.max_steps, self.timed = max_steps, max_minutes is not None
        self.budget = max_minutes * 60 if self.timed else None
        self.start = (step, elapsed)  # the pace is measured from here (a resumed run's own steps)
        self.step, self.elapsed = step, elapsed
        self.mode = progress_mode(None if enabled else False)
        self.enabled, self.postfix, self.bar, self.lines = enabled, {}, None, None
        if self.mode == "lines":
            self.lines = Lines()
        elif self.timed:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.budget, initial=min(elapsed, self.budget), disable=self.mode is None, desc="train",
                            dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
        else:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_steps, initial=step, disable=self.mode is None, desc="train", unit="step",
                            dynamic_ncols=True)

    def eta(self) -> float | None:
        """Seconds left: the steps still to run at the pace so far, capped by the budget."""
        done, spent = self.step - self.start[0], self.elapsed - self.start[1]
        if done <= 0:
            return None
        left = (self.max_steps - self.step) * spent / done
        return min(left, max(0.0, self.budget - self.elapsed)) if self.timed else left

    def advance(self, step: int, elapsed: float) -> None:
        self.step, self.elapsed = step, elapsed
        if self.lines is not None:
            if self.lines.due():
                self.lines.print(self.line())
            return
        if not self.timed:
            self.bar.update(1)
            return
        eta = self.eta()
        if eta is not None:
            self.bar.total = min(self.budget, elapsed + eta)
        self.bar.update(max(0.0, min(elapsed, self.bar.total) - self.bar.n))
        self.postfix["step"] = f"{step}/{self.max_steps}"
        self.bar.set_postfix(self.postfix)

    def line(self) -> str:
        """``train: step 400/1200 (33%), loss 4.512, 32,982 tok/s, 0:40 elapsed, eta 1:20``."""
        parts = [f"step {self.step}/{self.max_steps} ({100 * self.step / max(self.max_steps, 1):.0f}%)"]
        parts += [f"{value} tok/s" if key == "tok_s" else f"{key} {value}" for key, value in self.postfix.items()
                  if key != "step"]
        parts.append(f"{duration(self.elapsed)} elapsed")
        eta = self.eta()
        if eta is not None and eta > 0:
            parts.append(f"eta {duration(eta)}")
        return "train: " + ", ".join(parts)

    def show(self, **values) -> None:
        self.postfix.update(values)
        if self.bar is not None:
            self.bar.set_postfix(self.postfix)

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.lines is not None:  # the last line: where the run ended
            self.lines.print(self.line())
            self.lines = None


def validation_line(line: dict, unigram_ppl: float | None, objective: str = "nelbo") -> str:
    """``step 250: validation NELBO 5.880 nats/token, PPL bound 357.7 (unigram PPL 747.6, ratio 0.478)``:
    only what means something for the ``objective``: ``nelbo`` (diffusion on a corpus), ``nll`` (an AR
    model: the exact NLL and PPL), ``sft`` (answers given their prompts: no unigram baseline, which is
    a corpus figure)."""
    nelbo, bound = line["val_nelbo"], line["val_ppl_bound"]
    if objective == "nll":
        text = f"step {line['step']}: validation NLL {nelbo:.3f} nats/token, PPL {bound:.1f}"
    elif objective == "sft":
        return f"step {line['step']}: validation NELBO {nelbo:.3f} nats/answer token (given the prompts), PPL bound {bound:.1f}"
    else:
        text = f"step {line['step']}: validation NELBO {nelbo:.3f} nats/token, PPL bound {bound:.1f}"
    if unigram_ppl:
        text += f" (unigram PPL {unigram_ppl:.1f}, ratio {bound / unigram_ppl:.3f})"
    return text


def plot_curves(metrics_file: Path, png: Path) -> Path | None:
    """Training loss and validation NELBO against steps, as a PNG; None (and a one-line note) when
    matplotlib (the ``eval`` extra) is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: no training-curve PNG (matplotlib missing): pip install 'textdiff[eval]'")
        return None
    lines = [json.loads(ln) for ln in Path(metrics_file).read_text().splitlines() if ln.strip()]
    train = [(m["step"], m["train_loss"]) for m in lines if "train_loss" in m]
    val = [(m["step"], m["val_nelbo"]) for m in lines if "val_nelbo" in m]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        ax.plot(*zip(*train), label="training loss (NELBO of the batch)", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation NELBO", lw=1.5, ms=4)
    unigram = next((m["val_unigram_ppl"] for m in lines if "val_unigram_ppl" in m), None)
    if unigram:
        import math

        ax.axhline(math.log(unigram), color="grey", ls="--", lw=1, label=f"unigram (log {unigram:.0f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("nats per token")
    ax.set_title(Path(metrics_file).parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png.with_name(f".tmp-{png.name}")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(png)  # atomic: a half-written figure never has the final name
    return png
