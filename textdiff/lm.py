"""``DiffusionLM``: a denoiser, its tokenizer, its forward process and a default sampler in one object.

    lm = DiffusionLM.from_pretrained("runs/quickstart/final")
    lm.generate(["The list"], max_new_tokens=64, steps=64, seed=0)
    lm.score(["Some text."])            # NELBO per text (nats)
    lm.save_pretrained("my-model")

A saved folder is a Hugging Face model folder (``config.json`` + ``model.safetensors``), the
tokenizer files, ``textdiff.json`` with the process and sampler configs, a model card ``README.md``
and (textdiff's own network) the modeling code behind ``auto_map`` for plain ``transformers`` users
with ``trust_remote_code=True`` (textdiff itself never runs it). The format, its reading and its one
writer are :mod:`textdiff.models.format`'s.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from . import arguments
from .bounds import check_memory, logit_bytes
from .config import resolve_section, to_dict
from .errors import ConfigError, warn_if
from .processes.base import build_process
from .samplers.base import build_sampler, unused_steps_note
from .signatures import check_keywords, checked, forwarded
from .tokenization import count_unknown, encode_text


class DiffusionLM:
    def __init__(self, model, tokenizer, process, sampler_config=None, seq_len: Optional[int] = None,
                 generation: Optional[dict] = None, stop_token_ids: Optional[Sequence[int]] = None):
        self.model = model
        self.tokenizer = tokenizer
        self.process = process
        self.sampler_config = sampler_config if sampler_config is not None else resolve_section("sampler", "ancestral", "sampler")
        self.seq_len = seq_len or getattr(model.config, "max_position_embeddings", None)
        #: defaults of :meth:`generate` the model was released with, e.g. {"block_size": 32} (LLaDA)
        self.generation_defaults = dict(generation or {})
        #: token ids that end an answer besides EOS (e.g. LLaDA's <|eot_id|>, Dream's <|im_end|>)
        self.stop_token_ids = [int(i) for i in (stop_token_ids or [])]
        self.source_dir: Optional[Path] = None  # the folder it was loaded from (model card of a re-save)

    # ---- loading and saving -------------------------------------------------------------------
    @classmethod
    @checked
    def from_pretrained(cls, name_or_path: Union[str, Path], device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
                        *, tokenizer=None, revision: Optional[str] = None, trust_remote_code: bool = False,
                        allow_pickle: bool = False, device_map=None, max_memory: Optional[dict] = None,
                        offload_folder: Optional[Union[str, Path]] = None):
        """Load a textdiff model folder (a run's ``final/`` or ``checkpoint-N/``, or a converted
        checkpoint) or a published checkpoint (MDLM, BD3-LM, SEDD, DUO / UDLM, LLaDA, Dream: see
        :mod:`textdiff.models.published`), from a local folder or a hub id.

        tokenizer: a tokenizer or its path / hub id, for published folders that ship none (default:
            the family's, e.g. GPT-2 + [MASK] for OpenWebText models).
        trust_remote_code: only for external Hugging Face denoisers whose architecture transformers
            does not know; no file in the folder can switch it on.
        allow_pickle: read ``*.bin`` weights with ``torch.load(weights_only=True)`` (refused otherwise).
        device_map: spread a large model (LLaDA, Dream, or their converted folders) over devices as
            Hugging Face does: ``"auto"`` / ``"balanced"`` / ``"balanced_low_0"`` / ``"sequential"`` (within
            ``max_memory``, e.g. ``{0: "20GiB", "cpu": "60GiB"}``), ``"cpu"``, or a dict module name ->
            device (``"cpu"``, ``"cuda:0"``, an int, ``"disk"`` = memory-mapped files in ``offload_folder``).
            Weights go shard by shard straight to their device; exclusive with ``device``.
        """
        from .models import dispatch
        from .models.fit import check_dtype
        from .models.format import PUBLISHED, folder_kind
        from .models.loading import resolve_model_path

        dispatch.check_arguments(device_map, max_memory, offload_folder, device)
        arguments.loading(name_or_path, tokenizer, revision, trust_remote_code, allow_pickle)
        if device_map is None:
            device = arguments.device(device) or ("cuda" if torch.cuda.is_available() else "cpu")
        check_dtype(dtype, device, device_map)  # a torch dtype; float16 on CPU: one warning line
        path = resolve_model_path(name_or_path, revision=revision, allow_pickle=allow_pickle)
        if folder_kind(path) == PUBLISHED:
            from .models.published import LoadOptions, load_published

            pub = load_published(path, LoadOptions(tokenizer=tokenizer, dtype=dtype, device=device,
                                                   allow_pickle=allow_pickle, revision=revision, device_map=device_map,
                                                   max_memory=max_memory, offload_folder=offload_folder))
            pub.model.eval()
            process = build_process(pub.process, vocab_size=pub.model.config.vocab_size, mask_id=pub.tokenizer.mask_token_id)
            sampler = resolve_section("sampler", pub.sampler, "sampler")
            lm = cls(pub.model, pub.tokenizer, process, sampler, seq_len=pub.seq_len,
                     generation=pub.notes.get("generation"), stop_token_ids=pub.notes.get("stop_token_ids"))
            lm.source_dir = path  # never overwritten by a save
            lm.published = pub.notes.get("published")  # config.json kept for convert --to published
            return lm
        placement = None if device_map is None else {"device_map": device_map, "max_memory": max_memory,
                                                      "offload_folder": offload_folder}
        warn_if(tokenizer is not None and f"tokenizer= is not used: {path} is a textdiff model folder with its own "
                                          "tokenizer (tokenizer= is for published folders that ship none)")
        return cls._from_textdiff_folder(path, device, dtype, trust_remote_code, allow_pickle, placement)

    @classmethod
    def _from_textdiff_folder(cls, path: Path, device: str, dtype, trust_remote_code: bool, allow_pickle: bool,
                              placement: Optional[dict] = None):
        from .models.format import read_model_folder

        model, tokenizer, meta = read_model_folder(path, device, dtype, trust_remote_code, allow_pickle, placement)
        process = build_process(meta["process"], vocab_size=model.config.vocab_size, mask_id=tokenizer.mask_token_id)
        sampler = resolve_section("sampler", meta.get("sampler") or "ancestral", "sampler")
        from .models.fit import check_folder_pipeline

        check_folder_pipeline(model, process, sampler, path / "textdiff.json")  # one line when it does not fit
        lm = cls(model, tokenizer, process, sampler, seq_len=meta.get("seq_len"), generation=meta.get("generation"),
                 stop_token_ids=meta.get("stop_token_ids"))
        lm.source_dir = path  # its recipe and metrics.jsonl feed the model card of a re-save
        lm.published = meta.get("published")  # kept by a re-save
        return lm

    def pipeline(self) -> dict:
        """The contents of the ``textdiff.json`` this model is saved with."""
        from .models.format import pipeline

        return pipeline(self.process.config, self.sampler_config, self.tokenizer, self.seq_len,
                        self.generation_defaults, self.stop_token_ids, getattr(self, "published", None))

    @checked
    def save_pretrained(self, path: Union[str, Path], remote_code: bool = True, model_card: bool = True,
                        repo_id: Optional[str] = None, overwrite: bool = False) -> None:
        """Write the folder :meth:`from_pretrained` reads, atomically: into a new temporary folder beside
        ``path``, then renamed to ``path``.

        overwrite: ``path`` may exist only when this is set, and then only as a model folder textdiff
        wrote (its marker file present); never a file, the folder this model was loaded from, or the
        working folder (one-line errors, :mod:`textdiff.models.format.writer`). remote_code: also write
        the network's modeling files and ``auto_map`` (textdiff's own network only), so that people
        without textdiff load it with ``AutoModel.from_pretrained(..., trust_remote_code=True)``. On by
        default, as Hugging Face users expect of a custom architecture; textdiff never executes these
        files. model_card: write ``README.md`` (recipe, data, metrics of the run it came from, usage)."""
        from .models.format import RECIPE_FILE, save_model_folder

        arguments.flag("overwrite", overwrite)
        arguments.path("path", path)
        arguments.flag("remote_code", remote_code)
        arguments.flag("model_card", model_card)
        arguments.optional_text("repo_id", repo_id)
        source = getattr(self, "source_dir", None)
        recipe = Path(source) / RECIPE_FILE if source is not None else None
        save_model_folder(path, self.model, self.tokenizer, self.pipeline(),
                          recipe_text=recipe.read_text() if recipe is not None and recipe.is_file() else None,
                          metrics_file=Path(source).parent / "metrics.jsonl" if source is not None else None,
                          remote_code=remote_code, model_card=model_card, repo_id=repo_id, overwrite=overwrite,
                          sources=[source])

    @checked
    def push_to_hub(self, repo_id: str, private: Optional[bool] = None, token: Optional[str] = None,
                    commit_message: str = "Upload textdiff model", revision: Optional[str] = None,
                    remote_code: bool = True, model_card: bool = True) -> str:
        """Upload the folder :meth:`save_pretrained` writes (model card and, by default, the modeling
        code for ``trust_remote_code`` users) to a Hugging Face Hub model repository (created when
        missing); returns the repository URL. ``from_pretrained(repo_id)`` loads it back.
        Needs a network and a token with write access (``huggingface-cli login`` or ``token=``).
        The folder is staged in a new temporary folder of the system's, removed afterwards; the
        marker of a textdiff-written folder stays behind (it describes this machine's copy)."""
        import tempfile

        from huggingface_hub import HfApi

        from .models.format import MARKER

        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory(prefix="textdiff-push-") as tmp:
            folder = Path(tmp) / "model"
            self.save_pretrained(folder, remote_code=remote_code, model_card=model_card, repo_id=repo_id)
            (folder / MARKER).unlink()
            api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                              commit_message=commit_message, revision=revision)
        return str(url)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the parameters' device, or for a model loaded with ``device_map`` the
        execution device of its embedding layer (Hugging Face's convention)."""
        from .models.dispatch import input_device

        return input_device(self.model)

    # ---- sampling -----------------------------------------------------------------------------
    @checked
    def make_sampler(self, sampler=None, **overrides):
        """A sampler from a name, mapping or config (default: the saved one), with field overrides
        (:meth:`sampler_config_for`)."""
        if sampler is not None and not isinstance(sampler, (str, dict)) and not hasattr(sampler, "name"):
            raise ConfigError(f"sampler must be a name, a mapping or a sampler config, got {type(sampler).__name__}")
        return build_sampler(self.sampler_config_for(sampler, **overrides), self.process)

    def sampler_config_for(self, sampler=None, **options):
        """The sampler config :meth:`generate` decodes with for ``sampler`` and its ``options`` (None
        values ignored): naming another sampler keeps the saved options that apply to it (LLaDA's
        ``temperature=0`` stays 0 with ``"threshold"``), a mapping or config is the whole spec, and
        explicit options override (:func:`~textdiff.samplers.base.compose_sampler_spec`). Its
        ``kept`` attribute lists what was carried over from the saved sampler."""
        from .samplers.base import compose_sampler_spec

        spec, kept = compose_sampler_spec(self.sampler_config, sampler, {k: v for k, v in options.items() if v is not None})
        config = resolve_section("sampler", spec, "sampler")
        config.kept = kept  # an attribute, not a field: never saved
        return config

    def cache_rules(self, use_cache, block_size: Optional[int] = None, options: Optional[dict] = None):
        """``(block_size, lookback, options)`` for an approximate cache (``use_cache`` "prefix" / "dual"):
        the family's released rules (``generation_defaults["cached"]``; Dream: Fast-dLLM's block 32,
        ``lookback=0``, ``first_commit="leftmost"``) for whatever the caller left unset (None)."""
        options = dict(options or {})
        rules = self.generation_defaults.get("cached") if use_cache in ("prefix", "dual") else None
        if not rules:
            return block_size, None, options
        if "first_commit" in rules and "first_commit" not in options:
            options["first_commit"] = rules["first_commit"]
        return (block_size if block_size is not None else rules.get("block_size")), rules.get("lookback"), options

    @checked
    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt: a string as it is, or a chat (a list of ``{"role", "content"}``
        messages) through the tokenizer's chat template with the assistant turn opened."""
        if isinstance(prompts, str) or _is_chat(prompts):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise ConfigError(f"prompts must be a string, a chat or a list of them, got {type(prompts).__name__}")
        if len(prompts) == 0:
            raise ConfigError("prompts is empty; pass a list of strings (use [''] for an unconditional sample)")
        mask_id = getattr(self.process, "mask_id", None)  # its spelling in a string prompt is text (tokenization.encode_text)
        return [self._chat_ids(p) if _is_chat(p) else encode_text(self.tokenizer, p, mask_id, f"prompt {i}")
                if isinstance(p, str) or _is_chat(p) else [int(i) for i in p]
                for i, p in enumerate(prompts)]  # a prompt is a string, a chat or a list of token ids

    def _chat_ids(self, messages) -> list[int]:
        from .chat_template import render_chat

        text = render_chat(self.tokenizer, list(messages), add_generation_prompt=True)  # bounded; one-line errors
        return encode_text(self.tokenizer, text, getattr(self.process, "mask_id", None), "the chat")

    @checked
    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        steps: Optional[int] = None,
        sampler=None,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        block_size: Optional[int] = None,
        return_output: bool = False,
        guidance_weight: float = 0.0,
        guidance_uncond: str = "mask",
        sampler_options: Optional[dict] = None,
        progress: Optional[bool] = False,
        **kwargs,
    ):
        """Continue each prompt with ``max_new_tokens`` sampled tokens; returns the decoded texts
        (prompt + continuation). ``return_output=True`` also returns the GenerationOutput (NFE, time).

        prompts: strings, or chats (lists of ``{"role": ..., "content": ...}`` messages) which go
        through the tokenizer's chat template, e.g. ``lm.generate([[{"role": "user", "content": "hi"}]])``;
        a chat's text is the answer only. ``block_size`` defaults to the model's released decoding
        (``generation_defaults``, e.g. 32 for LLaDA); answers end at EOS or a ``stop_token_ids`` token.

        sampler: a name (``"first_hitting"``, ``"confidence"``, ...), mapping or config; default the
        saved one. A name keeps the saved options it shares (LLaDA's ``temperature=0`` with
        ``"threshold"``); a mapping or config is the whole spec (:meth:`sampler_config_for`).
        sampler_options: any field of the chosen sampler's config, e.g. ``{"threshold": 0.8}`` or
        ``{"temperature": 0}``; unknown fields are one-line errors.
        block_size: decode in windows of this many tokens (default: the model's released block size,
        e.g. 32 for LLaDA, when ``max_new_tokens`` exceeds it; the block size of block-causal models
        such as BD3-LM; with ``use_cache="prefix"|"dual"`` the family's cache rules, e.g. Dream's 32;
        one window otherwise). seed: row b uses seed + b (batch-invariant). guidance_weight: classifier-free guidance
        weight w (0 = none; see :mod:`textdiff.guidance`), guidance_uncond: "mask" or "drop".
        progress: a tqdm bar of sampler steps with tokens/s on stderr (None: when stderr is a terminal).
        Other keyword arguments go to :func:`textdiff.generation.generate` (``use_cache``,
        ``callback``, ``template``, ...)."""
        from .generation import generate
        from .progress import Progress

        check_keywords("DiffusionLM.generate", kwargs, forwarded(DiffusionLM.generate, generate, _SET_BY_GENERATE))
        prompts, max_new_tokens, steps, seed, block_size = _generate_arguments(
            prompts, max_new_tokens, steps, sampler, temperature, top_k, top_p, seed, block_size, return_output,
            guidance_weight, guidance_uncond, sampler_options, progress, kwargs.get("callback"))
        check_memory(len(prompts), min(block_size or max_new_tokens, max_new_tokens), self.process.vocab_size, self.device,
                     item_bytes=logit_bytes(self.model))  # the logits alone exceed free memory: one line, before any work
        chats = [_is_chat(p) for p in prompts]
        ids = self.encode_prompts(prompts)
        layout = self.decoding_layout
        block_size = layout.window(block_size, max_new_tokens)
        options = _sampler_options(sampler_options, temperature=temperature, top_k=top_k, top_p=top_p)
        s, block_size = self._decoding_sampler(sampler, options, block_size, kwargs)
        warn_if(unused_steps_note(steps, s, self.process))  # an explicit steps the decoding ignores: one warning line
        if guidance_weight:
            from .guidance import ClassifierFreeGuidance, trained_for_guidance

            kwargs["denoise"] = ClassifierFreeGuidance(self.model, self.process, guidance_weight, uncond=guidance_uncond,
                                                       trained=trained_for_guidance(self.source_dir))
        rows = layout.arrange(ids, max_new_tokens, block_size, steps, template="template" in kwargs)
        if rows.template is not None:
            kwargs["template"] = rows.template
        max_new_tokens = rows.new_tokens  # whole_blocks families: N rounded up to whole windows
        eos = self._end_tokens(kwargs)
        planned = rows.steps or max_new_tokens
        bar = Progress(planned, "generate", unit="step", enabled=progress)
        callback = _step_callback(bar, kwargs.pop("callback", None), len(ids) * max_new_tokens / planned)
        with bar:
            out = generate(
                self.model, self.process, s, rows.ids, max_new_tokens=max_new_tokens, steps=planned,
                seed=seed, block_size=block_size, pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=eos, callback=callback, **kwargs,
            )
        out.generated = rows.answer(out.generated)
        if self.stop_token_ids:
            out.generated = [_cut(g, self.stop_token_ids) for g in out.generated]
        texts = [self.tokenizer.decode(g if chat else p + g, skip_special_tokens=True)
                 for p, g, chat in zip(ids, out.generated, chats)]
        return (texts, out) if return_output else texts

    def _decoding_sampler(self, sampler, options: dict, block_size, kwargs: dict):
        """(the sampler of one generate() call, its window width): a family with ``cached`` decoding
        (e.g. Dream's caches) takes Fast-dLLM's rules (:meth:`cache_rules`) unless given; sets
        ``kwargs["lookback"]`` by them."""
        if self.generation_defaults.get("cached"):
            block_size, lookback, ruled = self.cache_rules(kwargs.get("use_cache"), block_size, options)
            if lookback is not None:
                kwargs.setdefault("lookback", lookback)
            if sampler is None or isinstance(sampler, (str, dict)):  # a config object is taken as it is
                options = {k: v for k, v in ruled.items() if not (isinstance(sampler, dict) and k in sampler)}
        return self.make_sampler(sampler, **options), block_size

    def _end_tokens(self, kwargs: dict):
        """The EOS id generate() stops rows at; a family declaring ``pad_after_eos`` (DiffusionGemma) ends
        a row at every stop token and pads finished rows (sets ``kwargs["pad_after_eos"]`` unless given)."""
        eos = self.tokenizer.eos_token_id
        if self.generation_defaults.get("pad_after_eos"):
            eos = [eos] + [i for i in self.stop_token_ids if i != eos]
            kwargs.setdefault("pad_after_eos", True)
        return eos

    @property
    def decoding_layout(self):
        """How this model lays prompts and answer out for decoding (:mod:`textdiff.layouts`): declared by
        its process (next-token models) and its family (``generation_defaults``, e.g. LLaDA 2.0's blocks)."""
        from .layouts import layout_for

        return layout_for(self.process, self.model.config, self.generation_defaults)

    # ---- likelihood ---------------------------------------------------------------------------
    @checked
    @torch.no_grad()
    def score(self, texts: Sequence[str], t_samples: int = 32, seed: int = 0, progress: Optional[bool] = False) -> list[float]:
        """NELBO (nats, an upper bound on −log p) of each text with EOS appended, averaged over
        ``t_samples`` draws of t per text (stratified), by :func:`textdiff.objective.estimate_nelbo` (the
        estimator of training validation and the harness; text i is row i). For AR models it is the exact NLL.

        Block diffusion needs whole blocks: the last one is filled with EOS and those pads are
        scored too, so the result bounds −log p(text, pads) >= −log p(text), still a valid bound.
        progress: a tqdm bar over the texts with tokens/s (None: when stderr is a terminal)."""
        from .objective import estimate_nelbo
        from .progress import Progress

        texts = arguments.texts("texts", texts)
        t_samples = arguments.integer("t_samples", t_samples, minimum=1)
        arguments.optional_flag("progress", progress)
        seed = arguments.integer("seed", seed)
        results = []
        unknown = 0
        bar = Progress(len(texts), "score", unit="text", enabled=progress)
        for i, text in enumerate(texts):
            ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + [self.tokenizer.eos_token_id]
            unknown += count_unknown(self.tokenizer, ids)
            block = self.process.block_size  # BD3-LM: whole blocks of L' tokens
            if block and len(ids) % block:
                ids += [self.tokenizer.eos_token_id] * (block - len(ids) % block)
            if self.seq_len and len(ids) > self.seq_len:
                raise ConfigError(f"text {i} has {len(ids)} tokens, more than the model's {self.seq_len}; split it")
            check_memory(t_samples, len(ids), self.process.vocab_size, self.device, "use fewer t_samples",
                         item_bytes=logit_bytes(self.model))
            x0 = torch.tensor([ids], device=self.device)  # [1, L]
            est = estimate_nelbo(self.model, self.process, x0, seed=seed, t_samples=t_samples, rows=[i],
                                 rows_per_call=t_samples)  # the K draws in one call
            results.append(float(est.nats[0]))
            bar.update(1, tokens=len(ids) * t_samples)
        bar.close()
        if unknown:
            warnings.warn(f"{unknown} token(s) of the scored text are {self.tokenizer.unk_token!r}: the tokenizer cannot "
                          "represent that text, so its NELBO is not the text's; use a tokenizer with byte fallback", stacklevel=2)
        return results


