"""DiffusionGemma (Google 2026) behind the textdiff denoiser call, on transformers' own classes.

The network (``transformers.DiffusionGemmaForBlockDiffusion``) is an encoder-decoder that shares every
text weight: a CAUSAL encoder writes the keys and values of the prompt and of every finished canvas
into a cache, and a BIDIRECTIONAL decoder reads that cache (never writing it) while it denoises the
current canvas of ``canvas_length`` tokens. Its logits are soft-capped, c · tanh(z / c), and returned
in float32 whatever the weights' dtype. The decoder takes a second input, the logits of the previous
denoising step ("self-conditioning"): softmax(l_prev) E √d is passed through a gated MLP and added to
the canvas embeddings (zeros at the first step); ``self_conditioning_mask`` [B] switches it off per row.

:class:`DiffusionGemmaDenoiser` maps that onto textdiff's call
``model(input_ids, t, attention_mask, position_ids, cache, update_cache, logits_to_keep, ...)``:

* ``cache`` (a :class:`~textdiff.models.cache.KVCache` the generation loop owns) carries the
  network's own ``DynamicCache`` in ``cache.hf`` and the validity of every cached token in
  ``cache.valid``. ``update_cache=True`` is the ENCODER pass over clean tokens (the prompt, or a
  committed canvas): it appends their keys/values; ``update_cache=False`` is the DECODER pass over the
  canvas, attending bidirectionally to the cache and the canvas. This cache is EXACT: the encoder is
  causal, so a committed canvas's keys never depend on what follows it (``attention = "causal"``:
  textdiff's exact block cache serves it unchanged, for canvases of any length).
* without a cache the call holds a whole row and its canvas is the last ``logits_to_keep`` positions
  (an int; 0: the whole row is the canvas, read after one ``<bos>``): the prefix is encoded into a fresh
  cache first.
  Both paths give the same logits.
* positions are column indices of the row (padding included), as transformers' ``generate`` numbers
  them; textdiff's ``position_ids`` are not used (rotary embeddings see only offsets, and the pads are
  masked, so a left-padded row gets its logits alone: ``tests/test_diffusion_gemma.py``).
* ``t`` is ignored: the network is not time-conditioned (the noise level is read off the canvas).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ..errors import ConfigError, IncompatibleError
from .modeling_textdiff import TextDiffOutput


class DiffusionGemmaInfo:
    """What textdiff reads from ``model.config`` (attention kind, canvas, vocabulary)."""

    #: the encoder is causal: a committed token's keys never depend on later tokens, so textdiff's exact
    #: cache serves windows (canvases) of any length; the canvas itself is decoded bidirectionally
    attention = "causal"
    time_conditioning = False
    model_type = "diffusion_gemma"

    def __init__(self, hf_config):
        text = hf_config.get_text_config()
        self.hf = hf_config
        self.vocab_size = int(text.vocab_size)
        self.max_position_embeddings = int(text.max_position_embeddings)
        self.canvas_length = int(hf_config.canvas_length)  # the released canvas (generate's block_size default)
        self.num_layers = int(text.num_hidden_layers)
        self.mask_token_id = None
        #: the training / scoring call takes the clean row too (``clean_ids``, ``context_mask``), see
        #: :meth:`DiffusionGemmaDenoiser.teacher_forced`
        self.reads_clean_context = True


def require_diffusion_gemma():
    """transformers' DiffusionGemma classes, or a one-line error naming the version that has them."""
    import importlib

    try:
        module = importlib.import_module("transformers.models.diffusion_gemma.modeling_diffusion_gemma")
    except ImportError:
        import transformers

        raise ConfigError(f"DiffusionGemma needs transformers >= 5.8 (models/diffusion_gemma); this is "
                          f"{transformers.__version__}: pip install -U transformers") from None
    return module.DiffusionGemmaForBlockDiffusion


