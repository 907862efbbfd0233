"""Per-token NELBO terms of a text: what ``textdiff score --per-token`` prints.

The NELBO of a text x (EOS appended) is a sum over its positions plus the prior term,

    NELBO(x) = Σ_l E_t[ w(t) · ℓ_l(x_t, x) ] + KL(q(x_1 | x) ‖ p(x_1)),

estimated by :func:`textdiff.objective.estimate_nelbo`, the estimator of
:meth:`textdiff.lm.DiffusionLM.score` (text ``row`` of a score call with the same seed and
``t_samples`` gets the same draws), so the terms add up to the score: Σ_l term_l + prior = NELBO.
Term l is how many nats token l costs, averaged over the draws.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError


@torch.no_grad()
def token_nelbo_terms(lm, text: str, t_samples: int = 32, seed: int = 0, row: int = 0) -> dict:
    """``{"tokens", "token_ids", "nelbo_terms", "prior", "nelbo"}`` of ``text`` under ``lm`` (nats);
    ``row``: the text's index in the ``score`` call whose number the terms must add up to."""
    from ..objective import estimate_nelbo

    tok = lm.tokenizer
    ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"] + [tok.eos_token_id]
    block = lm.process.block_size  # BD3-LM: whole blocks (EOS pads scored too, as score does)
    if block and len(ids) % block:
        ids += [tok.eos_token_id] * (block - len(ids) % block)
    if lm.seq_len and len(ids) > lm.seq_len:
        raise ConfigError(f"a text has {len(ids)} tokens, more than the model's {lm.seq_len}; split it")
    x0 = torch.tensor([ids], device=lm.device)  # [1, L]
    est = estimate_nelbo(lm.model, lm.process, x0, seed=seed, t_samples=t_samples, rows=[row],
                         rows_per_call=t_samples)  # the same call as score's
    terms, prior = est.terms[0], float(est.prior[0])
    return {"tokens": tok.convert_ids_to_tokens(ids), "token_ids": ids, "nelbo_terms": terms.tolist(),
            "prior": prior, "nelbo": float(est.nats[0])}
