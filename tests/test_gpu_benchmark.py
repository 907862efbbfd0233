"""benchmarks/gpu.py, the prepared GPU run: its dry run (every section at tiny shapes on the CPU)
writes a complete, finite JSON + Markdown report without the packages a GPU image may lack; the
pieces a CPU cannot reach on its own (the batch search's out-of-memory path, the serving hook, the
datasheet lookup) are checked with stand-ins."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu  # noqa: E402
import gpu_training  # noqa: E402
from gpu_common import Budget, SectionSkipped, Settings  # noqa: E402

#: packages textdiff depends on or offers as extras that a GPU image may lack: the run must not need them
ABSENT = ("datasets", "accelerate", "numba", "sentencepiece", "peft", "lm_eval", "matplotlib")
RUN = ("import runpy, sys\n"
       "for name in {absent!r}: sys.modules[name] = None  # `import name` raises ImportError\n"
       "sys.argv = ['benchmarks/gpu.py', {out!r}, '--dry-run']\n"
       "runpy.run_path('benchmarks/gpu.py', run_name='__main__')\n")


def numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUN.format(absent=ABSENT, out=str(out))], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc, json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


@pytest.mark.slow
def test_dry_run_reports_every_section(dry_run):
    proc, data, md = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sections = data["sections"]
    assert list(sections) == list(gpu.SECTIONS)
    for key, sec in sections.items():
        assert sec["status"] in ("done", "skipped"), (key, sec["reason"])
        assert (sec["status"] == "done") == bool(sec["rows"]), key
        if sec["status"] == "skipped":
            assert sec["reason"], key  # a skipped section says why
        assert sec["title"] in md and f"Status: {sec['status']}" in md
    serving = sections["serving"]["rows"]  # benchmarks/serve.py's gpu_benchmark: the continuous engine, a toy model
    assert [r["concurrency"] for r in serving] == list(gpu.CONCURRENCY)
    for r in serving:
        assert r["tokens_per_s"] > 0 and r["sequential_tokens_per_s"] > 0 and r["errors"] == 0
        assert r["compared"] >= 1 and r["mismatches"] == 0  # the same answers at every concurrency
        assert r["batched_forward_ceiling_x"] > 0  # one merged forward against one forward per row, timed
    assert all(math.isfinite(x) for x in numbers(data)), "a non-finite number in the report"
    assert data["meta"]["dry_run"] and "DRY RUN" in md
    assert "| model | params_M |" in md and "| gen_length | batch | method |" in md


@pytest.mark.slow
def test_dry_run_training_and_bd3_rows(dry_run):
    _, data, _ = dry_run
    train = data["sections"]["training"]["rows"]
    assert [r["model"].split()[0] for r in train] == ["textdiff", "transformers"]
    for r in train:
        assert r["tokens_per_s"] > 0 and 0 < r["mfu_vs_measured"] and r["batch"] == gpu_training.DRY_SHAPES["batches"][-1]
    assert train[0]["vs_gpt2"] == pytest.approx(train[0]["tokens_per_s"] / train[1]["tokens_per_s"], rel=1e-2)
    bd3 = data["sections"]["bd3"]["rows"]
    assert sorted({r["block"] for r in bd3}) == list(gpu_training.BLOCK_SIZES)
    for Lb in gpu_training.BLOCK_SIZES:
        pair = [r for r in bd3 if r["block"] == Lb]
        assert len(pair) == 2 and all(r["loss_equal"] for r in pair)
        assert abs(pair[0]["loss_fixed_batch"] - pair[1]["loss_fixed_batch"]) <= gpu_training.LOSS_RTOL * pair[1]["loss_fixed_batch"]


@pytest.mark.slow
def test_dry_run_decoding_rows(dry_run):
    import gpu_decoding

    _, data, _ = dry_run
    rows = data["sections"]["decoding"]["rows"]
    spec = gpu_decoding.DRY_SPEC
    for N in spec["lengths"]:
        for B in spec["batches"]:
            part = {r["method"]: r for r in rows if r["gen_length"] == N and r["batch"] == B}
            assert len(part) == len(gpu_decoding.MODES) + 1, (N, B, sorted(part))  # every mode and the AR ceiling
            base = part["textdiff: low-confidence, no cache"]
            assert base["calls_per_token"] == 1.0 and base["vs_no_cache"] == 1.0  # steps = length: one call per token
            for r in part.values():
                assert r["tokens_per_s"] == pytest.approx(B * N / r["seconds"], rel=1e-2)
                assert 0 < r["calls_per_token"] <= 1.0  # never more than one (batched) call per generated position


def test_largest_batch_stops_at_the_first_out_of_memory():
    seen = []

    def try_batch(b):
        seen.append(b)
        if b >= 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    best, tried = gpu_training.largest_batch(try_batch, (8, 16, 32, 64), torch.device("cpu"))
    assert best == 16 and tried == [[8, True], [16, True], [32, False]] and seen == [8, 16, 32]
    with pytest.raises(RuntimeError, match="shape mismatch"):  # anything else is a bug, not a full GPU
        gpu_training.largest_batch(lambda b: (_ for _ in ()).throw(RuntimeError("shape mismatch")), (8,), torch.device("cpu"))


def test_serving_hook_calls_the_entry_point_at_each_concurrency(monkeypatch):
    settings = Settings(device=torch.device("cpu"), dry_run=True, compile="none", compile_backend="eager", rounds=1)
    monkeypatch.setattr(gpu, "serving_entry", lambda: (None, "no serve here"))
    with pytest.raises(SectionSkipped, match="no serve here"):
        gpu.section_serving(settings, Budget(10))
    calls = []

    def entry(concurrency, *, device, dry_run, max_seconds):
        calls.append((concurrency, device, dry_run))
        assert 0 < max_seconds <= 10
        return {"tokens_per_s": 100.0 * concurrency, "latency_p50_s": 0.25}

    monkeypatch.setattr(gpu, "serving_entry", lambda: (entry, None))
    rows, _ = gpu.section_serving(settings, Budget(10))
    assert calls == [(c, "cpu", True) for c in gpu.CONCURRENCY]
    assert [r["concurrency"] for r in rows] == list(gpu.CONCURRENCY) and rows[-1]["tokens_per_s"] == 3200.0


def test_datasheet_figures_by_device_name():
    assert gpu.datasheet_tflops("NVIDIA H100 80GB HBM3") == (989.5, "H100 SXM")
    assert gpu.datasheet_tflops("NVIDIA H100 PCIe") == (756.5, "H100 PCIe")
    assert gpu.datasheet_tflops("NVIDIA H100 NVL") == (835.5, "H100 NVL")
    assert gpu.datasheet_tflops("NVIDIA H200") == (989.5, "H200 SXM")
    assert gpu.datasheet_tflops("NVIDIA H200 NVL") == (835.5, "H200 NVL")
    assert gpu.datasheet_tflops("NVIDIA A10G") == (None, None)


def test_without_a_gpu_the_full_run_refuses_in_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exit_info:
        gpu.main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: no CUDA device here; run with --dry-run to check the script on a CPU"
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_failing_section_is_recorded_and_the_next_ones_still_run(tmp_path, monkeypatch):
    def broken(settings, budget):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")

    monkeypatch.setattr(gpu_training, "section_training", broken)
    monkeypatch.setattr(gpu, "serving_entry", lambda: (lambda c, **kw: {"tokens_per_s": 1.0 * c}, None))
    assert gpu.main([str(tmp_path), "--dry-run", "--sections", "training,serving"]) == 1
    sections = json.loads((tmp_path / "gpu.json").read_text())["sections"]
    assert sections["training"]["status"] == "failed"
    assert sections["training"]["reason"] == ("RuntimeError: CUDA error: an illegal memory access was encountered "
                                              f"(raised at {Path(__file__).name}:{broken.__code__.co_firstlineno + 1})")
    assert sections["bd3"] == {**sections["bd3"], "status": "skipped", "reason": "not in --sections"}
    assert sections["serving"]["status"] == "done" and sections["serving"]["rows"][-1]["tokens_per_s"] == 32.0
    md = (tmp_path / "gpu.md").read_text()
    assert "Status: failed: RuntimeError: CUDA error" in md and not list(tmp_path.glob(".*.tmp"))
