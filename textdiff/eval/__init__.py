"""Evaluation metrics (the runnable harness and its suites live in ``evaluation/``).

* :mod:`.elbo`: NELBO / perplexity bound (exact NLL for AR) with confidence intervals, bits per char;
* :mod:`.conditional`: Monte-Carlo conditional likelihood of an answer given a prompt (LLaDA-style);
* :mod:`.gen_ppl`: generative perplexity under a reference causal LM;
* :mod:`.diversity`: unigram entropy per sample, distinct-n, repetition;
* :mod:`.mauve`: MAUVE over several clustering seeds (extra ``textdiff[mauve]``);
* :mod:`.speed`: sampling with tokens/s, NFE, latency;
* :mod:`.lm_eval_adapter`: an lm-evaluation-harness model (extra ``textdiff[lmeval]``), imported only
  when asked for.
"""
from .common import MissingExtraError
from .conditional import ConditionalScore, conditional_nll, greedy_match
from .diversity import diversity, unigram_entropy
from .elbo import LikelihoodResult, evaluate_likelihood, text_rows
from .gen_ppl import ReferenceLM, generative_perplexity, load_reference
from .mauve import mauve_score
from .speed import sample_texts

__all__ = [
    "MissingExtraError", "ConditionalScore", "conditional_nll", "greedy_match", "diversity", "unigram_entropy",
    "LikelihoodResult", "evaluate_likelihood", "text_rows", "ReferenceLM", "generative_perplexity",
    "load_reference", "mauve_score", "sample_texts",
]
