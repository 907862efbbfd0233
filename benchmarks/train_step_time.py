"""CPU time of one training step (forward, backward, AdamW) of a masked diffusion denoiser, for
sizing CPU recipes such as the quickstart. Thread CPU time, not wall time, so a machine shared with
other jobs still gives the single-core figure (minus cache contention).

    OMP_NUM_THREADS=1 python benchmarks/train_step_time.py                     # the quickstart's model
    OMP_NUM_THREADS=1 python benchmarks/train_step_time.py --vocab 4096 --hidden 256 --layers 4 --batch 32
"""
from __future__ import annotations

import argparse
import time

import torch

from textdiff.config import ModelConfig
from textdiff.models.build import denoiser_config
from textdiff.models.modeling_textdiff import TextDiffModel
from textdiff.objective import nelbo_terms
from textdiff import build_process


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    V, L, B = args.vocab, args.seq_len, args.batch
    process = build_process({"name": "masked", "schedule": {"name": "loglinear"}, "time_conditioning": False},
                            vocab_size=V, mask_id=V - 1)
    cfg = ModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads)
    model = TextDiffModel(denoiser_config(cfg, V, process, L, V - 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x0 = torch.randint(0, V - 2, (B, L), generator=torch.Generator().manual_seed(0))  # [B, L]
    times = []
    for i in range(args.steps + 2):
        start = time.thread_time() if args.threads == 1 else time.process_time()
        terms = nelbo_terms(model, process, x0, generator=torch.Generator().manual_seed(i))
        (terms.loss.sum() / terms.mask.sum()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append((time.thread_time() if args.threads == 1 else time.process_time()) - start)
    timed = sorted(times[2:])
    median = timed[len(timed) // 2]
    n_params = sum(q.numel() for q in model.parameters())
    print(f"{n_params / 1e6:.2f} M parameters, batch {B} x {L} tokens, {args.threads} thread(s): "
          f"median CPU time per step {median:.3f} s ({B * L / median:,.0f} tokens per CPU-second)")


if __name__ == "__main__":
    main()
