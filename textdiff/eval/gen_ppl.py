"""Generative perplexity: how likely a reference causal LM finds generated text.

The protocol, recorded in every result (``protocol``):

* **Reference**: any local Hugging Face causal-LM folder (``AutoModelForCausalLM`` +
  ``AutoTokenizer``; GPT-2 Large by hub name when online), a model object with its tokenizer, or a
  textdiff AR model folder (process ``ar``; scored with its exact next-token loss through
  :func:`textdiff.objective.nelbo_terms`).
* **Retokenization**: samples arrive as text decoded by the generator's tokenizer (special tokens
  dropped) and are encoded by the reference tokenizer without special tokens. ``retokenize="auto"``
  skips the round trip when both tokenizers have the same vocabulary and samples arrive as ids.
  A reference tokenizer that cannot represent a sample (it yields its unknown token, or decoding
  its encoding does not give the sample back) raises a one-line :class:`DataError`: scoring a lossy
  re-encoding would flatter or punish the sample for the tokenizer's sake.
* **Prefix / EOS policy**: every sample is scored after one prefix token (the reference's BOS, else
  its EOS, as GPT-2 conditions on ``<|endoftext|>``; the start token for a textdiff AR model), so
  the first token is scored too. ``eos="drop"`` scores the text only; ``eos="append"`` also scores
  the reference's EOS after the text (length modelling counts). Empty samples are counted and left out.
* **Long samples**: a sample longer than the reference's context (``max_length`` tokens, prefix
  included) is scored with a sliding window: windows of ``max_length`` tokens advance by ``stride``
  (default max_length // 2) and each token is scored once, in the first window that contains it with
  its full left context available, so every token after the first window sees at least
  max_length − stride tokens of context.
* **Aggregation**: ``gen_ppl`` = exp(Σ NLL / Σ tokens) over all samples (token-pooled, what
  MDLM-style tables report), with a bootstrap interval over samples; ``gen_ppl_per_sample_mean`` /
  ``_median`` = mean / median over samples of exp(mean NLL of the sample).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..signatures import checked
from .common import bootstrap_ratio, safe_exp


@dataclass
class ReferenceLM:
    """A causal LM used to score text: ``nll(ids_list)`` gives per-token NLLs (nats) of each sequence."""

    model: Any
    tokenizer: Any
    kind: str  # "hf" or "textdiff-ar"
    name: str
    max_length: int
    prefix_id: Optional[int]  # token fed before the first scored token (None: first token unscored)
    eos_id: Optional[int]
    process: Any = None  # textdiff AR process

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "max_length": self.max_length, "prefix_id": self.prefix_id,
                "eos_id": self.eos_id, "vocab_size": len(self.tokenizer)}

    @torch.no_grad()
    def _window_nll(self, ids: list[int]) -> np.ndarray:
        """NLL of ids[1:] given the tokens before each, for len(ids) <= max_length (ids[0] is context)."""
        if self.kind == "textdiff-ar":
            from ..objective import nelbo_terms

            # the process feeds [START, ids[1:-1]]: exact for the first window (ids[0] is START); in a
            # continuation window START stands in for ids[0], and only tokens far from it are kept
            x0 = torch.tensor([ids[1:]], device=self.device)
            return nelbo_terms(self.model, self.process, x0).loss[0].double().cpu().numpy()
        x = torch.tensor([ids], device=self.device)
        logits = self.model(input_ids=x).logits[0, :-1].double()  # [n - 1, V]
        logp = torch.log_softmax(logits, -1)
        return (-logp.gather(-1, x[0, 1:, None])[:, 0]).cpu().numpy()

    def nll(self, sequences: Sequence[Sequence[int]], stride: Optional[int] = None) -> list[np.ndarray]:
        """Per-token NLL [n_i] of every sequence (reference token ids, prefix not included)."""
        stride = stride or max(1, self.max_length // 2)
        if not 0 < stride <= self.max_length - 1:
            raise ConfigError(f"stride={stride} must be in [1, max_length - 1 = {self.max_length - 1}]")
        out = []
        for seq in sequences:
            seq = list(seq)
            full = ([self.prefix_id] if self.prefix_id is not None else []) + seq
            n = len(full)
            scored = np.zeros(n)  # scored[j]: NLL of full[j] (j >= 1)
            done = 1  # tokens [0, done) are scored (or are the prefix)
            begin = 0
            while done < n:
                end = min(begin + self.max_length, n)
                window = self._window_nll(full[begin:end])  # NLL of full[begin + 1 : end]
                scored[done:end] = window[done - begin - 1:]
                done = end
                begin += stride
            out.append(scored[1:])
        return out


@checked
def load_reference(spec, device=None, dtype=None) -> ReferenceLM:
    """A :class:`ReferenceLM` from a folder path / hub name (str), or a (model, tokenizer) pair."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(spec, ReferenceLM):
        return spec
    if isinstance(spec, (tuple, list)):
        model, tokenizer = spec
        return _hf_reference(model.to(device).eval(), tokenizer, getattr(model, "name_or_path", "") or type(model).__name__)
    path = str(spec)
    from ..models.format import PUBLISHED, folder_kind

    if folder_kind(path) != PUBLISHED:  # a textdiff model folder
        from ..lm import DiffusionLM

        lm = DiffusionLM.from_pretrained(path, device=device, dtype=dtype)
        if lm.process.is_diffusion:
            raise ConfigError(f"reference {path!r} is a diffusion model; a reference must be causal (a textdiff 'ar' model or an HF causal LM)")
        return ReferenceLM(model=lm.model, tokenizer=lm.tokenizer, kind="textdiff-ar", name=path,
                           max_length=int(lm.seq_len or lm.model.config.max_position_embeddings) + 1,
                           prefix_id=lm.process.start_token, eos_id=lm.tokenizer.eos_token_id, process=lm.process)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **({"dtype": dtype} if dtype is not None else {}))
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a bad folder / offline hub
        raise ConfigError(f"cannot load reference LM {path!r} ({type(e).__name__}); give a local causal-LM folder "
                          "(config.json, weights, tokenizer files) or a textdiff 'ar' model folder") from None
    return _hf_reference(model.to(device).eval(), tokenizer, path)


