"""Per-token NELBO terms of a text: what ``textdiff score --per-token`` prints.

The NELBO of a text x (EOS appended) is a sum over its positions plus the prior term,

    NELBO(x) = Σ_l E_t[ w(t) · ℓ_l(x_t, x) ] + KL(q(x_1 | x) ‖ p(x_1)),

estimated with the same ``t_samples`` stratified draws of t as :meth:`textdiff.lm.DiffusionLM.score`
(the same seed gives the same draws), so the terms add up to the score: Σ_l term_l + prior = NELBO.
Term l is how many nats token l costs, averaged over the draws.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError


@torch.no_grad()
def token_nelbo_terms(lm, text: str, t_samples: int = 32, seed: int = 0) -> dict:
    """``{"tokens", "token_ids", "nelbo_terms", "prior", "nelbo"}`` of ``text`` under ``lm`` (nats)."""
    from ..objective import nelbo_terms

    tok = lm.tokenizer
    ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"] + [tok.eos_token_id]
    block = lm.process.block_size  # BD3-LM: whole blocks (EOS pads scored too, as score does)
    if block and len(ids) % block:
        ids += [tok.eos_token_id] * (block - len(ids) % block)
    if lm.seq_len and len(ids) > lm.seq_len:
        raise ConfigError(f"a text has {len(ids)} tokens, more than the model's {lm.seq_len}; split it")
    x0 = torch.tensor([ids] * t_samples, device=lm.device)  # [S, L]
    g = torch.Generator().manual_seed(seed)
    t = lm.process.sample_t(t_samples, device=lm.device, generator=g, seq_len=x0.shape[1])
    terms = nelbo_terms(lm.model, lm.process, x0, t=t, generator=g).loss.double().mean(0)  # [L]
    prior = float(lm.process.prior_loss(x0[:1]).sum())
    return {"tokens": tok.convert_ids_to_tokens(ids), "token_ids": ids, "nelbo_terms": terms.tolist(),
            "prior": prior, "nelbo": float(terms.sum()) + prior}
