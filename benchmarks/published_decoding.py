"""textdiff's decoding of a LLaDA checkpoint against the publishers' own generate scripts, as ratios
measured in one process on the same weights.

    python benchmarks/published_decoding.py --publisher-code /tmp/pub              # tiny model, CPU
    python benchmarks/published_decoding.py --publisher-code /tmp/pub --gpu-shapes # LLaDA-8B shapes, random weights

``--publisher-code ROOT`` is a folder holding the two publishers' repositories as released (NEVER
copied into this repository)::

    ROOT/LLaDA/generate.py                 ML-GSAI/LLaDA: generate() without cache (LLaDA's own script)
    ROOT/Fast-dLLM/llada/generate.py       NVlabs/Fast-dLLM: generate (threshold), _with_prefix_cache, _with_dual_cache
    ROOT/Fast-dLLM/llada/model/            Fast-dLLM's modeling_llada.py (LLaDA's network + KV cache hooks)

The model: a random-weight LLaDA in the publisher's own class (``LLaDAModelLM``), saved in the
published layout (``config.json`` model_type "llada" + safetensors) with a word-level tokenizer
whose special ids are LLaDA's, then loaded by BOTH sides: by the publisher's class, and natively by
``DiffusionLM.from_pretrained`` (no remote code). Tiny shapes by default; ``--gpu-shapes`` takes
LLaDA-8B's (d_model 4096, 32 heads, MLP 12288, vocab 126464), ``--layers`` keeps a few layers.

Modes (batch 1, as the publishers' scripts; same prompt, gen length, steps and block length on
both sides; greedy, low-confidence remasking):

=======================  ==========================================  ====================================
mode                     publisher                                   textdiff
=======================  ==========================================  ====================================
no cache                 LLaDA ``generate``                          confidence sampler, use_cache="none"
prefix cache             Fast-dLLM ``generate_with_prefix_cache``    confidence sampler, use_cache="prefix"
dual cache               Fast-dLLM ``generate_with_dual_cache``      confidence sampler, use_cache="dual"
threshold                Fast-dLLM ``generate(threshold=τ)``         threshold sampler, use_cache="none"
threshold + dual cache   Fast-dLLM ``generate_with_dual_cache(τ)``   threshold sampler, use_cache="dual"
=======================  ==========================================  ====================================

Threshold decoding ignores ``steps`` in Fast-dLLM (a block ends when it has no [MASK] left); textdiff
runs it with steps = gen length, so its last-step "commit everything" rule never acts earlier than
Fast-dLLM's. Outputs are compared token for token (the semantics are the same in every mode; rare
differences come from near-ties in confidence: textdiff rounds scores to 4 decimals and breaks ties
by position, and its [MASK] logit is −∞ while the publisher's softmax includes it).

Shims needed for the publisher code under transformers 5 (applied here, their files untouched):
``LLaDAConfig`` loses ``use_cache`` in ``PretrainedConfig.__init__`` (set back after init), and
``LLaDAModelLM.from_pretrained`` fails (no ``post_init``), so the publisher's side uses the model
object that wrote the checkpoint.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"

# LLaDA-8B's config.json (GSAI-ML/LLaDA-8B-Instruct): the shapes --gpu-shapes builds
LLADA_8B = {"d_model": 4096, "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "mlp_hidden_size": 12288, "mlp_ratio": 4,
            "vocab_size": 126464, "embedding_size": 126464, "max_sequence_length": 4096, "rope_theta": 500000.0}
TINY = {"d_model": 64, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 128, "mlp_ratio": 2,
        "vocab_size": 256, "embedding_size": 256, "max_sequence_length": 512, "rope_theta": 500000.0}
COMMON = {"block_type": "llama", "activation_type": "silu", "layer_norm_type": "rms", "rms_norm_eps": 1e-5,
          "include_bias": False, "include_qkv_bias": False, "weight_tying": False, "alibi": False, "rope": True,
          "attention_layer_norm": False, "flash_attention": False, "init_device": "cpu", "init_fn": "normal",
          "embedding_dropout": 0.0, "attention_dropout": 0.0, "residual_dropout": 0.0, "scale_logits": False,
          "input_emb_norm": False, "block_group_size": 1}


def special_ids(vocab: int) -> dict:
    """LLaDA's special token ids, moved into a tiny vocabulary by keeping their distance from the top."""
    if vocab >= 126464:
        return {"mask": 126336, "eos": 126081, "eot": 126348}
    return {"mask": vocab - 2, "eos": vocab - 4, "eot": vocab - 3}


# ---------------------------------------------------------------------------------------------
# The publishers' code (imported from the user's path; shims applied here)
# ---------------------------------------------------------------------------------------------


