"""textdiff's DiffusionGemma decoding against transformers' own ``generate``, interleaved in one process
on the SAME network object (``lm.model.hf`` is transformers' ``DiffusionGemmaForBlockDiffusion``).

    python benchmarks/diffusion_gemma_decoding.py                       # the tiny fixture, CPU
    python benchmarks/diffusion_gemma_decoding.py --gpu-shapes          # DiffusionGemma-26B-A4B-like shapes, random weights
    python benchmarks/diffusion_gemma_decoding.py --gpu-shapes --layers 2 --vocab 4096 --device cpu   # smoke run

Each round decodes the same prompt batch with the same settings twice, textdiff first or second in
turn: ``lm.generate`` with the released sampler in its ``rng: "torch"`` mode after ``torch.manual_seed``
(the same random numbers in transformers' order, so both sides should give the same tokens) and
``model.generate`` after the same seed. Printed: the median seconds of each side, the ratio
transformers / textdiff (> 1: textdiff is faster), and whether the tokens were equal in every round.

``--gpu-shapes`` builds a random-weight DiffusionGemma whose text model has the shapes of the released
26B-A4B as given on its model card (hidden 2816, 16 heads / 8 KV heads of 256, full layers with 2 KV
heads of 512, 128 experts top-8 of 704, dense MLP 2112, vocabulary 262,144, sliding window 1024) with
``--layers`` layers (default 6: five sliding, one full), canvas 256, 48 steps, bf16 on ``--device``.
Timings are wall-clock on whatever machine runs this; compare only the ratio within one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "published" / "diffusion_gemma"


def gpu_shaped_folder(layers: int, vocab: int) -> Path:
    """A random-weight DiffusionGemma in the released layout with 26B-A4B-like text shapes."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    types = ["sliding_attention"] * (layers - 1) + ["full_attention"]
    text = dict(vocab_size=vocab, hidden_size=2816, intermediate_size=2112, num_hidden_layers=layers,
                num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512,
                num_global_key_value_heads=2, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192,
                rms_norm_eps=1e-6, sliding_window=1024, layer_types=types, final_logit_softcapping=30.0,
                use_bidirectional_attention="vision", num_experts=128, top_k_experts=8, moe_intermediate_size=704,
                tie_word_embeddings=True, pad_token_id=0, eos_token_id=[1], bos_token_id=2)
    vision = dict(model_type="gemma4_vision", hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=4, patch_size=4, position_embedding_size=16,
                  pooling_kernel_size=2)
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=256, eos_token_id=[1],
                                  pad_token_id=0, bos_token_id=2, boi_token_id=5, eoi_token_id=6, image_token_id=7)
    torch.manual_seed(0)
    with torch.device("meta"):
        DiffusionGemmaForBlockDiffusion(config)  # fail fast on a bad config before allocating
    model = DiffusionGemmaForBlockDiffusion(config).to(torch.bfloat16)
    folder = Path(tempfile.mkdtemp(prefix="dg-gpu-shapes-"))
    model.save_pretrained(str(folder))
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    for i, special in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]):
        words.pop(f"t{i}")
        words[special] = i
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(str(folder))
    return folder


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="a DiffusionGemma folder (default: the tiny fixture)")
    ap.add_argument("--gpu-shapes", action="store_true", help="26B-A4B-like shapes, random weights (see the docstring)")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--vocab", type=int, default=262144)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--canvas", type=int, default=None, help="canvas length (default: the model's)")
    ap.add_argument("--canvases", type=int, default=1, help="canvases to generate")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps per canvas (default: the released)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = ap.parse_args()

    from textdiff.lm import DiffusionLM

    folder = gpu_shaped_folder(args.layers, args.vocab) if args.gpu_shapes else (args.model or FIXTURE)
    dtype = torch.bfloat16 if args.gpu_shapes else None
    lm = DiffusionLM.from_pretrained(str(folder), device=args.device, dtype=dtype)
    hf = lm.model.network
    canvas = args.canvas or lm.model.config.canvas_length
    steps = args.steps or int(lm.generation_defaults["steps_per_block"])
    vocab = lm.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = [[2] + torch.randint(8, vocab, (args.prompt_len - 1,), generator=g).tolist() for _ in range(args.batch)]
    ids = torch.tensor(prompts, device=args.device)
    new = canvas * args.canvases

    def ours(seed):
        torch.manual_seed(seed)
        _, out = lm.generate(prompts, max_new_tokens=new, block_size=canvas, steps=steps * args.canvases,
                             sampler_options={"rng": "torch"}, seed=0, return_output=True)
        return out.sequences

    def theirs(seed):
        saved, hf.config.canvas_length = hf.config.canvas_length, canvas
        try:
            torch.manual_seed(seed)
            return hf.generate(ids.clone(), attention_mask=torch.ones_like(ids), max_new_tokens=new,
                               max_denoising_steps=steps).sequences
        finally:
            hf.config.canvas_length = saved

    ours(0), theirs(0)  # warm-up
    t_ours, t_theirs, same = [], [], True
    for r in range(args.rounds):
        first, second = (ours, theirs) if r % 2 == 0 else (theirs, ours)
        a, out_a = timed(lambda: first(100 + r))
        b, out_b = timed(lambda: second(100 + r))
        mine, other = (out_a, out_b) if first is ours else (out_b, out_a)
        (t_ours if first is ours else t_theirs).append(a)
        (t_theirs if first is ours else t_ours).append(b)
        same = same and mine.shape == other.shape and bool(torch.equal(mine.cpu(), other.cpu()))
    result = {"model": "gpu-shapes" if args.gpu_shapes else str(folder), "device": args.device,
              "batch": args.batch, "prompt_len": args.prompt_len, "canvas": canvas, "canvases": args.canvases,
              "steps_per_canvas": steps, "textdiff_s": statistics.median(t_ours),
              "transformers_s": statistics.median(t_theirs), "same_tokens": same}
    result["ratio_transformers_over_textdiff"] = result["transformers_s"] / result["textdiff_s"]
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
