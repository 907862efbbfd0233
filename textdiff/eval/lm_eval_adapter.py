"""lm-evaluation-harness adapter: run lm-eval tasks on textdiff models (extra ``textdiff[lmeval]``).

From the command line (lm-eval's own CLI, every lm-eval argument passes through)::

    textdiff lm-eval --model textdiff --model_args pretrained=runs/quickstart/final,mc_samples=128 \\
        --tasks lambada_openai --batch_size 32
    lm_eval --model textdiff ...      # the same with an lm-eval that discovers the "lm_eval.models"
                                      # entry point textdiff declares (lm-eval 0.4.13 does not)

From Python, importing this module registers the model name ``textdiff``. Importing it without
``lm_eval`` installed raises :class:`MissingExtraError` naming the extra.

* ``loglikelihood(context, continuation)``: −(conditional NELBO) from
  :func:`textdiff.eval.conditional.conditional_nll_batch`: LLaDA's protocol (Nie et al. 2025), the
  prompt clean and only the continuation corrupted, ``mc_samples`` Monte-Carlo draws of t (stratified)
  per request, a LOWER bound on log p for diffusion models and the exact log-likelihood for AR ones
  (one draw). ``is_greedy`` comes from greedy decoding of the continuation positions (LLaDA's
  LAMBADA accuracy); ``greedy=false`` skips it (is_greedy is then False).
* ``loglikelihood_rolling(text)``: −NELBO of the whole text, cut into windows of the model's context
  (each window scored on its own, ``t_samples`` draws per window), via
  :func:`textdiff.eval.elbo.evaluate_likelihood`.
* ``generate_until(context, gen_kwargs)``: ``max_gen_toks`` new tokens with the model's default
  sampler (its saved decoding; ``temperature`` from gen_kwargs when the task gives one), cut at EOS
  and at the first ``until`` string.

``batch_size`` counts network rows per forward: the Monte-Carlo draws of one or several requests
(LLaDA's meaning), the windows of a rolling request, the prompts of a generation batch. The noise of
each request is keyed by its text and ``seed``, so a score never depends on the batch size or on
which other requests are evaluated. ``device``: lm-eval's default ``cuda:0`` falls back to CPU when
no GPU is present. ``progress=false`` hides the tqdm bar (shown on a terminal only).
"""
from __future__ import annotations

import sys
import zlib

from .common import require

require("lm_eval", "lmeval", "the lm-evaluation-harness adapter")

import torch  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from ..progress import Progress  # noqa: E402
from .conditional import conditional_nll_batch, greedy_matches  # noqa: E402
from .elbo import evaluate_likelihood  # noqa: E402

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def _flag(value, name: str = "flag") -> bool:
    """A model_args flag: a bool, or true/false, yes/no, 1/0 (anything else is a one-line error)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("1", "true", "yes", "0", "false", "no"):
        raise ConfigError(f"model_args {name}={value!r} is not true or false; write {name}=true or {name}=false")
    return text in ("1", "true", "yes")


def _int_arg(name: str, value, minimum: int = 0) -> int:
    """A model_args integer (lm-eval passes strings): a one-line error naming it when it is not one."""
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ConfigError(f"model_args {name}={value!r} must be an integer >= {minimum}, e.g. {name}={max(minimum, 1)}")
    return number


def _optional_int(value, name: str = "steps"):
    return None if value in (None, "None", "none", "") else _int_arg(name, value, minimum=1)


def pick_device(device) -> str:
    """The requested device, or CPU when it names CUDA and no GPU is present (lm-eval defaults to cuda:0)."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        print(f"textdiff lm-eval: no CUDA device, running on CPU instead of {device}", file=sys.stderr)
        return "cpu"
    return str(device)


def request_key(*texts: str) -> int:
    """A stable 31-bit key of a request's text: its Monte-Carlo noise does not depend on its position."""
    return zlib.crc32("\x1f".join(texts).encode("utf-8")) & 0x7FFFFFFF


