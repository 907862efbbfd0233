"""textdiff's decoding of a Dream checkpoint against the publishers' own ``diffusion_generate``, as
ratios measured in one process on the same weights (the Dream half of ``published_decoding.py``).

    python benchmarks/published_decoding_dream.py --publisher-code /tmp/pub              # small Dream, real vocabulary, CPU
    python benchmarks/published_decoding_dream.py --publisher-code /tmp/pub --gpu-shapes # Dream-7B shapes, random weights

``--publisher-code ROOT`` holds ``ROOT/Fast-dLLM/dream/model/`` (NVlabs/Fast-dLLM, NEVER copied into
this repository): Dream's ``configuration_dream.py`` / ``modeling_dream.py``, ``generation_utils.py``
(Dream's ``diffusion_generate``: algs origin / maskgit_plus / topk_margin / entropy, plus Fast-dLLM's
``confidence_threshold``) and ``generation_utils_block.py`` (Fast-dLLM's block-wise decoding with a
prefix or dual KV cache, its ``eval.py`` binds it onto the model).

The model: a random-weight Dream in the publisher's class (``DreamModel``), saved in the published
layout (``config.json`` model_type "Dream", sharded safetensors, a word-level tokenizer with Dream's
special ids: mask 151666, ``<|endoftext|>`` 151643, ``<|im_end|>`` 151645), loaded by the publisher's
side as that object and natively by ``DiffusionLM.from_pretrained`` (no remote code). Shapes:
``small`` (default: Dream's vocabulary 152,064 = Qwen2.5-7B's, which Dream-v0-7B keeps, on a trunk of
d 128, 2 layers, 4 heads / 2 KV heads, MLP 384), ``tiny`` (vocab 256, d 64) and ``7b`` (=
``--gpu-shapes``: hidden 3584, 28 heads / 4 KV heads, MLP 18944, 28 layers; ``--layers`` keeps a few).

Modes. SAME RULE (tokens must agree; greedy, steps = gen length, one window as diffusion_generate):

=============================  ==============================================  ============================================
mode                           publisher                                       textdiff
=============================  ==============================================  ============================================
no cache, entropy              ``diffusion_generate(alg="entropy")``           confidence sampler, ordering entropy
no cache, maskgit_plus         ``diffusion_generate(alg="maskgit_plus")``      confidence sampler, ordering confidence
prefix / dual cache            ``generation_utils_block`` (entropy inside      the same, ``first_commit="leftmost"``,
                               blocks whatever ``alg``)                        ``use_cache="prefix"/"dual"``, ``lookback=0``
threshold + prefix / dual      the same, ``alg="confidence_threshold"``        threshold sampler, the same three
=============================  ==============================================  ============================================

(textdiff side: ``commit_rounding="floor"``, ``time_eps=1e-3``: Dream's k = ⌊n (1 − s/t)⌋ on
t_i = 1 − i (1 − ε)/N, temperature 0, top_p 1. Fast-dLLM's block code fixes each block's FIRST
position by its argmax at the forward that refreshes the cache, and its cached forwards leave the
token before the block in the stale cache: ``first_commit="leftmost"`` and ``lookback=0``.)

NEAREST COUNTERPART (a Fast-dLLM rule textdiff does not have, so the tokens are not expected to
agree; seconds and NFE are still comparable):

* ``threshold`` (``alg="confidence_threshold"``, no cache): each step commits at most the step's
  quota (gen/steps, plus what earlier steps rejected), the best one always, the rest only above τ;
  with steps = gen the quota is 1, so it is one token per step whatever τ. textdiff: threshold
  sampler (every position above τ, at least one), no cache, in one window.

The publisher's model gets [MASK] at −∞ through a forward hook on its ``lm_head`` (what
``make_dream.py`` does with ``generation_logits_hook_func``, which the block code has no slot for):
the released model gives [MASK] no mass, random weights would. textdiff's [MASK] logit is −∞ too.

Shims for transformers 5 (``make_dream.py``'s): the "default" rotary initialiser and a
``DreamGenerationConfig.validate`` taking 5.x's keyword. The publisher's ``print`` calls are silenced.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "fixtures" / "published"))
from published_decoding import RESULTS, head_share, machine, markdown, timed_pair  # noqa: E402

# Dream-v0-7B (Qwen2.5-7B's shapes)
DREAM_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, max_position_embeddings=4096, rope_theta=1000000.0)
SMALL = dict(vocab_size=152064, hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=1024, rope_theta=1000000.0)
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, rope_theta=1000000.0)
SHAPES = {"small": SMALL, "tiny": TINY, "7b": DREAM_7B}
DECODING = {"small": (64, 128), "tiny": (32, 64), "7b": (64, 128)}  # (prompt, gen_length)
COMMON = dict(hidden_act="silu", rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False, attention_dropout=0.0)
MODES = ("entropy", "maskgit_plus", "threshold", "prefix", "dual", "threshold_prefix", "threshold_dual")


def special_ids(vocab: int) -> dict:
    """Dream's special ids (mask 151666, EOS 151643, <|im_end|> 151645); at the top of a smaller vocabulary."""
    if vocab > 151666:
        return {"mask": 151666, "eos": 151643, "im_end": 151645}
    return {"mask": vocab - 2, "eos": vocab - 4, "im_end": vocab - 3}