def _hf_reference(model, tokenizer, name: str) -> ReferenceLM:
    cfg = model.config
    max_len = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return ReferenceLM(model=model, tokenizer=tokenizer, kind="hf", name=name, max_length=int(max_len),
                       prefix_id=prefix, eos_id=tokenizer.eos_token_id)


def _same_vocab(a, b) -> bool:
    try:
        return a is b or a.get_vocab() == b.get_vocab()
    except Exception:  # noqa: BLE001
        return False


def retokenize(texts: Sequence[str], reference: ReferenceLM) -> list[list[int]]:
    """Encode ``texts`` with the reference tokenizer; one-line error when it cannot represent one."""
    tok = reference.tokenizer
    unk = getattr(tok, "unk_token_id", None)
    out = []
    for i, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        back = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if (unk is not None and unk in ids) or back != text:
            where = next((j for j, (a, b) in enumerate(zip(back, text)) if a != b), min(len(back), len(text)))
            raise DataError(
                f"the reference tokenizer of {reference.name!r} cannot represent sample {i} (it gives "
                f"{'its unknown token' if unk is not None and unk in ids else 'different text back'} near character {where}: "
                f"{text[max(0, where - 10):where + 10]!r}); use a reference whose tokenizer covers the generator's text"
            )
        out.append(ids)
    return out


