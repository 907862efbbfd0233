"""lm-evaluation-harness adapter: run lm-eval tasks on textdiff models (extra ``textdiff[lmeval]``).

Importing this module without ``lm_eval`` installed raises :class:`MissingExtraError` naming the
extra. With it installed the model registers as ``textdiff``::

    lm_eval --model textdiff --model_args pretrained=runs/quickstart/final,mc_samples=64 --tasks lambada_openai

* ``loglikelihood(context, continuation)``: −(conditional NELBO) from
  :func:`textdiff.eval.conditional.conditional_nll` (a LOWER bound on log p for diffusion models,
  exact for AR), and ``is_greedy`` from greedy decoding of the continuation positions (LLaDA's way
  of scoring LAMBADA accuracy). Set ``greedy=false`` to skip the decoding (is_greedy is then False).
* ``loglikelihood_rolling(text)``: −NELBO of the whole text (windows of the model's context, wrap
  layout without EOS), through :func:`textdiff.eval.elbo.evaluate_likelihood`.
* ``generate_until(context, gen_kwargs)``: ``max_gen_toks`` new tokens with the model's sampler,
  cut at the first stop string.
"""
from __future__ import annotations

from .common import require

require("lm_eval", "lmeval", "the lm-evaluation-harness adapter")

import torch  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from .conditional import conditional_nll, greedy_match  # noqa: E402
from .elbo import evaluate_likelihood  # noqa: E402


def _flag(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


@register_model("textdiff")
class TextDiffLM(LM):
    """An lm-eval ``LM`` over a :class:`textdiff.lm.DiffusionLM` (or a loaded one via ``lm=``)."""

    def __init__(self, pretrained=None, lm=None, mc_samples=32, t_samples=8, greedy=True, steps=None,
                 seed=0, device=None, batch_size=1, **kwargs):
        super().__init__()
        from ..lm import DiffusionLM

        if lm is None:
            if pretrained is None:
                raise ConfigError("the textdiff lm-eval model needs pretrained=<model folder>")
            lm = DiffusionLM.from_pretrained(pretrained, device=device)
        self.lm = lm
        self.mc_samples = int(mc_samples)
        self.t_samples = int(t_samples)
        self.greedy = _flag(greedy)
        self.steps = None if steps in (None, "None") else int(steps)
        self.seed = int(seed)
        self._calls = 0

    def _encode(self, text: str) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        out = []
        for req in requests:
            context, continuation = req.args
            prompt, answer = self._encode(context), self._encode(continuation)
            score = conditional_nll(self.lm.model, self.lm.process, prompt, answer, mc_samples=self.mc_samples,
                                    seed=self.seed, index=self._calls, seq_len=self.lm.seq_len)
            self._calls += 1
            hit = False
            if self.greedy:
                ar = not getattr(self.lm.process, "is_diffusion", True)  # AR: the start token takes a position
                keep = (self.lm.seq_len or len(prompt) + len(answer) + 1) - len(answer) - int(ar)
                hit = greedy_match(self.lm.model, self.lm.process, prompt[max(0, len(prompt) - keep):], answer,
                                   steps=self.steps, pad_token_id=self.lm.tokenizer.pad_token_id or 0)
            out.append((-score.nll, bool(hit)))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        out = []
        L = int(self.lm.seq_len)
        for req in requests:
            (text,) = req.args
            ids = self._encode(text)
            rows = [ids[i:i + L] for i in range(0, len(ids), L)]
            total = 0.0
            for row in rows:  # a short last window is evaluated at its own length
                res = evaluate_likelihood(self.lm.model, self.lm.process, torch.tensor([row]), t_samples=self.t_samples,
                                          seed=self.seed + self._calls, bootstrap=0)
                total += res.nelbo * res.tokens
            self._calls += 1
            out.append(-total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False):
        out = []
        for req in requests:
            context, gen_kwargs = req.args
            until = gen_kwargs.get("until", []) if isinstance(gen_kwargs, dict) else []
            until = [until] if isinstance(until, str) else list(until)
            n = int(gen_kwargs.get("max_gen_toks", 64)) if isinstance(gen_kwargs, dict) else 64
            prompt = self._encode(context)
            limit = (self.lm.seq_len or len(prompt) + n) - n
            prompt_text = self.lm.tokenizer.decode(prompt[max(0, len(prompt) - limit):])
            ar = not getattr(self.lm.process, "is_diffusion", True)  # AR: one token per step, exact KV cache
            text = self.lm.generate([prompt_text], max_new_tokens=n, steps=n if ar else (self.steps or n),
                                    block_size=1 if ar else None, seed=self.seed + self._calls)[0]
            self._calls += 1
            new = text[len(prompt_text):]
            for stop in until:
                if stop and stop in new:
                    new = new[: new.index(stop)]
            out.append(new)
        return out