def publisher_code(root: Path):
    """(configuration, modeling, generation_utils, generation_utils_block) modules of Fast-dLLM's dream/model."""
    code = root / "Fast-dLLM" / "dream"
    for need in ("configuration_dream.py", "modeling_dream.py", "generation_utils.py", "generation_utils_block.py"):
        if not (code / "model" / need).is_file():
            sys.exit(f"error: --publisher-code {root} has no Fast-dLLM/dream/model/{need}; give the folder holding "
                     "Fast-dLLM/ (NVlabs/Fast-dLLM)")
    from make_dream import shim_transformers

    shim_transformers()
    sys.path.insert(0, str(code))
    mods = [importlib.import_module("model." + m) for m in
            ("configuration_dream", "modeling_dream", "generation_utils", "generation_utils_block")]
    sys.path.remove(str(code))
    for gen in mods[2:]:  # 5.x calls validate(user_set_attributes=...); Dream's is a no-op without that keyword
        gen.DreamGenerationConfig.validate = lambda self, *a, **k: None
    return mods


def build_checkpoint(conf_mod, model_mod, shapes: dict, folder: Path, seed: int, std: float):
    """(the publisher's model, special ids): a random Dream in the publisher's class, saved in the
    published layout with a word-level tokenizer carrying Dream's special ids."""
    from make_llada import save_sharded
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = shapes["vocab_size"]
    ids = special_ids(vocab)
    cfg = conf_mod.DreamConfig(**COMMON, **shapes, initializer_range=std, mask_token_id=ids["mask"],
                               pad_token_id=ids["eos"], bos_token_id=ids["eos"], eos_token_id=ids["eos"])
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = model_mod.DreamModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # biases drawn too (make_dream.py), not left at zero
            if p.dim() == 1 and p.shape[0] != cfg.hidden_size:
                p.normal_(0.0, std)
        model.lm_head.weight[ids["mask"]] = 0.0
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = cfg.to_dict()
    config.update(model_type="Dream", architectures=["DreamModel"], torch_dtype="float32", use_cache=False,
                  auto_map={"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"})
    config = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool, list, dict, type(None)))}
    config.pop("_attn_implementation_autoset", None)
    folder.mkdir(parents=True)
    save_sharded(state, folder, config)
    names = {ids["mask"]: "<|mask|>", ids["eos"]: "<|endoftext|>", ids["im_end"]: "<|im_end|>"}
    words = {names.get(i, f"w{i}"): i for i in range(vocab)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="w0")), eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", mask_token="<|mask|>", additional_special_tokens=["<|im_end|>"])
    tok.save_pretrained(str(folder))
    return model, ids


def publisher_call(model, gen_mods, ids, key: str, threshold: float, block: int):
    """(model, prompt, gen, steps) -> (sequences, nfe) running the publisher's decoding for ``key``."""
    plain, blockwise = gen_mods
    alg = {"entropy": "entropy", "maskgit_plus": "maskgit_plus"}.get(key, "confidence_threshold" if "threshold" in key else "entropy")
    module = plain if key in ("entropy", "maskgit_plus", "threshold") else blockwise
    extra = {}
    if module is blockwise:
        extra = {"block_length": block, "dual_cache": key.endswith("dual"), "threshold": threshold}
    elif key == "threshold":
        extra = {"threshold": threshold}
    counter = [0]

    def run(m, prompt, gen, steps):
        mixin = module.DreamGenerationMixin
        m.diffusion_generate = types.MethodType(mixin.diffusion_generate, m)
        m._sample = types.MethodType(mixin._sample, m)
        gc = module.DreamGenerationConfig(max_new_tokens=gen, steps=steps, temperature=0.0, top_p=None, alg=alg, alg_temp=0.0,
                                          mask_token_id=ids["mask"], pad_token_id=ids["eos"], eos_token_id=ids["eos"],
                                          bos_token_id=ids["eos"], return_dict_in_generate=True)
        counter[0] = 0
        with contextlib.redirect_stdout(io.StringIO()):  # generation_utils prints its step count and time
            out = m.diffusion_generate(prompt.clone(), generation_config=gc, **extra)
        return out.sequences, counter[0]

    return run, counter


