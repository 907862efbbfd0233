"""textdiff's decoding of a LLaDA checkpoint against the publishers' own generate scripts, as ratios
measured in one process on the same weights.

    python benchmarks/published_decoding.py --publisher-code /tmp/pub              # small LLaDA, real vocabulary, CPU
    python benchmarks/published_decoding.py --publisher-code /tmp/pub --shape tiny # the 0.1M-parameter model (vocab 256)
    python benchmarks/published_decoding.py --publisher-code /tmp/pub --gpu-shapes # LLaDA-8B shapes, random weights

``--publisher-code ROOT`` is a folder holding the two publishers' repositories as released (NEVER
copied into this repository)::

    ROOT/LLaDA/generate.py                 ML-GSAI/LLaDA: generate() without cache (LLaDA's own script)
    ROOT/Fast-dLLM/llada/generate.py       NVlabs/Fast-dLLM: generate (threshold), _with_prefix_cache, _with_dual_cache
    ROOT/Fast-dLLM/llada/model/            Fast-dLLM's modeling_llada.py (LLaDA's network + KV cache hooks)

The model: a random-weight LLaDA in the publisher's own class (``LLaDAModelLM``), saved in the
published layout (``config.json`` model_type "llada" + safetensors) with a word-level tokenizer
whose special ids are LLaDA's, then loaded by BOTH sides: by the publisher's class, and natively by
``DiffusionLM.from_pretrained`` (no remote code). Shapes (``--shape``):

* ``small`` (default): LLaDA's real vocabulary (126,464; mask 126336, EOS 126081, EOT 126348) on a
  small trunk (d_model 128, 2 layers, MLP 384), so the output layer and the [B, L, V] work that the
  publishers' scripts do on every row (no cache / prefix cache: logits and a softmax over all fed rows;
  dual cache: over the block) cost what they cost at the real vocabulary, and so does textdiff's
  windowed output layer (only the window's [MASK] rows). With so small a trunk the output layer is
  most of a forward (``head_share`` in the results: ~97% here against ~7% for LLaDA-8B), which
  favours whoever computes fewer rows far more than an 8B model would; ``--gpu-shapes`` is the
  check at the real proportions.
* ``tiny``: the 0.1M-parameter model of the first version (d_model 64, vocab 256, prompt 32, gen 64,
  block 16): per-call Python overhead dominates both sides there.
* ``8b`` (= ``--gpu-shapes``): LLaDA-8B's (d_model 4096, 32 heads, MLP 12288, vocab 126464);
  ``--layers`` keeps a few layers, ``--vocab`` may shrink the vocabulary for a CPU smoke run.

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
differences can only come from near-ties in confidence: textdiff ranks by the exact float64 scores,
ties only on exact equality, going to the leftmost position, and its [MASK] logit is −∞ while the
publisher's softmax includes it; the random checkpoint's [MASK] output row is zeroed, as in the
test fixture, so [MASK] is never anyone's argmax).

Timing: each mode runs both sides ALTERNATELY ``--repeats`` times after a one-block warm-up call
each; the table gives the best run (least disturbed by other processes) and the median.

Shims needed for the publisher code under transformers 5 (applied here, their files untouched):
``LLaDAConfig`` loses ``use_cache`` in ``PretrainedConfig.__init__`` (set back after init), and
``LLaDAModelLM.from_pretrained`` fails (no ``post_init``), so the publisher's side uses the model
object that wrote the checkpoint.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
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
SMALL = {"d_model": 128, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 384, "mlp_ratio": 3,
         "vocab_size": 126464, "embedding_size": 126464, "max_sequence_length": 1024, "rope_theta": 500000.0}
SHAPES = {"small": SMALL, "tiny": TINY, "8b": LLADA_8B}
# per shape: (prompt, gen_length, block) defaults; steps default to gen_length (one token per step)
DECODING = {"small": (64, 128, 32), "tiny": (32, 64, 16), "8b": (64, 128, 32)}
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
    with torch.no_grad():  # the [MASK] output row at zero: [MASK] is never the argmax (as the fixture's)
        model.model.transformer.ff_out.weight[ids["mask"]] = 0.0
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


def head_share(d: int, mlp: int, layers: int, vocab: int, kv: int = None) -> float:
    """Fraction of a forward's weight FLOPs per token in the output layer (attention scores left out);
    ``kv``: width of the key / value projections (grouped-query attention), default d."""
    kv = d if kv is None else kv
    trunk = layers * (2 * d * d + 2 * d * kv + 3 * d * mlp)
    return vocab * d / (trunk + vocab * d)


def timed_pair(first, second, repeats: int, sync, warm=None):
    """((best, median) seconds, last result) of each of two calls, run ALTERNATELY ``repeats`` times
    after one warm-up each (``warm``: cheaper warm-up calls), so load from other processes hits both
    alike; the best is the figure least disturbed by it."""
    for fn in warm or (first, second):
        fn()
    times, outs = ([], []), [None, None]
    for _ in range(repeats):
        for k, fn in enumerate((first, second)):
            sync()
            start = time.perf_counter()
            outs[k] = fn()
            sync()
            times[k].append(time.perf_counter() - start)
    return [((min(t), statistics.median(t)), o) for t, o in zip(times, outs)]


MODES = ("none", "prefix", "dual", "threshold", "threshold_dual")


def modes(llada, fast, args, mask_id):
    """[(key, name, publisher call (model, prompt, gen, steps), textdiff sampler spec, cache mode, threshold?)]."""
    def common(gen, steps):
        return {"steps": steps, "gen_length": gen, "block_length": args.block, "temperature": 0.0,
                "remasking": "low_confidence", "mask_id": mask_id}

    conf = {"name": "confidence", "ordering": "confidence", "commit_schedule": "linear", "temperature": 0.0}
    thr = {"name": "threshold", "threshold": args.threshold, "temperature": 0.0}
    τ = args.threshold
    return [
        ("none", "no cache", lambda m, p, g, n: (llada.generate(m, p, **common(g, n)), n), conf, "none", False),
        ("prefix", "prefix cache", lambda m, p, g, n: fast.generate_with_prefix_cache(m, p, **common(g, n)), conf, "prefix", False),
        ("dual", "dual cache", lambda m, p, g, n: fast.generate_with_dual_cache(m, p, **common(g, n)), conf, "dual", False),
        ("threshold", "threshold", lambda m, p, g, n: fast.generate(m, p, **common(g, n), threshold=τ), thr, "none", True),
        ("threshold_dual", "threshold + dual cache",
         lambda m, p, g, n: fast.generate_with_dual_cache(m, p, **common(g, n), threshold=τ), thr, "dual", True),
    ]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--publisher-code", required=True, type=Path, help="folder with LLaDA/ and Fast-dLLM/ (see above)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small", help="model shape preset (module docstring)")
    ap.add_argument("--gpu-shapes", action="store_true", help="= --shape 8b: LLaDA-8B's shapes (random weights)")
    ap.add_argument("--layers", type=int, default=None, help="transformer layers (default: the shape's; 32 for 8b)")
    ap.add_argument("--d-model", type=int, default=None, help="hidden size (default: the shape's)")
    ap.add_argument("--heads", type=int, default=None, help="attention heads (default: the shape's)")
    ap.add_argument("--mlp", type=int, default=None, help="MLP hidden size")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: the shape's); under 126464 the "
                    "special ids move to the top of the vocabulary (a small one checks the 8B layer shapes on a CPU)")
    ap.add_argument("--prompt-length", type=int, default=None)
    ap.add_argument("--gen-length", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="default: gen length (one token per step, LLaDA's default)")
    ap.add_argument("--block", type=int, default=None)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma list out of {','.join(MODES)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--std", type=float, default=None, help="init std of the random weights (default: 0.5 small, 0.25 otherwise; "
                    "0.5 makes predictions peaked enough for the threshold to commit several tokens in some steps)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default=None, help="results file stem (default: published_decoding[_SHAPE])")
    ap.add_argument("--no-write", action="store_true", help="print only; write no results file")
    args = ap.parse_args(argv)
    if args.gpu_shapes:
        args.shape = "8b"
    prompt, gen, block = DECODING[args.shape]
    args.prompt_length = args.prompt_length or prompt
    args.std = args.std if args.std is not None else {"small": 0.5, "tiny": 0.25, "8b": 0.25}[args.shape]
    args.gen_length = args.gen_length or gen
    args.block = args.block or block
    args.steps = args.steps or args.gen_length
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from {','.join(MODES)}")
    if args.gen_length % args.block or args.steps % (args.gen_length // args.block):
        ap.error("--gen-length must be a multiple of --block, and --steps a multiple of the number of blocks")
    return args


def shapes_of(args) -> dict:
    shapes = dict(SHAPES[args.shape])
    if args.vocab:
        shapes["vocab_size"] = shapes["embedding_size"] = args.vocab
    if args.d_model:
        shapes["d_model"] = args.d_model
    if args.heads:
        shapes["n_heads"] = shapes["n_kv_heads"] = args.heads
    if args.mlp:
        shapes["mlp_hidden_size"] = args.mlp
    shapes["n_layers"] = args.layers or shapes["n_layers"]
    return shapes


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    shapes = shapes_of(args)
    layers = shapes["n_layers"]
    llada, fast, modeling = publisher_code(args.publisher_code.expanduser().resolve())

    from textdiff.generation import generate
    from textdiff.lm import DiffusionLM
    from textdiff import build_sampler

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
    P, G, blocks = prompt.shape[1], args.gen_length, args.gen_length // args.block

    rows = []
    for key, name, call, spec, cache, thresholded in modes(llada, fast, args, ids["mask"]):
        if key not in args.modes:
            continue
        sampler = build_sampler(spec, lm.process)

        def run_ours(gen=G, steps=args.steps):
            steps = gen if thresholded else steps  # threshold: at most one step per token (see above)
            with torch.no_grad():
                return generate(ours, lm.process, sampler, [prompt[0].tolist()], max_new_tokens=gen, steps=steps,
                                block_size=args.block, use_cache=cache, stop_at_eos=False, seed=0)

        def run_theirs(gen=G, steps=args.steps):
            return call(theirs, prompt.to(args.device), gen, steps)

        one = args.steps // blocks  # the warm-up: one block on each side
        warm = (lambda: run_theirs(args.block, one), lambda: run_ours(args.block, one))
        ((t_pub, med_pub), (x_pub, nfe_pub)), ((t_td, med_td), out) = timed_pair(run_theirs, run_ours, args.repeats, sync, warm)
        a, b = x_pub[0, P:].cpu().tolist(), out.sequences[0, P:].cpu().tolist()
        same = sum(x == y for x, y in zip(a, b))
        rows.append({"mode": name, "publisher_s": round(t_pub, 4), "textdiff_s": round(t_td, 4),
                     "speedup": round(t_pub / t_td, 2), "speedup_median": round(med_pub / med_td, 2),
                     "publisher_nfe": int(nfe_pub), "textdiff_nfe": out.nfe,
                     "tokens_agree": f"{same}/{len(a)}", "identical": same == len(a)})
        print(json.dumps(rows[-1]), flush=True)
    base = {r["mode"]: r for r in rows}.get("no cache")
    for r in rows:  # each implementation against the publisher's uncached script
        r["publisher_vs_nocache"] = round(base["publisher_s"] / r["publisher_s"], 2) if base else "-"
        r["textdiff_vs_nocache"] = round(base["publisher_s"] / r["textdiff_s"], 2) if base else "-"

    d, V = shapes["d_model"], shapes["embedding_size"]
    share = head_share(d, shapes["mlp_hidden_size"], layers, V)
    real = head_share(4096, 12288, 32, 126464)
    meta = {"model": f"LLaDA, shape {args.shape!r}: {layers} layers, d_model {d}, MLP {shapes['mlp_hidden_size']}, "
                     f"{shapes['n_heads']} heads, vocab {V}, {n_params / 1e6:.1f}M parameters, random weights "
                     f"(std {args.std}), {str(dtype).split('.')[-1]}",
            "head_share": f"{share:.0%} of a forward's weight FLOPs per token here, {real:.0%} for LLaDA-8B",
            "decoding": f"prompt {P}, gen_length {G}, steps {args.steps} (threshold modes: up to gen_length), block_length "
                        f"{args.block}, threshold {args.threshold}, batch 1, greedy; best and median of {args.repeats} "
                        "alternating runs after a one-block warm-up",
            "command": "python " + " ".join(sys.argv), "device": args.device, "machine": machine(args.device),
            "threads": args.threads, "torch": torch.__version__,
            "load_average": [round(x, 1) for x in os.getloadavg()], "total_seconds": round(time.perf_counter() - started, 1),
            "publisher_code": "ML-GSAI/LLaDA generate.py, NVlabs/Fast-dLLM llada/generate.py + model/modeling_llada.py "
                              "(shims: LLaDAConfig.use_cache restored after init; the in-memory model instead of its from_pretrained)"}
    text = markdown(rows, meta, "LLaDA")
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        stem = args.name or "published_decoding" + ("" if args.shape == "small" else f"_{args.shape}")
        (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        (RESULTS / f"{stem}.md").write_text(text + "\n")


def markdown(rows, meta, family: str, notes=()) -> str:
    keys = ["mode", "rule", "publisher_s", "textdiff_s", "speedup", "speedup_median", "publisher_nfe", "textdiff_nfe", "tokens_agree",
            "publisher_vs_nocache", "textdiff_vs_nocache"]
    keys = [k for k in keys if any(k in r for r in rows)]
    lines = [f"# textdiff vs the publishers' {family} decoding ({meta['model']})", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']} ({meta['device']}, {meta['threads']} thread(s)), "
             f"torch {meta['torch']}, load average at the end {meta['load_average']} "
             "(other processes share this machine: compare ratios, not seconds).  ", f"Decoding: {meta['decoding']}.  ",
             f"Output layer: {meta['head_share']}.  ", f"Publisher code: {meta['publisher_code']}.", "",
             "speedup = publisher seconds / textdiff seconds (same mode, best runs; speedup_median: of the medians); *_vs_nocache = the publisher's uncached "
             "script's seconds / this run's seconds.", *notes, "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