def _sampler_options(options: Optional[dict], **named) -> dict:
    """``sampler_options`` with generate()'s named sampler arguments; the same field given both ways
    with different values is a one-line error."""
    out = dict(options or {})
    for key, value in named.items():
        if value is None:
            continue
        if key in out and out[key] != value:
            raise ConfigError(f"{key} is given twice ({key}={value!r} and sampler_options[{key!r}]={out[key]!r}); give it once")
        out[key] = value
    return out


#: the arguments of textdiff.generation.generate that DiffusionLM.generate sets itself
_SET_BY_GENERATE = ("model", "process", "sampler", "prompts", "batch_size", "pad_token_id", "eos_token_id")


def _generate_arguments(prompts, max_new_tokens, steps, sampler, temperature, top_k, top_p, seed, block_size,
                        return_output, guidance_weight, guidance_uncond, sampler_options, progress=False, callback=None):
    """The checked arguments of :meth:`DiffusionLM.generate`: (prompts, max_new_tokens, steps, seed, block_size)."""
    if _is_chat(prompts):
        prompts = [prompts]
    if isinstance(prompts, (list, tuple)) and any(_is_chat(p) for p in prompts):  # chats (and strings / ids)
        prompts = [p if _is_chat(p) else arguments.prompts(f"prompts[{i}]", [p])[0] for i, p in enumerate(prompts)]
    else:
        prompts = arguments.prompts("prompts", prompts)  # strings or token-id lists
    max_new_tokens = arguments.integer("max_new_tokens", max_new_tokens, minimum=1)
    steps = arguments.integer("steps", steps, minimum=1, optional=True)
    arguments.number("temperature", temperature, lo=0.0, optional=True)
    arguments.integer("top_k", top_k, minimum=1, optional=True)
    arguments.number("top_p", top_p, lo=0.0, hi=1.0, lo_open=True, optional=True)
    seed = arguments.seeds("seed", seed, count=len(prompts) if isinstance(seed, (list, tuple)) else None)
    block_size = arguments.integer("block_size", block_size, minimum=1, optional=True)
    arguments.flag("return_output", return_output)
    arguments.number("guidance_weight", guidance_weight)
    arguments.choice("guidance_uncond", guidance_uncond, ("mask", "drop"))
    arguments.optional_flag("progress", progress)
    if callback is not None and not callable(callback):
        raise ConfigError(f"callback must be callable (it receives a StepInfo), got {type(callback).__name__}")
    if sampler_options is not None and not isinstance(sampler_options, dict):
        raise ConfigError(f"sampler_options must be a dict of sampler fields, got {type(sampler_options).__name__}")
    if sampler is not None and not isinstance(sampler, (str, dict)) and not hasattr(sampler, "name"):
        raise ConfigError(f"sampler must be a name, a mapping or a sampler config, got {type(sampler).__name__}")
    return prompts, max_new_tokens, steps, seed, block_size


def _step_callback(bar, user_callback, tokens_per_step: float):
    """The loop's per-step callback: advances the progress bar and calls the user's (None when neither shows)."""
    if not (bar.shown or user_callback):
        return None

    def on_step(info):
        bar.update(1, tokens=tokens_per_step)  # positions decided per step, on average
        if user_callback is not None:
            user_callback(info)

    return on_step


def _is_chat(prompt) -> bool:
    """A chat: a non-empty list of message mappings."""
    return isinstance(prompt, (list, tuple)) and len(prompt) > 0 and all(isinstance(m, dict) for m in prompt)


def _cut(tokens: list, stops: Sequence[int]) -> list:
    """``tokens`` up to (without) the first stop token."""
    hits = [i for i, tok in enumerate(tokens) if tok in stops]
    return tokens[: hits[0]] if hits else tokens