def textdiff_spec(key: str, threshold: float):
    first = {"first_commit": "leftmost"} if key.endswith(("prefix", "dual")) else {}  # Fast-dLLM's block code
    if "threshold" in key:
        return {"name": "threshold", "threshold": threshold, "temperature": 0.0, "top_p": 1.0, **first}
    ordering = "confidence" if key == "maskgit_plus" else "entropy"
    return {"name": "confidence", "ordering": ordering, "temperature": 0.0, "top_p": 1.0, "commit_rounding": "floor",
            "time_eps": 1e-3, **first}


NAMES = {"entropy": "no cache, entropy", "maskgit_plus": "no cache, maskgit_plus", "threshold": "threshold (no cache)",
         "prefix": "prefix cache", "dual": "dual cache", "threshold_prefix": "threshold + prefix cache",
         "threshold_dual": "threshold + dual cache"}
SAME_RULE = ("entropy", "maskgit_plus", "prefix", "dual", "threshold_prefix", "threshold_dual")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--publisher-code", required=True, type=Path, help="folder with Fast-dLLM/ (see above)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--gpu-shapes", action="store_true", help="= --shape 7b")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--d-model", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=None)
    ap.add_argument("--prompt-length", type=int, default=None)
    ap.add_argument("--gen-length", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="default: gen length (Dream's protocol)")
    ap.add_argument("--block", type=int, default=32, help="block length of the cached modes")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma list out of {','.join(MODES)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--std", type=float, default=None, help="init std of the random weights (default: 0.5 small, 0.25 otherwise; "
                    "0.5 makes predictions peaked enough for the threshold to commit several tokens in some steps)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.gpu_shapes:
        args.shape = "7b"
    prompt, gen = DECODING[args.shape]
    args.prompt_length = args.prompt_length or prompt
    args.std = args.std if args.std is not None else {"small": 0.5, "tiny": 0.25, "7b": 0.25}[args.shape]
    args.gen_length = args.gen_length or gen
    args.steps = args.steps or args.gen_length
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from {','.join(MODES)}")
    if args.gen_length % args.block or args.steps % (args.gen_length // args.block):
        ap.error("--gen-length must be a multiple of --block, and --steps a multiple of the number of blocks")
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    shapes = dict(SHAPES[args.shape])
    if args.vocab:
        shapes["vocab_size"] = args.vocab
    if args.d_model:
        shapes["hidden_size"] = args.d_model
    shapes["num_hidden_layers"] = args.layers or shapes["num_hidden_layers"]
    conf_mod, model_mod, plain, blockwise = publisher_code(args.publisher_code.expanduser().resolve())

    from textdiff.generation import generate
    from textdiff.lm import DiffusionLM
    from textdiff import build_sampler

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        theirs, ids = build_checkpoint(conf_mod, model_mod, shapes, Path(tmp) / "dream", seed=0, std=args.std)
        theirs = theirs.to(device=args.device, dtype=dtype).eval()
        lm = DiffusionLM.from_pretrained(str(Path(tmp) / "dream"), device=args.device, dtype=dtype)
    ours = lm.model.eval()
    assert ours.config.logits_shift == 1 and lm.process.mask_id == ids["mask"]
    calls = []

    def no_mask(module, inputs, out):  # the released model's [MASK] has no mass (module docstring)
        calls.append(1)
        out[..., ids["mask"]] = float("-inf")
        return out

    theirs.lm_head.register_forward_hook(no_mask)
    n_params = sum(p.numel() for p in ours.parameters())
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, min(ids.values()) - 1, (1, args.prompt_length), generator=g)
    P, G, blocks = prompt.shape[1], args.gen_length, args.gen_length // args.block

    rows = []
    for key in MODES:
        if key not in args.modes:
            continue
        call, _ = publisher_call(theirs, (plain, blockwise), ids, key, args.threshold, args.block)
        sampler = build_sampler(textdiff_spec(key, args.threshold), lm.process)
        cache = "dual" if key.endswith("dual") else "prefix" if key.endswith("prefix") else "none"
        block = None if cache == "none" else args.block

        def run_ours(gen=G, steps=args.steps):
            with torch.no_grad():
                return generate(ours, lm.process, sampler, [prompt[0].tolist()], max_new_tokens=gen, steps=steps,
                                block_size=block, use_cache=cache, stop_at_eos=False, seed=0,
                                lookback=None if cache == "none" else 0)

        def run_theirs(gen=G, steps=args.steps):
            calls.clear()
            x, _ = call(theirs, prompt.to(args.device), gen, steps)
            return x, len(calls)

        one = args.steps // blocks
        warm = (lambda: run_theirs(args.block, one), lambda: run_ours(args.block, one))
        ((t_pub, med_pub), (x_pub, nfe_pub)), ((t_td, med_td), out) = timed_pair(run_theirs, run_ours, args.repeats, sync, warm)
        a, b = x_pub[0, P:].cpu().tolist(), out.sequences[0, P:].cpu().tolist()
        same = sum(x == y for x, y in zip(a, b))
        rows.append({"mode": NAMES[key], "rule": "same" if key in SAME_RULE else "nearest",
                     "publisher_s": round(t_pub, 4), "textdiff_s": round(t_td, 4),
                     "speedup": round(t_pub / t_td, 2), "speedup_median": round(med_pub / med_td, 2),
                     "publisher_nfe": int(nfe_pub), "textdiff_nfe": out.nfe, "tokens_agree": f"{same}/{len(a)}",
                     "identical": same == len(a)})
        print(json.dumps(rows[-1]), flush=True)
    base = {r["mode"]: r for r in rows}.get(NAMES["entropy"])
    for r in rows:
        r["publisher_vs_nocache"] = round(base["publisher_s"] / r["publisher_s"], 2) if base else "-"
        r["textdiff_vs_nocache"] = round(base["publisher_s"] / r["textdiff_s"], 2) if base else "-"

    d, V, L = shapes["hidden_size"], shapes["vocab_size"], shapes["num_hidden_layers"]
    kv = d * shapes["num_key_value_heads"] // shapes["num_attention_heads"]
    share = head_share(d, shapes["intermediate_size"], L, V, kv)
    real = head_share(3584, 18944, 28, 152064, 512)
    meta = {"model": f"Dream, shape {args.shape!r}: {L} layers, hidden {d}, MLP {shapes['intermediate_size']}, "
                     f"{shapes['num_attention_heads']} heads / {shapes['num_key_value_heads']} KV heads, vocab {V}, "
                     f"{n_params / 1e6:.1f}M parameters, random weights (std {args.std}), {str(dtype).split('.')[-1]}",
            "head_share": f"{share:.0%} of a forward's weight FLOPs per token here, {real:.0%} for Dream-7B",
            "decoding": f"prompt {P}, gen_length {G}, steps {args.steps}, block_length {args.block} (cached modes), "
                        f"threshold {args.threshold}, batch 1, greedy (temperature 0, top_p 1, alg_temp 0, eps 1e-3); best and "
                        f"median of {args.repeats} alternating runs after a one-block warm-up",
            "command": "python " + " ".join(sys.argv), "device": args.device, "machine": machine(args.device),
            "threads": args.threads, "torch": torch.__version__,
            "load_average": [round(x, 1) for x in os.getloadavg()], "total_seconds": round(time.perf_counter() - started, 1),
            "publisher_code": "NVlabs/Fast-dLLM dream/model: modeling_dream.py, generation_utils.py (Dream's diffusion_generate "
                              "+ confidence_threshold), generation_utils_block.py (prefix / dual cache), bound as its eval.py does; "
                              "shims: make_dream.py's rotary init and GenerationConfig.validate; [MASK] at -inf by an lm_head hook"}
    notes = ["rule: \"same\" = the publisher's decoding rule exactly (tokens must agree); \"nearest\" = Fast-dLLM's "
             "no-cache threshold variant against textdiff's threshold sampler, a different rule (see the script's docstring), "
             "so tokens need not agree."]
    text = markdown(rows, meta, "Dream", notes=notes)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        stem = args.name or "published_decoding_dream" + ("" if args.shape == "small" else f"_{args.shape}")
        (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        (RESULTS / f"{stem}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