def _module(name: str, file: Path):
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def publisher_code(root: Path):
    """(LLaDA's generate module, Fast-dLLM's generate module, Fast-dLLM's modeling module)."""
    fast_dir, llada_file = root / "Fast-dLLM" / "llada", root / "LLaDA" / "generate.py"
    for need in (fast_dir / "generate.py", fast_dir / "model" / "modeling_llada.py", llada_file):
        if not need.is_file():
            sys.exit(f"error: --publisher-code {root} has no {need.relative_to(root)}; give the folder holding "
                     "LLaDA/ (ML-GSAI/LLaDA) and Fast-dLLM/ (NVlabs/Fast-dLLM)")
    sys.path.insert(0, str(fast_dir))  # Fast-dLLM's generate.py imports model.modeling_llada
    from model import configuration_llada, modeling_llada  # noqa: F401  (the publisher's package)

    init = configuration_llada.LLaDAConfig.__init__

    def _init(self, use_cache: bool = False, **kwargs):  # shim: transformers 5 drops use_cache
        init(self, use_cache=use_cache, **kwargs)
        self.use_cache = use_cache

    configuration_llada.LLaDAConfig.__init__ = _init
    fast = _module("fastdllm_generate", fast_dir / "generate.py")
    llada = _module("llada_generate", llada_file)
    sys.path.remove(str(fast_dir))
    return llada, fast, modeling_llada


