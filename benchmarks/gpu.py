"""One prepared GPU run (H100 / H200): training MFU, FlexAttention block diffusion, decoding and
serving throughput, each measured side by side with its baseline in one process.

    python benchmarks/gpu.py OUT_DIR                         # all sections, about 7 minutes on an H100
    python benchmarks/gpu.py OUT_DIR --dry-run               # every section at tiny shapes on the CPU (seconds)
    python benchmarks/gpu.py OUT_DIR --sections training,bd3 --publisher-code PATH

Writes ``OUT_DIR/gpu.json`` and ``OUT_DIR/gpu.md`` (rewritten after every section: a run killed
half-way keeps what it measured; a section not reached reads "pending"). Random weights and
synthetic token rows only: nothing is downloaded. Progress lines go to stdout as they happen. The
section budgets add up to about 7 minutes (``--max-minutes``, default 7.5: sections not started by
then are skipped), so a limit of 8 minutes on the command leaves room; compilation is the part a
budget cannot cut short. Exit status 1 when a section failed (its reason is in the report). For a
longer run, e.g. all 32 layers: ``--decode-layers 32 --budget-scale 3 --max-minutes 25``.

Sections (each with a time budget and bounded loops; timings are medians of interleaved rounds,
ratios against a baseline run in the same process):

1. ``training``: the masked-diffusion training step at ``recipes/mdlm-owt-small.yaml``'s shapes
   (12 x 768, L = 1024, V = 50,258), bf16 autocast, torch.compile (``--compile regional``, the
   default: every repeated block compiled once, seconds instead of minutes; ``whole`` as
   ``train.compile`` does; ``none``), at the largest batch that fits (a doubling search),
   next to transformers' GPT-2 of the same size (causal LM loss, SDPA): tokens/s and MFU against a
   bf16 matmul rate measured here and against the datasheet figure (H100 SXM / PCIe / NVL, H200).
2. ``bd3``: BD3-LM training at L' = 4 and 16, the compiled FlexAttention block mask against the
   dense SDPA mask: loss on one fixed batch (asserted equal within bf16 tolerance), tokens/s, peak memory.
3. ``decoding``: LLaDA-8B shapes (8 of 32 layers by default: ``--decode-layers 32`` for all),
   lengths 256 and 512, block 32, batch 1 and 8: low-confidence decoding with no / prefix / dual
   cache and threshold 0.9 with each, against an AR model's KV-cached ``generate`` (the ceiling) and,
   with ``--publisher-code``, LLaDA's and Fast-dLLM's own scripts (same tokens compared).
4. ``serving``: when this checkout has ``textdiff serve`` (a ``textdiff/serve*`` module) and
   ``benchmarks/serve.py`` has the entry point ``gpu_benchmark(concurrency, *, device, dry_run,
   max_seconds) -> dict`` (one row of figures per concurrency), it is called at concurrency 1, 8, 32;
   otherwise the section is skipped with the reason.

On a lent GPU machine (its image has torch and transformers but not all of textdiff's dependencies,
``datasets`` for one; this script imports only torch, transformers and textdiff's modules)::

    pip install -e . --no-deps                 # textdiff itself, nothing resolved or downloaded
    pip install --no-deps wheels/*.whl         # whatever was carried (einops: Fast-dLLM's modeling file)
    python benchmarks/gpu.py benchmarks/results/gpu [--publisher-code /path/to/pub]

The dry run (``tests/test_gpu_benchmark.py``) runs the same code on the CPU with tiny shapes; there
torch.compile uses the ``aot_eager`` backend (dynamo + AOTAutograd, no inductor code generation),
FlexAttention runs forward only (it has no CPU backward) and memory is not tracked.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402
from gpu_common import (Budget, SectionFailed, SectionSkipped, Settings, free_memory, log,  # noqa: E402
                        rounded, sync)

#: section key -> (title, seconds it may take on the GPU; unused time passes to the next section)
SECTIONS = {
    "training": ("1. Training throughput and MFU: textdiff's masked diffusion vs GPT-2", 110),
    "bd3": ("2. BD3-LM training: FlexAttention block mask vs dense SDPA mask", 110),
    "decoding": ("3. Decoding at LLaDA-8B shapes", 170),
    "serving": ("4. Serving (textdiff serve)", 30),
}
#: dense bf16 tensor-core TFLOP/s from NVIDIA's datasheets (half the "with sparsity" figure), matched
#: against torch.cuda.get_device_name() in this order
DATASHEET = (("H200 NVL", 835.5), ("H200", 989.5), ("H100 NVL", 835.5), ("H100 PCIe", 756.5), ("H100", 989.5))
CONCURRENCY = (1, 8, 32)


def datasheet_tflops(name: str):
    """(dense bf16 TFLOP/s, which entry matched) for an NVIDIA device name; (None, None) if unknown."""
    for key, figure in DATASHEET:
        if key.lower() in name.lower():
            return figure, key + (" SXM" if key in ("H100", "H200") else "")
    return None, None


def matmul_tflops(device: torch.device, n: int, seconds: float) -> float:
    """Measured bf16 matmul rate: [n, n] @ [n, n] (2 n^3 FLOPs) repeated for about ``seconds``."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, generator=g, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and reps < 10_000:
        for _ in range(10):
            a @ b
        reps += 10
        sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


