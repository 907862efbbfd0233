"""The golden run of a refactor: outputs that must stay bit-identical while the code is reorganised.

    python tests/golden/record.py OUT.json            # record (run before and after a change)
    python tests/golden/record.py OUT.json --compare BEFORE.json

It records, on this machine (floating-point results are only comparable on the same machine):
* every published fixture's logits on fixed ids (SHA-256 of the float32 bytes, plus their sum),
  its seeded default decoding and its ``score``;
* seeded generations of every compatible sampler x process pair on tiny random denoisers (plain and
  filtered; block-wise with each cache where the model allows);
* the quickstart recipe's first 50 training losses (the real recipe, killed after 50 metric lines).
Only public entry points are used, so the script runs unchanged on either side of a refactor.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "published"


def digest(t: torch.Tensor) -> dict:
    t = t.detach().float().contiguous().cpu()
    return {"sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16], "sum": float(t.double().sum())}


def fixture_folders() -> list[Path]:
    out = []
    for p in sorted(FIXTURES.rglob("config.json")):
        folder = p.parent
        if (folder / "textdiff.json").exists() or folder.name.startswith("_"):
            continue
        out.append(folder)
    return out


def tokenizer_for(key: str) -> dict:
    """The DiT fixtures ship no tokenizer: the parity tests' own word-level tokenizers."""
    sys.path.insert(0, str(ROOT / "tests"))
    if key.startswith(("mdlm", "bd3lm")):
        from published_dit_helpers import tiny_tokenizer

        return {"tokenizer": tiny_tokenizer()}
    if key.startswith(("sedd", "duo", "udlm")):
        from test_published_sedd_duo import CASES

        name = {"sedd/absorb": "sedd-absorb", "sedd/uniform": "sedd-uniform"}.get(key, key.split("/")[0])
        return {"tokenizer": CASES[name][2]()}
    return {}


def published(record: dict) -> None:
    from textdiff.generation_io import _model_call
    from textdiff.lm import DiffusionLM

    for folder in fixture_folders():
        key = str(folder.relative_to(FIXTURES))
        try:
            lm = DiffusionLM.from_pretrained(folder, device="cpu", **tokenizer_for(key))
        except Exception as e:  # noqa: BLE001
            record[key] = {"load_error": f"{type(e).__name__}: {e}"[:200]}
            continue
        V = lm.process.vocab_size
        g = torch.Generator().manual_seed(0)
        L = min(16, lm.seq_len or 16)
        ids = torch.randint(0, min(V, 200), (2, L), generator=g)
        if lm.process.mask_id is not None:
            ids[:, ::3] = lm.process.mask_id
        t = torch.full((2,), 0.5)
        call = _model_call(lm.model, lm.process)
        pos = torch.arange(L)[None].expand(2, L)
        try:
            with torch.no_grad():
                entry = {"logits": digest(call(ids, t, None, pos, None, False))}
        except Exception as e:  # noqa: BLE001
            entry = {"logits_error": f"{type(e).__name__}: {e}"[:200]}
        try:
            texts, out = lm.generate(["Hello world", "A"], max_new_tokens=8, seed=3, return_output=True)
            entry["generate"] = out.generated
        except Exception as e:  # noqa: BLE001
            entry["generate_error"] = f"{type(e).__name__}: {e}"[:200]
        try:
            entry["score"] = lm.score(["Hello world. A list is a mutable sequence."], t_samples=4, seed=0)
        except Exception as e:  # noqa: BLE001
            entry["score_error"] = f"{type(e).__name__}: {e}"[:200]
        record[key] = entry


def pairs(record: dict) -> None:
    import textdiff
    from textdiff.errors import TextDiffError
    from textdiff.generation import generate
    from textdiff.models.configuration_textdiff import TextDiffConfig
    from textdiff.models.modeling_textdiff import TextDiffModel

    V, MASK = 40, 39
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    for pname in textdiff.available("process"):
        try:
            process = textdiff.build_process(pname, vocab_size=V, mask_id=MASK)
        except TextDiffError:
            continue
        attention = getattr(process, "required_attention", None) or "bidirectional"
        block = getattr(process, "block_size", None) if attention == "block_causal" else None
        torch.manual_seed(0)
        model = TextDiffModel(TextDiffConfig(
            vocab_size=V, hidden_size=32, num_layers=2, num_heads=2, mlp_ratio=2.0, max_position_embeddings=64,
            time_conditioning=process.time_conditioning, cond_dim=16, attention=attention,
            initializer_range=0.5, block_size=block)).eval()
        shift = getattr(process, "logits_shift", 0)
        for sname in textdiff.available("sampler"):
            for tag, fields in (("plain", {}), ("filtered", {"temperature": 0.8, "top_k": 7, "top_p": 0.9})):
                try:
                    sampler = textdiff.build_sampler({"name": sname, **fields}, process)
                except TextDiffError:
                    continue
                modes = [("full", {})]
                if shift:
                    modes = [("ar", {"block_size": 1})]
                elif attention == "block_causal":
                    modes = [("exact", {"block_size": block})]
                elif tag == "plain":
                    modes += [("blocks", {"block_size": 4, "use_cache": False}),
                              ("prefix", {"block_size": 4, "use_cache": "prefix"}),
                              ("dual", {"block_size": 4, "use_cache": "dual"})]
                for mode, kw in modes:
                    steps = 12 if not shift else 12
                    try:
                        out = generate(model, process, sampler, prompts, max_new_tokens=12, steps=steps, seed=7,
                                       eos_token_id=None, **kw)
                        res = {"generated": out.generated, "nfe": out.nfe, "calls": out.model_calls}
                    except Exception as e:  # noqa: BLE001
                        res = {"error": f"{type(e).__name__}: {e}"[:200]}
                    record[f"{pname}/{sname}/{tag}/{mode}"] = res


def quickstart(record: dict, n: int = 50) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "textdiff.cli", "train", str(ROOT / "recipes" / "quickstart.yaml"),
                                 f"output_dir={out}", "train.log_every=1", "train.trackers=[]"],
                                cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        losses, deadline = [], time.time() + 600
        try:
            while time.time() < deadline and proc.poll() is None:
                time.sleep(0.5)
                f = out / "metrics.jsonl"
                if f.exists():
                    lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
                    losses = [x["train_loss"] for x in lines if "train_loss" in x]
                    if len(losses) >= n:
                        break
        finally:
            proc.kill()
            proc.wait()
        record["quickstart_losses"] = losses[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--compare", default=None)
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    record: dict = {}
    published(record)
    pairs(record)
    if not args.skip_train:
        quickstart(record)
    Path(args.out).write_text(json.dumps(record, indent=1, sort_keys=True))
    print(f"wrote {args.out}: {len(record)} entries")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        keys = sorted(set(before) | set(record))
        diff = [k for k in keys if before.get(k) != record.get(k)]
        for k in diff:
            print(f"DIFF {k}:\n  before {json.dumps(before.get(k))[:300]}\n  after  {json.dumps(record.get(k))[:300]}")
        print(f"{len(keys) - len(diff)} / {len(keys)} entries identical")
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