def build_checkpoint(modeling, shapes: dict, layers: int, folder: Path, seed: int, std: float):
    """(the publisher's model, LLaDA's special ids): a random LLaDA in the publisher's class, saved in
    the published layout with a tokenizer. The publisher's own ``from_pretrained`` fails under
    transformers 5 (its class never calls ``post_init``), so their side keeps this very object."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = shapes["embedding_size"]
    ids = special_ids(vocab)
    cfg_kwargs = {**COMMON, **shapes, "n_layers": layers, "mask_token_id": ids["mask"], "eos_token_id": ids["eos"],
                  "pad_token_id": ids["eos"], "init_std": std}
    config = modeling.LLaDAConfig(**cfg_kwargs)
    torch.manual_seed(seed)
    model = modeling.LLaDAModelLM(config, init_params=True).eval()
    model.save_pretrained(folder, safe_serialization=True)
    names = {ids["mask"]: "<|mdm_mask|>", ids["eos"]: "<|endoftext|>", ids["eot"]: "<|eot_id|>"}
    words = {names.get(i, f"w{i}"): i for i in range(vocab)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="w0")),
                                  eos_token="<|endoftext|>", pad_token="<|endoftext|>", mask_token="<|mdm_mask|>")
    tok.save_pretrained(folder)
    return model, ids


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def timed_pair(first, second, repeats: int, sync):
    """((best, median) seconds, last result) of each of two calls, run ALTERNATELY ``repeats`` times
    after one warm-up each, so load from other processes hits both alike; the best is the figure
    least disturbed by it."""
    first(), second()
    times, outs = ([], []), [None, None]
    for _ in range(repeats):
        for k, fn in enumerate((first, second)):
            sync()
            start = time.perf_counter()
            outs[k] = fn()
            sync()
            times[k].append(time.perf_counter() - start)
    return [((min(t), statistics.median(t)), o) for t, o in zip(times, outs)]


def modes(llada, fast, args, mask_id):
    """[(name, publisher call, textdiff sampler spec, textdiff cache mode, textdiff steps)]."""
    common = {"steps": args.steps, "gen_length": args.gen_length, "block_length": args.block, "temperature": 0.0,
              "remasking": "low_confidence", "mask_id": mask_id}
    conf = {"name": "confidence", "ordering": "confidence", "commit_schedule": "linear", "temperature": 0.0}
    thr = {"name": "threshold", "threshold": args.threshold, "temperature": 0.0}
    return [
        ("no cache", lambda m, p: (llada.generate(m, p, **common), args.steps), conf, "none", args.steps),
        ("prefix cache", lambda m, p: fast.generate_with_prefix_cache(m, p, **common), conf, "prefix", args.steps),
        ("dual cache", lambda m, p: fast.generate_with_dual_cache(m, p, **common), conf, "dual", args.steps),
        ("threshold", lambda m, p: fast.generate(m, p, **common, threshold=args.threshold), thr, "none", args.gen_length),
        ("threshold + dual cache", lambda m, p: fast.generate_with_dual_cache(m, p, **common, threshold=args.threshold),
         thr, "dual", args.gen_length),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--publisher-code", required=True, type=Path, help="folder with LLaDA/ and Fast-dLLM/ (see above)")
    ap.add_argument("--gpu-shapes", action="store_true", help="LLaDA-8B's shapes (random weights) instead of tiny ones")
    ap.add_argument("--layers", type=int, default=None, help="transformer layers (default: 2 tiny / 32 with --gpu-shapes)")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: 256 tiny / 126464 with --gpu-shapes); "
                    "a small one checks the 8B layer shapes on a CPU without the 1B embedding parameters")
    ap.add_argument("--prompt-length", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--std", type=float, default=0.25, help="init std of the random weights (peaked predictions)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="published_decoding")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    shapes = dict(LLADA_8B if args.gpu_shapes else TINY)
    if args.vocab:
        shapes["vocab_size"] = shapes["embedding_size"] = args.vocab
    layers = args.layers or shapes["n_layers"]
    llada, fast, modeling = publisher_code(args.publisher_code.expanduser().resolve())

    from textdiff.generation import generate
    from textdiff.lm import DiffusionLM
    from textdiff.registry import build_sampler

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llada"
        theirs, ids = build_checkpoint(modeling, shapes, layers, folder, seed=0, std=args.std)
        theirs = theirs.to(device=args.device, dtype=dtype).eval()
        lm = DiffusionLM.from_pretrained(str(folder), device=args.device, dtype=dtype)
    ours = lm.model.eval()
    n_params = sum(p.numel() for p in ours.parameters())
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, min(ids.values()) - 1, (1, args.prompt_length), generator=g)  # no special tokens
    P = prompt.shape[1]

    rows = []
    for name, call, spec, cache, td_steps in modes(llada, fast, args, ids["mask"]):
        sampler = build_sampler(spec, lm.process)

        def run_ours():
            with torch.no_grad():
                return generate(ours, lm.process, sampler, [prompt[0].tolist()], max_new_tokens=args.gen_length,
                                steps=td_steps, block_size=args.block, use_cache=cache, stop_at_eos=False, seed=0)

        ((t_pub, med_pub), (x_pub, nfe_pub)), ((t_td, med_td), out) = timed_pair(
            lambda: call(theirs, prompt.to(args.device)), run_ours, args.repeats, sync)
        a, b = x_pub[0, P:].cpu().tolist(), out.sequences[0, P:].cpu().tolist()
        same = sum(x == y for x, y in zip(a, b))
        rows.append({"mode": name, "publisher_s": round(t_pub, 4), "textdiff_s": round(t_td, 4),
                     "speedup": round(t_pub / t_td, 2), "speedup_median": round(med_pub / med_td, 2),
                     "publisher_nfe": int(nfe_pub), "textdiff_nfe": out.nfe,
                     "tokens_agree": f"{same}/{len(a)}", "identical": same == len(a)})
        print(json.dumps(rows[-1]), flush=True)
    base = {r["mode"]: r for r in rows}["no cache"]
    for r in rows:  # each implementation against the publisher's uncached script
        r["publisher_vs_nocache"] = round(base["publisher_s"] / r["publisher_s"], 2)
        r["textdiff_vs_nocache"] = round(base["publisher_s"] / r["textdiff_s"], 2)

    shape = "LLaDA-8B shapes" if args.gpu_shapes else "tiny LLaDA"
    meta = {"model": f"{shape}, {layers} layers, d_model {shapes['d_model']}, vocab {shapes['embedding_size']}, "
                     f"{n_params / 1e6:.1f}M parameters, random weights (std {args.std}), {str(dtype).split('.')[-1]}",
            "decoding": f"prompt {P}, gen_length {args.gen_length}, steps {args.steps}, block_length {args.block}, "
                        f"threshold {args.threshold}, batch 1, greedy; best of {args.repeats} alternating runs after a warm-up",
            "command": "python " + " ".join(sys.argv), "device": args.device,
            "machine": (torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()),
            "threads": args.threads, "torch": torch.__version__,
            "load_average": [round(x, 1) for x in __import__("os").getloadavg()], "total_seconds": round(time.perf_counter() - started, 1),
            "publisher_code": "ML-GSAI/LLaDA generate.py, NVlabs/Fast-dLLM llada/generate.py + model/modeling_llada.py "
                              "(shims: LLaDAConfig.use_cache restored after init; the in-memory model instead of its from_pretrained)"}
    RESULTS.mkdir(exist_ok=True)
    name = args.name + ("_gpu_shapes" if args.gpu_shapes and args.name == "published_decoding" else "")
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    text = markdown(rows, meta)
    (RESULTS / f"{name}.md").write_text(text + "\n")
    print(text)


def markdown(rows, meta) -> str:
    keys = ["mode", "publisher_s", "textdiff_s", "speedup", "speedup_median", "publisher_nfe", "textdiff_nfe", "tokens_agree",
            "publisher_vs_nocache", "textdiff_vs_nocache"]
    lines = [f"# textdiff vs the publishers' LLaDA decoding ({meta['model']})", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']} ({meta['device']}, {meta['threads']} thread(s)), "
             f"torch {meta['torch']}, load average at the end {meta['load_average']} "
             "(other processes share this machine: compare ratios, not seconds).  ", f"Decoding: {meta['decoding']}.  ", f"Publisher code: {meta['publisher_code']}.", "",
             "speedup = publisher seconds / textdiff seconds (same mode, best runs; speedup_median: of the medians); *_vs_nocache = the publisher's uncached "
             "LLaDA generate() seconds / this run's seconds.", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