# ---------------------------------------------------------------------------------------------
# Section 4: the hook for benchmarks/serve.py
# ---------------------------------------------------------------------------------------------


def serving_entry():
    """(``benchmarks/serve.py``'s ``gpu_benchmark``, None) or (None, why the section is skipped)."""
    import textdiff

    if not any(m.name.startswith("serve") for m in pkgutil.iter_modules(textdiff.__path__)):
        return None, "textdiff serve is not in this checkout (no textdiff/serve* module)"
    path = HERE / "serve.py"
    if not path.is_file():
        return None, "benchmarks/serve.py (the serving load generator) is not in this checkout"
    spec = importlib.util.spec_from_file_location("textdiff_serve_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entry = getattr(module, "gpu_benchmark", None)
    if entry is None:
        return None, "benchmarks/serve.py has no gpu_benchmark(concurrency, *, device, dry_run, max_seconds) entry point"
    return entry, None


def section_serving(settings: Settings, budget: Budget):
    entry, reason = serving_entry()
    if entry is None:
        raise SectionSkipped(reason)
    rows, notes = [], []
    for i, c in enumerate(CONCURRENCY):
        share = budget.share(len(CONCURRENCY) - i)
        row = entry(c, device=str(settings.device), dry_run=settings.dry_run, max_seconds=share.seconds)
        rows.append({"concurrency": c, **{k: rounded(v) for k, v in dict(row).items()}})
        log(f"serving: concurrency {c}: {rows[-1]}")
    notes.append("figures as benchmarks/serve.py's gpu_benchmark reports them, one call per concurrency")
    return rows, notes


# ---------------------------------------------------------------------------------------------
# Results: JSON + Markdown, rewritten after every section
# ---------------------------------------------------------------------------------------------


class Results:
    def __init__(self, out_dir: Path, meta: dict, start: float):
        self.out_dir, self.meta, self.start = out_dir, meta, start
        self.sections = {key: {"title": title, "status": "pending", "reason": None, "seconds": None, "notes": [], "rows": []}
                         for key, (title, _) in SECTIONS.items()}

    def set(self, key: str, status: str, seconds: float = 0.0, rows=(), notes=(), reason=None) -> None:
        self.sections[key].update(status=status, seconds=round(seconds, 1), rows=list(rows), notes=list(notes), reason=reason)

    def write(self) -> None:
        """gpu.json and gpu.md, each written to a temporary file and renamed over the old one."""
        self.meta["total_seconds"] = round(time.perf_counter() - self.start, 1)
        data = json.dumps({"meta": self.meta, "sections": self.sections}, indent=1) + "\n"
        for name, text in (("gpu.json", data), ("gpu.md", self.markdown() + "\n")):
            tmp = self.out_dir / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out_dir / name)

    def markdown(self) -> str:
        m = self.meta
        lines = [f"# textdiff on {m['device_name']}" + (" (DRY RUN: tiny shapes on the CPU, the numbers mean nothing)"
                                                      if m["dry_run"] else ""), "",
                 f"Command: `{m['command']}`  ",
                 f"torch {m['torch']}, transformers {m['transformers']}, CUDA {m['cuda']}"
                 + (f", {m['gpu_memory_gib']} GiB" if m["gpu_memory_gib"] else "") + f"; compile: {m['compile']}.  ",
                 f"Measured bf16 matmul ({m['matmul_n']}^3): {m['matmul_tflops']} TFLOP/s; datasheet dense bf16: "
                 f"{m['datasheet_tflops'] or 'n/a'} TFLOP/s ({m['datasheet_entry'] or 'no entry for this device'}).  ",
                 "Timings: medians of interleaved rounds; every ratio is against a baseline measured in this same run.", ""]
        for key, sec in self.sections.items():
            status = sec["status"] + (f": {sec['reason']}" if sec["reason"] else "")
            took = f" ({sec['seconds']} s)" if sec["seconds"] is not None else ""
            lines += [f"## {sec['title']}", "", f"Status: {status}{took}.", ""]
            lines += [f"- {note}" for note in sec["notes"]] + ([""] if sec["notes"] else [])
            if sec["rows"]:
                table = report.sections([{"section": key, **r} for r in sec["rows"]], {key: ""})
                lines += table[2:]  # the table without report's own "## title" heading
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, help="folder for gpu.json and gpu.md (created if missing)")
    ap.add_argument("--dry-run", action="store_true", help="every section at tiny shapes on the CPU (seconds)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list out of {','.join(SECTIONS)}")
    ap.add_argument("--publisher-code", help="folder with LLaDA/ and Fast-dLLM/ as released (see benchmarks/published_decoding.py)")
    ap.add_argument("--compile", choices=("regional", "whole", "none"), default="regional",
                    help="torch.compile per repeated block (default: seconds to compile), the whole model, or none")
    ap.add_argument("--decode-layers", type=int, default=None, help="layers of the LLaDA-8B-shaped models (default 8; 32 = all)")
    ap.add_argument("--decode-std", type=float, default=None,
                    help="init std of the decoding models' random weights (default 0.25: peaked predictions)")
    ap.add_argument("--rounds", type=int, default=None, help="most interleaved timing rounds per comparison (default 5; dry run 2)")
    ap.add_argument("--max-minutes", type=float, default=7.5, help="sections not started by then are skipped")
    ap.add_argument("--budget-scale", type=float, default=1.0,
                    help="multiply every section's time budget (a longer run: raise --max-minutes with it)")
    args = ap.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    if args.budget_scale <= 0:
        ap.error("--budget-scale must be positive")
    if args.decode_layers is not None and args.decode_layers < 1:
        ap.error("--decode-layers must be at least 1")
    return args