class DiffusionGemmaDenoiser(nn.Module):
    """transformers' DiffusionGemmaForBlockDiffusion as a textdiff denoiser (module docstring)."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        self.config = DiffusionGemmaInfo(hf_model.config)

    @property
    def network(self) -> nn.Module:
        """transformers' model itself (under LoRA, ``self.hf`` is the peft wrapper around it)."""
        return self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf

    @property
    def device(self) -> torch.device:
        return self.network.lm_head.weight.device

    def new_hf_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.network.config.get_text_config(decoder=True))

    # ---- the two passes ---------------------------------------------------------------------------
    def encode(self, ids: torch.Tensor, valid: torch.Tensor, hf_cache, cached_valid: Optional[torch.Tensor]):
        """The causal encoder over clean tokens ``ids`` [B, L] (``valid`` [B, L], False on padding),
        appending their keys/values to ``hf_cache`` after ``cached_valid`` [B, C] cached tokens."""
        start = 0 if cached_valid is None else cached_valid.shape[1]
        mask = valid if cached_valid is None else torch.cat([cached_valid, valid], 1)  # [B, C + L]
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)[None]  # [1, L] column indices
        hf_cache.all_valid = bool(mask.all())  # (a flag on the cache: decode passes no mask when nothing is padded)
        self.network.model.encoder(input_ids=ids, attention_mask=mask.bool(), cache=hf_cache, position_ids=positions)

    def encode_bos(self, B: int, hf_cache, device) -> torch.Tensor:
        """Encode one ``<bos>`` per row (the context of a row that has none); returns its validity [B, 1]."""
        bos = torch.full((B, 1), int(self.network.config.bos_token_id), dtype=torch.long, device=device)
        valid = torch.ones(B, 1, dtype=torch.bool, device=device)
        self.encode(bos, valid, hf_cache, None)
        return valid

    def decode(self, canvas: torch.Tensor, hf_cache, cached_valid: Optional[torch.Tensor], canvas_valid=None,
               self_conditioning_logits=None, self_conditioning_mask=None) -> torch.Tensor:
        """Float32 soft-capped logits [B, W, V] of the canvas [B, W] read against the cache."""
        B, W = canvas.shape
        start = 0 if cached_valid is None else cached_valid.shape[1]
        own = torch.ones(B, W, dtype=torch.bool, device=canvas.device) if canvas_valid is None else canvas_valid.bool()
        mask = own if cached_valid is None else torch.cat([cached_valid.bool(), own], 1)  # [B, C + W]
        positions = torch.arange(start, start + W, device=canvas.device)[None]  # [1, W]
        if canvas_valid is None and (cached_valid is None or getattr(hf_cache, "all_valid", False)):
            mask = None  # nothing padded: the network's own full-attention shortcut
        if self_conditioning_logits is not None:
            self_conditioning_logits = self_conditioning_logits.to(self.network.lm_head.weight.dtype)
        return self.network(cache=hf_cache, decoder_input_ids=canvas, decoder_attention_mask=mask,
                       decoder_position_ids=positions, self_conditioning_logits=self_conditioning_logits,
                       self_conditioning_mask=self_conditioning_mask).logits

    def forward(self, input_ids, t=None, attention_mask=None, position_ids=None, cache=None, update_cache=False,
                logits_to_keep=0, self_conditioning_logits=None, self_conditioning_mask=None, clean_ids=None,
                context_mask=None, generator=None, **kwargs):
        """input_ids [B, L] -> TextDiffOutput(logits [B, W, V] float32) of the canvas (module docstring);
        with ``clean_ids`` the training / scoring pass :meth:`teacher_forced` (logits [B, L, V])."""
        B, L = input_ids.shape
        if clean_ids is not None:
            return TextDiffOutput(logits=self.teacher_forced(input_ids, clean_ids, context_mask, attention_mask, generator))
        valid = torch.ones(B, L, dtype=torch.bool, device=input_ids.device) if attention_mask is None else attention_mask.bool()
        if attention_mask is not None and attention_mask.dim() != 2:
            raise IncompatibleError("the DiffusionGemma denoiser takes a [B, L] padding mask only")
        if cache is None:
            if isinstance(logits_to_keep, torch.Tensor):
                raise IncompatibleError("DiffusionGemma decodes a canvas at the end of the row: logits_to_keep must be an int")
            W = int(logits_to_keep) or L
            hf_cache = self.new_hf_cache()
            if W < L:
                self.encode(input_ids[:, :L - W], valid[:, :L - W], hf_cache, None)
                cached = valid[:, :L - W]
            else:  # no context: the canvas is read after <bos>, as every Gemma sequence starts
                cached = self.encode_bos(B, hf_cache, input_ids.device)
            logits = self.decode(input_ids[:, L - W:], hf_cache, cached, valid[:, L - W:], self_conditioning_logits,
                                 self_conditioning_mask)
            return TextDiffOutput(logits=logits)
        if getattr(cache, "hf", None) is None:
            cache.hf = self.new_hf_cache()
        if update_cache:  # clean tokens: the encoder writes them; no logits are read from this call
            self.encode(input_ids, valid, cache.hf, cache.valid)
            start = cache.length
            cache.append_positions(torch.arange(start, start + L, device=input_ids.device)[None].expand(B, L), valid)
            keep = L if isinstance(logits_to_keep, int) and logits_to_keep == 0 else (
                logits_to_keep.numel() if isinstance(logits_to_keep, torch.Tensor) else int(logits_to_keep))
            return TextDiffOutput(logits=torch.zeros(B, keep, self.config.vocab_size, device=input_ids.device))
        logits = self.decode(input_ids, cache.hf, cache.valid, None if bool(valid.all()) else valid,
                             self_conditioning_logits, self_conditioning_mask)
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits[:, logits_to_keep.to(logits.device)]
        elif logits_to_keep:
            logits = logits[:, -int(logits_to_keep):]
        return TextDiffOutput(logits=logits)

    # ---- training and scoring ------------------------------------------------------------------------
    #: probability that a training row is conditioned on the network's own first-pass prediction
    self_conditioning_rate: float = 0.5

    def teacher_forced(self, x_t, x0, context=None, valid=None, generator=None) -> torch.Tensor:
        """Logits [B, L, V] of every noisy position of x_t [B, L] (zeros on the context).

        Layout (NeMo's DiffusionGemma SFT batches): the clean context ``context`` [B, L] (a prefix of each
        row: the SFT prompt; None: no context) goes through the encoder, left-padded to a common width;
        the rest of the row is the target, cut into canvases of ``canvas_length`` (a row without context is
        read after ``<bos>``). Canvas k is decoded
        from its noisy tokens against the cache of the context and of the CLEAN canvases before it
        (written by the encoder after canvas k − 1 is decoded), as in generation. In training
        (``self.training``) each row is self-conditioned with probability ``self_conditioning_rate``
        (a Bernoulli per row from ``generator``): a first pass without gradient gives its logits, fed
        to the second pass as the decoder's self-conditioning input (masked off for the other rows).
        """
        B, L = x_t.shape
        device = x_t.device
        valid = torch.ones(B, L, dtype=torch.bool, device=device) if valid is None else valid.bool()
        lengths = torch.zeros(B, dtype=torch.long, device=device) if context is None else context.long().sum(1)
        if context is not None and bool((context.long().cumsum(1) != torch.minimum(
                torch.arange(1, L + 1, device=device)[None], lengths[:, None])).any()):
            raise IncompatibleError("DiffusionGemma reads its context through the encoder: the frozen positions must be "
                                    "a prefix of every row (the prompt)")
        P, W = int(lengths.max()), L - int(lengths.min())
        src = torch.arange(P, device=device)[None] - (P - lengths)[:, None]  # [B, P] column of each prompt slot
        prompt = x0.gather(1, src.clamp_min(0))
        prompt_valid = (src >= 0) & valid.gather(1, src.clamp_min(0))
        col = lengths[:, None] + torch.arange(W, device=device)[None]  # [B, W] column of each canvas slot
        inside = col < L
        col = col.clamp_max(L - 1)
        noisy, clean = x_t.gather(1, col), x0.gather(1, col)
        canvas_valid = inside & valid.gather(1, col)
        sc_logits = sc_mask = None
        if self.training and self.self_conditioning_rate > 0:
            from ..categorical import uniform

            sc_mask = uniform((B,), generator, device) < self.self_conditioning_rate  # [B]
            if bool(sc_mask.any()):
                with torch.no_grad():
                    sc_logits = self._canvases(prompt, prompt_valid, noisy, clean, canvas_valid).detach()
        out = self._canvases(prompt, prompt_valid, noisy, clean, canvas_valid, sc_logits, sc_mask if sc_logits is not None else None)
        logits = out.new_zeros(B, L, out.shape[-1])
        rows = torch.arange(B, device=device)[:, None].expand(B, W)
        logits[rows[inside], col[inside]] = out[inside]
        return logits

    def _canvases(self, prompt, prompt_valid, noisy, clean, canvas_valid, sc_logits=None, sc_mask=None):
        """Logits [B, W, V] of the noisy canvases after the left-padded prompt [B, P] (see :meth:`teacher_forced`)."""
        cache = self.new_hf_cache()
        if prompt.shape[1] == 0:  # no context: the row is read after <bos>, as every Gemma sequence starts
            cached = self.encode_bos(noisy.shape[0], cache, noisy.device)
        else:
            self.encode(prompt, prompt_valid, cache, None)
            cached = prompt_valid
        C, W, outs = self.config.canvas_length, noisy.shape[1], []
        for lo in range(0, W, C):
            hi = min(lo + C, W)
            sc = None if sc_logits is None else sc_logits[:, lo:hi]
            outs.append(self.decode(noisy[:, lo:hi], cache, cached, canvas_valid[:, lo:hi], sc, sc_mask))
            if hi < W:  # the clean canvas joins the context of the next one
                self.encode(clean[:, lo:hi], canvas_valid[:, lo:hi], cache, cached)
                cached = canvas_valid[:, lo:hi] if cached is None else torch.cat([cached, canvas_valid[:, lo:hi]], 1)
        return torch.cat(outs, 1)

    # ---- saving -----------------------------------------------------------------------------------
    def save_pretrained(self, path, safe_serialization: bool = True, state_dict=None, network=None, **kwargs) -> None:
        """The released layout (config.json + model.safetensors), loadable by transformers and textdiff."""
        if state_dict is not None:
            state_dict = released_keys({k[3:] if k.startswith("hf.") else k: v for k, v in state_dict.items()})
        (network or self.network).save_pretrained(Path(path), safe_serialization=safe_serialization, state_dict=state_dict,
                                             **kwargs)

    # ---- LoRA (textdiff.lora) -------------------------------------------------------------------------
    #: never adapted: the vision tower (text-only fine-tuning)
    lora_exclude = r".*(vision_tower|embed_vision).*"
    #: the projections whose adapters the encoder shares with the decoder
    SHARED = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

    def share_adapters(self) -> None:
        """Make the encoder's and the decoder's text projections ONE module: their weights are tied in the
        released model, so their adapters must be too (one ΔW for both passes). Called before peft injects
        the adapters (it then adapts the module once, under the encoder's name) and after (the decoder takes
        the adapted module; after a merge, both take the merged linear layer)."""
        net = self.network.model
        for enc, dec in zip(net.encoder.language_model.layers, net.decoder.layers):
            for path in self.SHARED:
                owner, name = path.split(".")
                e, d = getattr(getattr(enc, owner), name, None), getattr(getattr(dec, owner), name, None)
                if e is None or d is None or e is d:
                    continue
                chosen = d
                for m in (e, d):
                    if hasattr(m, "base_layer"):  # a LoRA layer (merged: its merged linear layer)
                        chosen = m.get_base_layer() if getattr(m, "merged", False) else m
                        break
                setattr(getattr(enc, owner), name, chosen)
                setattr(getattr(dec, owner), name, chosen)

    def resize_token_embeddings(self, n: int):
        self.network.resize_token_embeddings(n)
        self.config.vocab_size = n

    def gradient_checkpointing_enable(self, **kwargs):
        self.network.gradient_checkpointing_enable(**kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Accept the network's own key names as well as the wrapper's (``hf.`` prefix)."""
        if state_dict and not any(k.startswith("hf.") for k in state_dict):
            state_dict = {f"hf.{k}": v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def load_diffusion_gemma(path, dtype=None, options=None) -> DiffusionGemmaDenoiser:
    """A DiffusionGemma folder (released, or written by ``save_pretrained`` / ``convert`` / a fine-tuning
    run) as the denoiser, by transformers' own class, every weight required (no random initialisation of
    a missing tensor). ``options``: a :class:`~textdiff.models.published.LoadOptions` (device, device_map)."""
    network_class = require_diffusion_gemma()
    kwargs = {"trust_remote_code": False, **({} if dtype is None else {"dtype": dtype})}
    if dtype == torch.float64:
        kwargs["experts_implementation"] = "eager"  # the grouped expert matmul takes no float64
    device_map = getattr(options, "device_map", None)
    if device_map is not None:
        kwargs.update(device_map=device_map, max_memory=options.max_memory, offload_folder=options.offload_folder)
    try:
        hf, info = network_class.from_pretrained(str(path), output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"DiffusionGemma folder {str(path)!r} cannot be loaded ({type(e).__name__}: {first})") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ConfigError(f"DiffusionGemma folder {str(path)!r} lacks tensor {missing[0]!r} ({len(missing)} missing); "
                          "the weights are incomplete")
    if device_map is None and getattr(options, "device", None) is not None:
        hf.to(options.device)
    return DiffusionGemmaDenoiser(hf.eval())


ENCODER_TEXT = "model.encoder.language_model."


def released_keys(state: dict) -> dict:
    """A state dict with the text weights stored once, under ``model.decoder`` (the released layout): an
    encoder copy of a text weight (a merged LoRA weight is reported under the encoder's name when the
    module is shared, :meth:`DiffusionGemmaDenoiser.share_adapters`) replaces the decoder's entry; only
    the encoder's own ``layer_scalar`` buffers stay."""
    out = dict(state)
    for key, value in state.items():
        if key.startswith(ENCODER_TEXT) and not key.endswith("layer_scalar"):
            twin = "model.decoder." + key[len(ENCODER_TEXT):]
            if twin in out:
                out[twin] = value
            del out[key]
    return out
