"""The samplers as they were before issue 16 (commit 6e76ef1), kept as the benchmark's baseline.

Each class subclasses today's sampler (same config, grid, ``finished`` and ``skips_unchanged``) and
overrides ``step`` with the code of 6e76ef1, including the process methods it called then (the masked
and uniform ``reverse_probs`` with α in float32, SEDD-absorb's staggered score and final step).
``eager_attention`` is the float32 attention of 6e76ef1, patched in while the baseline runs.
Everything here is a copy of textdiff's own earlier code, for ``benchmarks/sampling.py`` only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from textdiff.categorical import gumbel, sample_categorical, sample_from_logits, uniform
from textdiff.processes.masked import MaskedProcess
from textdiff.processes.score_entropy import SEDDAbsorb, ScoreEntropyProcess
from textdiff.processes.uniform import UniformProcess
from textdiff.samplers import (AnalyticSampler, AncestralSampler, ConfidenceSampler, EulerSampler,
                               FirstHittingSampler, ReMDMSampler, ThresholdSampler, StepOutput)
from textdiff.samplers.euler import tau_leap_probs


def eager_attention(q, k, v, mask, is_causal: bool, dropout: float = 0.0):
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if is_causal:
        L, T = scores.shape[-2:]
        mask = torch.ones(L, T, dtype=torch.bool, device=q.device).tril(T - L)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return probs @ v


# ---- process methods of 6e76ef1 --------------------------------------------------------------------

def _a(proc, t, x):
    return proc.alpha(proc.per_token(t, x).double())[..., None]


def _tau(proc, t, s, x):
    return _a(proc, t, x) / _a(proc, s, x).clamp_min(1e-300)


def reverse_probs(proc, logits, x_t, t, s):
    if isinstance(proc, MaskedProcess):
        a_t = proc.alpha(proc.per_token(t, x_t)).double()[..., None]
        a_s = proc.alpha(proc.per_token(s, x_t)).double()[..., None]
        p0 = proc.x0_logits(logits, x_t, t).double().exp()
        denom = (1 - a_t).clamp_min(1e-12)
        probs = p0 * (a_s - a_t) / denom
        probs[..., proc.mask_id] = ((1 - a_s) / denom)[..., 0]
        keep = x_t != proc.mask_id
        probs[keep] = F.one_hot(x_t[keep], probs.shape[-1]).double()
        return probs
    if isinstance(proc, UniformProcess):
        V = proc.vocab_size
        a_t = proc.alpha(proc.per_token(t, x_t)).double()[..., None]
        a_s = proc.alpha(proc.per_token(s, x_t)).double()[..., None]
        a_ts = a_t / a_s.clamp_min(1e-300)
        p0 = proc.x0_logits(logits, x_t, t).double().exp()
        q_s = a_s * p0 + (1 - a_s) / V
        onehot = F.one_hot(x_t, V).double()
        probs = (a_ts * onehot + (1 - a_ts) / V) * q_s
        return probs / probs.sum(-1, keepdim=True)
    if isinstance(proc, ScoreEntropyProcess):
        return analytic_probs(proc, logits, x_t, t, s)
    return proc.reverse_probs(logits, x_t, t, s)  # ar: softmax, unchanged


def staggered_score(proc, logits, x_t, t, s):
    if not isinstance(proc, SEDDAbsorb):
        tau = _tau(proc, t, s, x_t)
        sc = proc.score(logits, x_t, t)
        return sc / tau + (1 - 1 / tau) * sc.sum(-1, keepdim=True) / proc.vocab_size
    a_t, a_s = _a(proc, t, x_t), _a(proc, s, x_t)
    e = proc._shifted(logits, proc.per_token(t, x_t).double()).double().exp()  # (today's signature: the rows' times)
    stag = e * a_s / (1 - a_t).clamp_min(1e-300)
    stag[..., proc.mask_id] = (1 - (a_s - a_t) / (1 - a_t).clamp_min(1e-300) * e.sum(-1, keepdim=True))[..., 0]
    clean = x_t != proc.mask_id
    keep = torch.zeros_like(stag).scatter(-1, x_t[..., None], 1.0 / _tau(proc, t, s, x_t))
    return torch.where(clean[..., None], keep, stag)


def transp_transition(proc, x_t, t, s):
    tau = _tau(proc, t, s, x_t)
    V = proc.vocab_size
    if not isinstance(proc, SEDDAbsorb):
        return tau * F.one_hot(x_t, V).double() + (1 - tau) / V
    masked = (x_t == proc.mask_id)[..., None]
    from_masked = (1 - tau).expand(*x_t.shape, V).clone()
    from_masked[..., proc.mask_id] = 1.0
    stay = F.one_hot(x_t, V).double() * tau
    return torch.where(masked, from_masked, stay)


def analytic_probs(proc, logits, x_t, t, s):
    probs = staggered_score(proc, logits, x_t, t, s).clamp_min(0.0) * transp_transition(proc, x_t, t, s)
    probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-300)
    if isinstance(proc, SEDDAbsorb) and bool((_a(proc, s, x_t) >= 1.0).all()):
        masked = x_t == proc.mask_id
        probs[..., proc.mask_id] = torch.where(masked, 0.0, probs[..., proc.mask_id])
        probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-300)
    return probs


# ---- sampler steps of 6e76ef1 --------------------------------------------------------------------

def x0_log_probs(smp, logits, x_t, t):
    """Filtered log p_θ(x0 | x_t) [B, L, V] in float64, read through the process (6e76ef1's helper)."""
    return torch.log_softmax(smp.filter(smp.process.x0_logits(logits, x_t, t)), dim=-1)


class BaselineAncestral(AncestralSampler):
    def step(self, logits, t, s, x_t, generator=None):
        filtered = self.filter(self.process.x0_logits(logits, x_t, t))
        return StepOutput(x_s=sample_categorical(reverse_probs(self.process, filtered, x_t, t, s), generator))


class BaselineFirstHitting(FirstHittingSampler):
    def step(self, logits, t, s, x_t, generator=None):
        noise = self.process.is_noise(x_t)
        pos = sample_categorical(noise.double(), generator)
        has = noise.any(1)
        logp = x0_log_probs(self, logits, x_t, t)
        rows = torch.arange(x_t.shape[0], device=x_t.device)
        token = sample_from_logits(logp[rows, pos], generator)
        x_s = x_t.clone()
        x_s[rows[has], pos[has]] = token[has]
        return StepOutput(x_s=x_s)


def rank_commit(score, eligible, k):
    score = torch.round(score.double(), decimals=4)
    score = torch.where(eligible, score, torch.full_like(score, float("-inf")))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return eligible & (ranks < k[:, None])


def _candidates(smp, logits, x_t, t, generator):
    logp = x0_log_probs(smp, logits, x_t, t)
    x0_hat = sample_from_logits(logp, generator)
    probs = smp.process.x0_probs(logits, x_t, t).double()
    return x0_hat, probs


class BaselineConfidence(ConfidenceSampler):
    def old_scores(self, probs, x0_hat, shape, generator):
        kind = self.config.ordering
        if kind == "confidence":
            return probs.gather(-1, x0_hat[..., None])[..., 0]
        if kind == "margin":
            top2 = torch.topk(probs, 2, dim=-1).values
            return top2[..., 0] - top2[..., 1]
        if kind == "entropy":
            return torch.where(probs > 0, probs * torch.log(probs), torch.zeros_like(probs)).sum(-1)
        return uniform(shape, generator, probs.device)

    def step(self, logits, t, s, x_t, generator=None):
        noise = self.process.is_noise(x_t)
        x0_hat, probs = _candidates(self, logits, x_t, t, generator)
        score = self.old_scores(probs, x0_hat, x_t.shape, generator)
        if self.config.order_temperature > 0:
            score = score / self.config.order_temperature + gumbel(x_t.shape, generator, x_t.device)
        k = self.commit_counts(noise.sum(1), self.rows(t, x_t), self.rows(s, x_t))
        commit = rank_commit(score, noise, k)
        return StepOutput(x_s=torch.where(commit, x0_hat, x_t), x0_pred=torch.where(noise, x0_hat, x_t))


class BaselineThreshold(ThresholdSampler):
    def step(self, logits, t, s, x_t, generator=None):
        noise = self.process.is_noise(x_t)
        x0_hat, probs = _candidates(self, logits, x_t, t, generator)
        conf = probs.gather(-1, x0_hat[..., None])[..., 0]
        commit = noise & (conf > self.config.threshold)
        commit |= rank_commit(conf, noise, torch.ones(x_t.shape[0], dtype=torch.long, device=x_t.device))
        commit |= noise & (self.rows(s, x_t) <= 0)[:, None]
        return StepOutput(x_s=torch.where(commit, x0_hat, x_t), x0_pred=torch.where(noise, x0_hat, x_t))


class BaselineEuler(EulerSampler):
    def step(self, logits, t, s, x_t, generator=None):
        t, s = self.rows(t, x_t), self.rows(s, x_t)
        if self.config.final_denoise and bool((s <= 0).all()):
            fn = analytic_probs if isinstance(self.process, ScoreEntropyProcess) else reverse_probs
            probs = fn(self.process, logits, x_t, t, s)
        else:
            probs = tau_leap_probs(self.process.reverse_rate(logits, x_t, t), x_t, t - s)
        return StepOutput(x_s=sample_categorical(self.filter.transition(probs, x_t), generator))


class BaselineAnalytic(AnalyticSampler):
    def step(self, logits, t, s, x_t, generator=None):
        probs = analytic_probs(self.process, logits, x_t, self.rows(t, x_t), self.rows(s, x_t))
        return StepOutput(x_s=sample_categorical(self.filter.transition(probs, x_t), generator))


class BaselineReMDM(ReMDMSampler):
    def step(self, logits, t, s, x_t, generator=None):
        t, s = self.rows(t, x_t), self.rows(s, x_t)
        a_t = self.process.alpha(t.float()).double()
        a_s = self.process.alpha(s.float()).double()
        cfg = self.config
        sigma_max = ((1.0 - a_s) / a_t.clamp_min(1e-12)).clamp(0.0, 1.0)
        sigma = torch.clamp(sigma_max, max=cfg.eta) if cfg.strategy == "cap" else cfg.eta * sigma_max
        sigma = torch.where((t >= cfg.t_off) & (t <= cfg.t_on), sigma, torch.zeros_like(sigma))[:, None]
        a_t, a_s = a_t[:, None], a_s[:, None]
        mask_id = self.process.mask_id
        noise = self.process.is_noise(x_t)
        p0 = x0_log_probs(self, logits, x_t, t).exp()
        denom = (1.0 - a_t).clamp_min(1e-12)
        unmask = ((a_s - (1.0 - sigma) * a_t) / denom).clamp_min(0.0)
        stay_masked = ((1.0 - a_s - sigma * a_t) / denom).clamp_min(0.0)
        probs = torch.where(noise[..., None], p0 * unmask[..., None], p0 * (1.0 - sigma)[..., None])
        probs[..., mask_id] = torch.where(noise, stay_masked.expand_as(noise), sigma.expand_as(noise))
        return StepOutput(x_s=sample_categorical(probs, generator))


BASELINES = {"ancestral": BaselineAncestral, "first_hitting": BaselineFirstHitting, "confidence": BaselineConfidence,
             "threshold": BaselineThreshold, "euler": BaselineEuler, "analytic": BaselineAnalytic, "remdm": BaselineReMDM}
