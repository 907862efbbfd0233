"""MAUVE (Pillutla et al. 2021) between generated and reference text, over several clustering seeds.

Needs the optional extra ``textdiff[mauve]`` (package ``mauve-text``), imported inside the function.
MAUVE quantises the two sets of text embeddings with k-means and compares the histograms; the
k-means seed moves the score, so it is computed for every seed in ``seeds`` and reported as mean,
standard deviation and the list of values.

Features: precomputed arrays [n, d], or the reference LM's last-layer hidden state at the last
token of each text (the MAUVE paper's choice with GPT-2 Large; offline we use whatever reference LM
is configured, recorded in the protocol).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..signatures import checked
from .common import require


@torch.no_grad()
def text_features(reference, texts: Sequence[str], max_length: Optional[int] = None) -> np.ndarray:
    """[n, d] last-token, last-layer hidden states of ``texts`` under a reference LM (HF or textdiff AR)."""
    from .gen_ppl import load_reference

    ref = load_reference(reference)
    limit = max_length or ref.max_length - 1
    feats = []
    for text in texts:
        ids = ref.tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
        if ref.prefix_id is not None:
            ids = [ref.prefix_id] + ids
        x = torch.tensor([ids], device=ref.device)
        if ref.kind == "hf":
            out = ref.model(input_ids=x, output_hidden_states=True)
            h = out.hidden_states[-1][0, -1]
        else:
            h = ref.model(x).hidden_states[0, -1]
        feats.append(h.float().cpu().numpy())
    return np.stack(feats)


@checked
def mauve_score(
    p_features=None,
    q_features=None,
    *,
    p_texts: Optional[Sequence[str]] = None,
    q_texts: Optional[Sequence[str]] = None,
    reference=None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    num_buckets: Optional[int] = None,
    scaling_factor: float = 5.0,
) -> dict:
    """MAUVE of p (generated) against q (human) text, averaged over k-means ``seeds``."""
    mauve = require("mauve", "mauve", "MAUVE")
    if not seeds:
        raise ConfigError("mauve needs at least one clustering seed")
    if p_features is None:
        if p_texts is None or q_texts is None or reference is None:
            raise ConfigError("mauve needs p_features/q_features, or p_texts, q_texts and a reference LM for features")
        p_features = text_features(reference, p_texts)
        q_features = text_features(reference, q_texts)
    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    if len(p) < 2 or len(q) < 2:
        raise DataError(f"mauve needs at least 2 texts on each side, got {len(p)} and {len(q)}")
    buckets = num_buckets or max(2, min(len(p), len(q)) // 10)
    values = []
    for s in seeds:
        out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets, seed=int(s),
                                  mauve_scaling_factor=scaling_factor, verbose=False)
        values.append(float(out.mauve))
    v = np.array(values)
    return {"mauve_mean": float(v.mean()), "mauve_std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "mauve_values": values, "seeds": list(seeds), "num_buckets": buckets, "scaling_factor": scaling_factor,
            "p_texts": len(p), "q_texts": len(q)}
