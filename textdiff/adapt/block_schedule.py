"""Block-size schedules: which block size L' trains at which step (LLaDA 2.0's warmup-stable-decay).

LLaDA 2.0 (Bie et al. 2025) converts an AR model in three phases over the BLOCK SIZE of block
diffusion: *warmup* grows L' from small blocks (L' = 1 is next-token prediction, the AR model
itself) through larger ones; *stable* trains at L' = L (one block: the full-sequence masked model,
MDLM) for most of the tokens; *decay* returns to a small target L' for cached, parallel decoding.
A schedule here is that list of phases, then the target for every later step::

    phases (n_1, b_1), ..., (n_K, b_K):   L'(step) = b_j  for  N_{j-1} <= step < N_j,  N_j = n_1 + ... + n_j
                                          L'(step) = target block size  for  step >= N_K

Each phase's block size must divide the row length L (blocks tile the row). The attention mask and
the read-out rows follow L' at every step (:mod:`textdiff.adapt.attention`); the network's weights do
not depend on it, so a change of phase needs nothing else. With the shift, L' = 1 is exactly the AR
model at any mask rate: each token is read from the clean row of the position before it.
"""
from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Optional, Sequence

from ..errors import ConfigError
from .config import BlockPhase


class BlockSchedule:
    """L'(step) for phases [(steps, block_size), ...] followed by ``target`` (module docstring)."""

    def __init__(self, phases: Optional[Sequence[BlockPhase]], target: int):
        self.phases = [p if isinstance(p, BlockPhase) else BlockPhase(*p) for p in (phases or [])]
        for p in self.phases:
            p.validate()
        if target < 1:
            raise ConfigError(f"adapt.block_size={target} must be at least 1")
        self.target = int(target)
        self.ends = list(accumulate(p.steps for p in self.phases))  # N_1 < N_2 < ... < N_K

    @property
    def total_steps(self) -> int:
        """N_K: the first step that trains at the target block size."""
        return self.ends[-1] if self.ends else 0

    def phase(self, step: int) -> int:
        """Index j of the phase that ``step`` falls in; K (one past the last) once the target holds."""
        if step < 0:
            raise ValueError(f"step={step} must be at least 0")
        return bisect_right(self.ends, step)

    def block_size(self, step: int) -> int:
        """L' at ``step``."""
        j = self.phase(step)
        return self.phases[j].block_size if j < len(self.phases) else self.target

    def changes(self) -> list[tuple[int, int]]:
        """[(first step, block size)] of every phase whose block size differs from the one before."""
        out, size = [], None
        for start, p in zip([0] + self.ends, self.phases + [BlockPhase(1, self.target)]):
            if p.block_size != size:
                out.append((start, p.block_size))
                size = p.block_size
        return out

    def check_divides(self, seq_len: int) -> None:
        """One-line error unless every block size of the schedule divides ``seq_len`` (L)."""
        for where, size in [(f"adapt.block_schedule[{i}].block_size", p.block_size) for i, p in enumerate(self.phases)] + [
                ("adapt.block_size", self.target)]:
            if size > seq_len or seq_len % size:
                raise ConfigError(f"{where}={size} does not divide data.seq_len={seq_len}; use a divisor of it "
                                  f"({seq_len} itself is the full-sequence masked model)")


def warmup_stable_decay(warmup: Sequence[int], warmup_steps: int, stable_size: int, stable_steps: int,
                        target: int) -> BlockSchedule:
    """LLaDA 2.0's shape: each warmup size for ``warmup_steps`` steps, then ``stable_size`` (usually L)
    for ``stable_steps``, then ``target`` (decay) from there on."""
    phases = [BlockPhase(warmup_steps, b) for b in warmup] + [BlockPhase(stable_steps, stable_size)]
    return BlockSchedule(phases, target)