@register_model("textdiff")
class TextDiffLM(LM):
    """An lm-eval ``LM`` over a :class:`textdiff.lm.DiffusionLM` (a folder via ``pretrained=``, or a
    loaded one via ``lm=``)."""

    def __init__(self, pretrained=None, lm=None, mc_samples=32, t_samples=8, greedy=True, steps=None,
                 seed=0, device=None, batch_size=16, dtype=None, max_gen_toks=256, progress=True,
                 max_batch_size=None, **kwargs):
        super().__init__()
        from ..lm import DiffusionLM

        if kwargs:
            raise ConfigError(f"unknown textdiff model_args {sorted(kwargs)}; use pretrained, mc_samples, t_samples, "
                              "greedy, steps, seed, batch_size, dtype, max_gen_toks, progress")
        self.mc_samples = _int_arg("mc_samples", mc_samples, minimum=1)  # every model_arg checked before loading
        self.t_samples = _int_arg("t_samples", t_samples, minimum=1)
        self.greedy = _flag(greedy, "greedy")
        self.steps = _optional_int(steps, "steps")
        self.seed = _int_arg("seed", seed)
        self.max_gen_toks = _int_arg("max_gen_toks", max_gen_toks, minimum=1)
        self.progress = _flag(progress, "progress")
        if str(batch_size).startswith("auto"):  # no memory probing: a fixed size that suits small models
            batch_size = 16
        self.batch_size = _int_arg("batch_size", batch_size, minimum=1)
        if lm is None:
            if pretrained is None:
                raise ConfigError("the textdiff lm-eval model needs --model_args pretrained=<model folder or hub id>")
            if dtype is not None and str(dtype) not in DTYPES:
                raise ConfigError(f"dtype={dtype!r}; use one of {sorted(DTYPES)}")
            lm = DiffusionLM.from_pretrained(pretrained, device=pick_device(device),
                                             dtype=None if dtype is None else DTYPES[str(dtype)])
        self.lm = lm
        self.ar = not self.lm.process.is_diffusion

    # ---- helpers -----------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Trailing spaces of the context belong to the continuation (lm-eval's convention)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        return self._encode(context), self._encode(continuation)

    def _bar(self, total: int, desc: str, disable_tqdm: bool) -> Progress:
        return Progress(total, desc, unit="req", enabled=None if (self.progress and not disable_tqdm) else False)

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.lm.tokenizer, "name_or_path", "textdiff").replace("/", "__")

    def chat_template(self, chat_template=False):
        """The template lm-eval records (and applies through :meth:`apply_chat_template`); asking
        for one on a model whose tokenizer has none is a one-line error, not a raw traceback later."""
        if not chat_template:
            return None
        template = getattr(self.lm.tokenizer, "chat_template", None)
        if not template:
            raise ConfigError("--apply_chat_template was given but this model's tokenizer has no chat template; "
                              "drop --apply_chat_template (or use a model whose tokenizer has one)")
        return template if isinstance(template, str) else str(template)

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        from ..chat_template import render_chat

        return render_chat(self.lm.tokenizer, chat_history, add_generation_prompt=add_generation_prompt)

    # ---- requests ----------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        texts = [req.args for req in requests]
        pairs = [self._encode_pair(c, a) for c, a in texts]
        K = 1 if self.ar else self.mc_samples
        with self._bar(len(pairs) * (2 if self.greedy else 1), "textdiff loglikelihood", disable_tqdm) as bar:
            scores = conditional_nll_batch(
                self.lm.model, self.lm.process, pairs, mc_samples=self.mc_samples, seed=self.seed,
                indices=[request_key(c, a) for c, a in texts], seq_len=self.lm.seq_len, batch_size=self.batch_size,
                on_done=lambda i: bar.update(1, tokens=K * (len(pairs[i][0]) + len(pairs[i][1]))))
            hits = [False] * len(pairs)
            if self.greedy:
                room = (self.lm.seq_len or 10**9) - int(self.ar)  # AR: the start token takes a position
                kept = [(p[max(0, len(p) + len(a) - room):], a) for p, a in pairs]
                hits = greedy_matches(self.lm.model, self.lm.process, kept, steps=self.steps,
                                      pad_token_id=self.lm.tokenizer.pad_token_id or 0, batch_size=self.batch_size,
                                      on_done=lambda i: bar.update(1, tokens=len(kept[i][1])))
        return [(-s.nll, bool(h)) for s, h in zip(scores, hits)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        out = []
        L = int(self.lm.seq_len)
        with self._bar(len(requests), "textdiff loglikelihood_rolling", disable_tqdm) as bar:
            for req in requests:
                (text,) = req.args
                ids = self._encode(text)
                key = request_key(text)
                full = [ids[i:i + L] for i in range(0, len(ids) - len(ids) % L, L)]
                groups = [g for g in (full, [ids[len(ids) - len(ids) % L:]] if len(ids) % L else []) if g]
                total = 0.0
                for j, rows in enumerate(groups):  # the full windows in batches, a short last window on its own
                    res = evaluate_likelihood(self.lm.model, self.lm.process, torch.tensor(rows), t_samples=self.t_samples,
                                              batch_size=self.batch_size, seed=(self.seed + key + j) % 2**31, bootstrap=0)
                    total += res.nelbo * res.tokens
                out.append(-total)
                bar.update(1, tokens=len(ids) * (1 if self.ar else self.t_samples))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False):
        jobs = []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            kw = dict(gen_kwargs) if isinstance(gen_kwargs, dict) else {}
            until = kw.get("until", [])
            until = [until] if isinstance(until, str) else list(until or [])
            n = int(kw.get("max_gen_toks", self.max_gen_toks))
            limit = self.lm.seq_len or getattr(self.lm.model.config, "max_position_embeddings", None)
            if limit is not None:
                n = max(1, min(n, limit - int(self.ar)))
            prompt = self._encode(context)
            keep = (limit - n - int(self.ar)) if limit is not None else len(prompt)
            prompt = prompt[max(0, len(prompt) - keep):] if keep > 0 else []
            temperature = kw.get("temperature")
            if kw.get("do_sample") is False:
                temperature = 0.0
            jobs.append({"i": i, "prompt": prompt, "n": n, "until": until, "seed": (self.seed + request_key(context)) % 2**31,
                         "temperature": None if temperature is None else float(temperature)})
        out = [""] * len(jobs)
        groups: dict[tuple, list[dict]] = {}
        for job in jobs:
            groups.setdefault((job["n"], job["temperature"]), []).append(job)
        with self._bar(len(jobs), "textdiff generate_until", disable_tqdm) as bar:
            for (n, temperature), members in groups.items():
                for lo in range(0, len(members), self.batch_size):
                    chunk = members[lo: lo + self.batch_size]
                    _, res = self.lm.generate([job["prompt"] for job in chunk], max_new_tokens=n,
                                              steps=n if self.ar else (self.steps or n), temperature=temperature,
                                              seed=[job["seed"] for job in chunk], return_output=True)
                    for job, new in zip(chunk, res.generated):
                        text = self.lm.tokenizer.decode(new, skip_special_tokens=True)
                        for stop in job["until"]:
                            if stop and stop in text:
                                text = text[: text.index(stop)]
                        out[job["i"]] = text
                    bar.update(len(chunk), tokens=n * len(chunk))
        return out
