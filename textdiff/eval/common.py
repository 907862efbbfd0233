"""Small pieces shared by the metric modules: seeded generators, intervals, optional extras."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..categorical import generator_for  # noqa: F401 (the metric modules' seeded generators)
from ..errors import TextDiffError
from ..extras import MissingExtraError, require  # noqa: F401  (their home is textdiff.extras)

#: two-sided normal quantiles for the usual confidence levels (CLT intervals)
_Z = {0.8: 1.2815515655446004, 0.9: 1.6448536269514722, 0.95: 1.959963984540054, 0.99: 2.5758293035489004}


def z_value(level: float) -> float:
    """Two-sided normal quantile for a confidence ``level`` in (0, 1)."""
    if level in _Z:
        return _Z[level]
    if not 0.0 < level < 1.0:
        raise TextDiffError(f"confidence level {level} must be in (0, 1), e.g. 0.95")
    return float(torch.special.ndtri(torch.tensor((1 + level) / 2, dtype=torch.float64)))


def bootstrap_ratio(num: Sequence[float], den: Sequence[float], level: float, resamples: int, seed: int) -> list[float]:
    """Percentile bootstrap interval of Σ num / Σ den, resampling the paired rows (num_i, den_i)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    n = len(num)
    if n < 2 or resamples < 1:
        value = float(num.sum() / max(den.sum(), 1e-300))
        return [value, value]
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for start in range(0, resamples, 256):  # chunks keep memory at 256 × n
        stop = min(start + 256, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        stats[start:stop] = num[idx].sum(1) / np.maximum(den[idx].sum(1), 1e-300)
    alpha = (1 - level) / 2
    return [float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))]


def mean_interval(values: Sequence[float], level: float) -> tuple[float, float, list[float]]:
    """(mean, standard error, CLT interval) of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean()) if len(v) else float("nan")
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    z = z_value(level)
    return mean, se, [mean - z * se, mean + z * se]


def safe_exp(x: float) -> float:
    return math.exp(min(x, 700.0))


def device_name(device) -> str:
    """A readable name of the device: the GPU's name or the CPU model."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        import platform

        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
        return platform.processor() or "cpu"
    except OSError:
        return "cpu"