@checked
def generative_perplexity(
    reference,
    texts: Optional[Sequence[str]] = None,
    *,
    token_ids: Optional[Sequence[Sequence[int]]] = None,
    source_tokenizer=None,
    retokenize_mode: Literal["auto", "always", "never"] = "auto",
    eos: Literal["drop", "append"] = "drop",
    stride: Optional[int] = None,
    ci_level: float = 0.95,
    bootstrap: int = 1000,
    seed: int = 0,
    device=None,
) -> dict:
    """Generative perplexity of samples under ``reference`` (module docstring for the protocol).

    texts: the decoded samples; token_ids (+ source_tokenizer): the samples as generator ids, which
    are scored directly when the vocabularies match (``retokenize_mode="auto"``) and decoded otherwise.
    """
    ref = load_reference(reference, device=device)
    if eos not in ("drop", "append"):
        raise ConfigError(f"eos={eos!r}; use 'drop' or 'append'")
    if texts is None and token_ids is None:
        raise ConfigError("give the samples as texts= or token_ids= (with source_tokenizer=)")
    direct = False
    if token_ids is not None:
        if retokenize_mode == "never" or (retokenize_mode == "auto" and source_tokenizer is not None
                                          and _same_vocab(source_tokenizer, ref.tokenizer)):
            direct = True
            V = len(ref.tokenizer)
            ids = [list(s) for s in token_ids]
            bad = next(((i, x) for i, s in enumerate(ids) for x in s if not 0 <= x < V), None)
            if bad is not None:
                raise DataError(f"sample {bad[0]} holds token id {bad[1]}, outside the reference vocabulary of {V}; "
                                "set retokenize to 'always' (decode and re-encode the samples)")
        else:
            if source_tokenizer is None:
                raise ConfigError("token_ids need source_tokenizer= to be decoded for the reference")
            texts = [source_tokenizer.decode(list(s), skip_special_tokens=True) for s in token_ids]
    if not direct:
        if retokenize_mode == "never":
            raise ConfigError("retokenize='never' needs token_ids from a tokenizer with the reference's vocabulary")
        ids = retokenize(list(texts), ref)
    if len(ids) == 0:
        raise DataError("no samples to score; generate at least one sample")
    if eos == "append":
        if ref.eos_id is None:
            raise ConfigError(f"reference {ref.name!r} has no EOS token; use eos='drop'")
        ids = [s + [ref.eos_id] for s in ids]
    kept = [s for s in ids if len(s) > 0]
    empty = len(ids) - len(kept)
    if not kept:
        raise DataError("every sample is empty after cutting at EOS; nothing to score")
    nlls = ref.nll(kept, stride=stride)
    sums = np.array([float(n.sum()) for n in nlls])
    lens = np.array([len(n) for n in nlls], dtype=np.float64)
    pooled = float(sums.sum() / lens.sum())
    per_sample = np.exp(np.minimum(sums / lens, 700.0))
    ci = bootstrap_ratio(sums, lens, ci_level, bootstrap, seed)
    return {
        "gen_ppl": safe_exp(pooled),
        "gen_ppl_ci": [safe_exp(ci[0]), safe_exp(ci[1])],
        "nll_per_token": pooled,
        "gen_ppl_per_sample_mean": float(per_sample.mean()),
        "gen_ppl_per_sample_median": float(np.median(per_sample)),
        "samples": len(kept),
        "empty_samples": empty,
        "tokens": int(lens.sum()),
        "ci_level": ci_level,
        "per_sample_ppl": per_sample.tolist(),
        "protocol": {
            "reference": ref.describe(),
            "retokenized": not direct,
            "eos_policy": eos,
            "prefix": "reference BOS/EOS/start token before every sample (first token scored)"
            if ref.prefix_id is not None else "none (first token unscored)",
            "stride": stride or max(1, ref.max_length // 2),
            "aggregation": "gen_ppl = exp(sum NLL / sum tokens) over samples; per_sample = exp(mean NLL) per sample",
        },
    }


def reference_self_perplexity(reference, token_ids: Sequence[Sequence[int]]) -> float:
    """exp(mean NLL per token) of sequences already in reference ids (no retokenization)."""
    ref = load_reference(reference)
    nlls = ref.nll(token_ids)
    return safe_exp(sum(float(n.sum()) for n in nlls) / sum(len(n) for n in nlls))


def save_reference_card(ref: ReferenceLM, path) -> None:
    Path(path).write_text(json.dumps(ref.describe(), indent=2))


def _isfinite(x: float) -> bool:
    return math.isfinite(x)
