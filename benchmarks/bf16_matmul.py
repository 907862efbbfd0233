"""bf16 vs fp32 matmul throughput on this CPU, side by side in one process (the README's bf16 figure).

    OMP_NUM_THREADS=1 python benchmarks/bf16_matmul.py              # 1 thread; --threads 2 for two
    python benchmarks/bf16_matmul.py --sizes 4096 --seconds 5

Each size n times ``a @ b`` for square [n, n] operands in float32 and in bfloat16 (fp32 accumulate
inside oneDNN / the fallback kernel), alternating the two so that a machine shared with other jobs
slows both alike, and prints GFLOP/s (2 n^3 per product) and the ratio bf16 / fp32. Whether bf16 is
native (AVX512-BF16 / AMX) or emulated is printed too: without it bf16 is slower, not faster.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def gflops(a: torch.Tensor, b: torch.Tensor, seconds: float) -> float:
    a @ b  # warm up (oneDNN primitive creation)
    n, reps, start = a.shape[0], 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        took = time.perf_counter() - start
        if took >= seconds:
            return 2 * n**3 * reps / took / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--seconds", type=float, default=3.0, help="time per (size, dtype) measurement")
    p.add_argument("--rounds", type=int, default=2, help="alternating fp32/bf16 rounds (the best of each is kept)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    p.add_argument("--force", action="store_true", help="time emulated bf16 above n=1024 too (minutes per product)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    native = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, native bf16 {native}, AMX {amx}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    rows = []
    for n in args.sizes:
        g = torch.Generator().manual_seed(n)
        a32, b32 = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        a16, b16 = a32.bfloat16(), b32.bfloat16()
        best = {"fp32": 0.0, "bf16": 0.0}
        skip16 = not native and n > 1024 and not args.force  # emulated bf16: one product takes minutes
        for _ in range(args.rounds):
            best["fp32"] = max(best["fp32"], gflops(a32, b32, args.seconds))
            if not skip16:
                best["bf16"] = max(best["bf16"], gflops(a16, b16, args.seconds))
        if skip16:
            rows.append({"n": n, "fp32_gflops": best["fp32"], "bf16_gflops": None, "ratio": None})
            print(f"n={n:5d}  fp32 {best['fp32']:7.1f} GFLOP/s  bf16 skipped (emulated on this CPU; --force to time it)")
            continue
        rows.append({"n": n, "fp32_gflops": best["fp32"], "bf16_gflops": best["bf16"], "ratio": best["bf16"] / best["fp32"]})
        print(f"n={n:5d}  fp32 {best['fp32']:7.1f} GFLOP/s  bf16 {best['bf16']:7.1f} GFLOP/s  bf16/fp32 {rows[-1]['ratio']:.2f}x",
              flush=True)
    if args.out:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        info = {"machine": platform.processor() or platform.machine(), "load_average_1min": load, "native_bf16": native, "amx": amx,
                "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
        Path(args.out).write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