def settings_for(args) -> Settings:
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --dry-run to check the script on a CPU", file=sys.stderr)
        raise SystemExit(2)
    device = torch.device("cpu") if args.dry_run else torch.device("cuda")
    return Settings(device=device, dry_run=args.dry_run, compile=args.compile,
                    compile_backend="aot_eager" if args.dry_run else "inductor",
                    rounds=args.rounds or (2 if args.dry_run else 5), publisher_code=args.publisher_code,
                    decode_layers=args.decode_layers, decode_std=args.decode_std)


def run_section(key: str, settings: Settings, budget: Budget):
    """(status, rows, notes, reason) of one section; a failure is recorded, never fatal to the run."""
    from gpu_decoding import section_decoding
    from gpu_training import section_bd3, section_training

    fn = {"training": section_training, "bd3": section_bd3, "decoding": section_decoding, "serving": section_serving}[key]
    try:
        rows, notes = fn(settings, budget)
        return "done", rows, notes, None
    except SectionSkipped as e:
        return "skipped", [], [], str(e)
    except SectionFailed as e:
        return "failed", e.rows, e.notes, str(e)
    except Exception as e:  # noqa: BLE001  (recorded; the next sections still run)
        traceback.print_exc()
        where = traceback.extract_tb(e.__traceback__)[-1]
        first = str(e).splitlines()[0] if str(e) else ""
        return "failed", [], [], f"{type(e).__name__}: {first} (raised at {Path(where.filename).name}:{where.lineno})"


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = settings_for(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    name = torch.cuda.get_device_name() if settings.cuda else report.machine()
    n = 256 if args.dry_run else 8192
    settings.matmul_tflops = matmul_tflops(settings.device, n, 0.5 if args.dry_run else 3.0)
    settings.datasheet_tflops, entry = datasheet_tflops(name) if settings.cuda else (None, None)
    import transformers

    meta = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            "dry_run": args.dry_run, "device_name": name, "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.version.cuda, "compile": f"{args.compile} ({settings.compile_backend})",
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if settings.cuda else None,
            "matmul_n": n, "matmul_tflops": round(settings.matmul_tflops, 3), "datasheet_tflops": settings.datasheet_tflops,
            "datasheet_entry": entry}
    log(f"{name}: bf16 matmul {settings.matmul_tflops:.1f} TFLOP/s, datasheet {settings.datasheet_tflops} ({entry})")
    results = Results(args.out_dir, meta, start)
    results.write()
    carry = 0.0
    for key, (title, nominal) in SECTIONS.items():
        left = args.max_minutes * 60 - (time.perf_counter() - start)
        if key not in args.sections:
            results.set(key, "skipped", reason="not in --sections")
        elif left <= 0 and not args.dry_run:
            results.set(key, "skipped", reason=f"the run's --max-minutes {args.max_minutes} were spent")
        else:
            log(f"== {title}")
            budget = Budget(nominal if args.dry_run else min(nominal * args.budget_scale + carry, left))
            status, rows, notes, reason = run_section(key, settings, budget)
            results.set(key, status, budget.used(), rows, notes, reason)
            log(f"{key}: {status}" + (f" ({reason})" if reason else "") + f" in {budget.used():.1f} s")
            carry = max(0.0, budget.left())
            torch.compiler.reset()
            free_memory(settings.device)
        results.write()
    print(results.markdown(), flush=True)
    return 1 if any(s["status"] == "failed" for s in results.sections.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
