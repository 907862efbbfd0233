"""Peak CPU memory of loading a LLaDA-layout checkpoint: plain, ``device_map="cpu"``, and a map that
puts all decoder layers but the first on the disk.

A random-weight checkpoint in LLaDA's published layout (one safetensors shard per decoder layer,
plus the index) is written to a temporary folder; each load runs in a fresh child process, which
reports its peak resident memory growth during ``DiffusionLM.from_pretrained`` (Linux: ``VmHWM``
reset through ``/proc/self/clear_refs`` just before, minus ``VmRSS`` then), and again after one
forward pass, which touches every weight (safetensors maps the shards, so a CPU weight becomes
resident only when read). Figures are printed as ratios to the checkpoint's size on disk, so they do
not depend on the machine.

    python benchmarks/device_map_memory.py [--layers 6 --d-model 512]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "published" / "llada"

CHILD = r'''
import json, sys
def status_kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
from textdiff.lm import DiffusionLM
folder, kwargs = sys.argv[1], json.loads(sys.argv[2])
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS: imports do not count
before = status_kib("VmRSS")
lm = DiffusionLM.from_pretrained(folder, **kwargs)
load_peak = status_kib("VmHWM")
import torch
with torch.no_grad():  # every weight is touched once (the CPU part is memory-mapped until then)
    lm.model(torch.arange(16)[None])
forward_peak = status_kib("VmHWM")
cpu = sum(p.numel() * p.element_size() for p in lm.model.parameters() if p.device.type == "cpu")
print(json.dumps({"load": (load_peak - before) * 1024, "forward": (forward_peak - before) * 1024, "cpu_parameter_bytes": cpu}))
'''


def write_checkpoint(folder: Path, layers: int, d: int, vocab: int) -> int:
    """A random LLaDA-8B-layout checkpoint (block_type llama), one shard per layer; returns its bytes."""
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    cfg = json.loads((folder / "config.json").read_text())
    hidden = 3 * d
    cfg.update(d_model=d, n_heads=8, n_kv_heads=8, n_layers=layers, mlp_hidden_size=hidden, vocab_size=vocab,
               embedding_size=vocab)
    (folder / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0

    def shard(name, tensors):
        nonlocal total
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        total += (folder / name).stat().st_size

    shapes = {"q_proj": (d, d), "k_proj": (d, d), "v_proj": (d, d), "attn_out": (d, d), "ff_proj": (hidden, d),
              "up_proj": (hidden, d), "ff_out": (d, hidden), "attn_norm": (d,), "ff_norm": (d,)}
    n = layers + 1
    shard(f"model-00001-of-{n:05d}.safetensors", {
        "model.transformer.wte.weight": torch.randn(vocab, d, generator=g) * 0.02,
        "model.transformer.ln_f.weight": torch.ones(d), "model.transformer.ff_out.weight": torch.randn(vocab, d, generator=g) * 0.02})
    for i in range(layers):
        shard(f"model-{i + 2:05d}-of-{n:05d}.safetensors",
              {f"model.transformer.blocks.{i}.{k}.weight": torch.randn(*s, generator=g) * 0.02 for k, s in shapes.items()})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def measure(folder: Path, kwargs: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(folder), json.dumps(kwargs)], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=8192)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llada"
        size = write_checkpoint(folder, args.layers, args.d_model, args.vocab)
        disk_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.norm": "cpu",
                    "lm_head": "cpu", **{f"model.layers.{i}": "disk" for i in range(1, args.layers)}}
        runs = {"plain (device='cpu')": {"device": "cpu"}, "device_map='cpu'": {"device_map": "cpu"},
                f"device_map: layers 1-{args.layers - 1} on disk": {"device_map": disk_map, "offload_folder": str(Path(tmp) / "off")}}
        print(f"checkpoint: {args.layers} layers, d_model {args.d_model}, vocab {args.vocab}: {size / 2**20:.1f} MiB on disk")
        print("| load | peak RSS growth: load | load + one forward | CPU parameters |")
        print("|---|---|---|---|")
        for name, kwargs in runs.items():
            got = measure(folder, kwargs)
            print(f"| {name} | {got['load'] / size:.2f} | {got['forward'] / size:.2f} | {got['cpu_parameter_bytes'] / size:.2f} |")
        print("(each figure / the checkpoint's size on disk)")


if __name__ == "__main__":
    main()
