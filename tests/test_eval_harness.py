"""The evaluation harness end to end on tiny saved models: a suite writes JSON + Markdown + PNGs,
the same seeds give the same JSON numbers, bad suites fail with one-line errors, optional extras
(MAUVE, lm-eval) fail with an error naming the extra, and the lm-eval adapter returns the harness's numbers."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

from textdiff.config import ModelConfig, resolve_section  # noqa: E402
from textdiff.errors import ConfigError, DataError, TextDiffError  # noqa: E402
from textdiff.eval.common import MissingExtraError  # noqa: E402

TEXTS = [
    "the cat sat on the mat and looked at the dog .",
    "a dog ran in the park with a red ball .",
    "the sun is warm and the sky is blue today .",
    "we read a book about the sea and the ships .",
    "the bird sang a song in the old tree .",
    "she wrote a letter to her friend in the city .",
] * 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny masked model, a tiny AR reference (same tokenizer) and small data files."""
    from textdiff.lm import DiffusionLM
    from textdiff.models import TextDiffModel
    from textdiff.models.build import denoiser_config
    from textdiff import build_process
    from textdiff.tokenization import ensure_special_tokens, train_bpe, wrap_fast

    root = tmp_path_factory.mktemp("eval")
    tok = wrap_fast(train_bpe(TEXTS, 300, 1))
    ensure_special_tokens(tok)
    V = len(tok)
    out = {}
    for name in ("masked", "ar"):
        process = build_process(name, vocab_size=V, mask_id=tok.mask_token_id)
        torch.manual_seed(0)
        model = TextDiffModel(denoiser_config(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, cond_dim=16), V, process, 32, tok.mask_token_id))
        lm = DiffusionLM(model.eval(), tok, process, resolve_section("sampler", "ancestral", "sampler"), seq_len=32)
        lm.save_pretrained(root / name)
        out[name] = root / name
    (root / "data.txt").write_text("\n".join(TEXTS[:6]) + "\n")
    (root / "lambada.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:3]))
    (root / "empty.txt").write_text("\n  \n")
    out["root"] = root
    return out


def _suite(folders, tmp_path, **change) -> Path:
    suite = {
        "name": "tiny",
        "output_dir": str(tmp_path / "out"),
        "seed": 3,
        "models": [{"path": str(folders["masked"]), "label": "tiny-mdlm"}],
        "tasks": [
            {"metric": "likelihood", "name": "lines", "dataset": {"path": str(folders["root"] / "data.txt")},
             "t_samples": 2, "batch_size": 4, "bootstrap": 50},
            {"metric": "conditional", "name": "lastword", "dataset": {"path": str(folders["root"] / "lambada.jsonl"), "format": "jsonl"},
             "mc_samples": 2},
            {"metric": "generation", "name": "gen", "steps": [2, 4], "num_samples": 3, "max_new_tokens": 16, "batch_size": 2,
             "reference": {"path": str(folders["ar"]), "note": "tiny AR reference"}, "metrics": ["gen_ppl", "diversity", "speed"]},
        ],
    }
    suite.update(change)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _numbers(report: dict) -> list:
    """Every result with the wall-clock fields removed (they are the only ones that may vary)."""
    from textdiff.harness.run import TIMING_KEYS

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in TIMING_KEYS}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(report["results"])


@pytest.mark.slow
def test_suite_writes_report_and_same_seed_gives_same_numbers(folders, tmp_path):
    from textdiff.harness.run import main

    path = _suite(folders, tmp_path)
    first = main([str(path), f"output_dir={tmp_path / 'a'}"])
    second = main([str(path), f"output_dir={tmp_path / 'b'}"])
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert _numbers(a) == _numbers(b)
    for name in ("report.md", "genppl_entropy_vs_steps.png", "quality_vs_speed.png"):
        assert (first.parent / name).stat().st_size > 0
    kinds = [(r["metric"], r.get("steps")) for r in a["results"]]
    assert kinds == [("likelihood", None), ("conditional", None), ("generation", 2), ("generation", 4)]
    lik = a["results"][0]
    assert lik["layout"] == "wrap" and lik["estimator"] == "nelbo" and lik["bootstrap_ci"][0] <= lik["nelbo"] <= lik["bootstrap_ci"][1]
    gen = a["results"][2]
    assert gen["gen_ppl"]["protocol"]["reference"]["kind"] == "textdiff-ar" and not gen["gen_ppl"]["protocol"]["retokenized"]
    assert gen["speed"]["nfe"] <= 2 and gen["speed"]["batch_size"] == 2 and gen["speed"]["tokens_per_s"] > 0
    assert a["protocol"]["seed"] == 3 and a["models"][0]["process"]["name"] == "masked" and a["textdiff_version"]
    assert "commit" in a["git"] and a["protocol"]["suite"]["tasks"][2]["steps"] == [2, 4]
    # a different seed changes the numbers
    third = main([str(path), f"output_dir={tmp_path / 'c'}", "seed=4"])
    assert _numbers(json.loads(third.read_text())) != _numbers(a)


def test_ar_model_likelihood_is_exact_in_the_harness(folders, tmp_path):
    from textdiff.harness.run import main

    path = _suite(folders, tmp_path, models=[{"path": str(folders["ar"])}])
    report = json.loads(main([str(path), "tasks.2.metrics=[diversity]", "tasks.1.mc_samples=5",
                              "tasks.2.max_new_tokens=32"]).read_text())
    lik, cond, gen = report["results"]  # an AR model decodes once, whatever the steps list says
    assert lik["estimator"] == "exact" and lik["t_samples"] == 1 and lik["mc_ci"][0] == lik["mc_ci"][1]
    assert cond["estimator"] == "exact" and cond["mc_samples"] == 1
    assert gen["max_new_tokens"] == 31 and gen["block_size"] == 1  # the start token takes one of 32 positions


@pytest.mark.parametrize("change,error,needle", [
    ({"tasks": [{"metric": "bleurt", "name": "x"}]}, ConfigError, "unknown metric 'bleurt'"),
    ({"tasks": [{"metric": "likelihood", "name": "x", "dataset": {"path": "a.txt"}, "t_sample": 3}]}, ConfigError, "t_sample"),
    ({"tasks": [{"metric": "generation", "name": "g", "metrics": ["bleu"]}]}, ConfigError, "bleu"),
    ({"colour": "red"}, ConfigError, "colour"),
])
def test_bad_suites_raise_one_line_errors(folders, tmp_path, change, error, needle):
    from textdiff.harness.suite import load_suite

    with pytest.raises(error) as e:
        load_suite(_suite(folders, tmp_path, **change))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_empty_dataset_and_missing_files_raise_one_line_errors(folders, tmp_path):
    from textdiff.harness.run import main

    empty = {"metric": "likelihood", "name": "e", "dataset": {"path": str(folders["root"] / "empty.txt")}}
    with pytest.raises(DataError) as e:
        main([str(_suite(folders, tmp_path, tasks=[empty]))])
    assert "empty" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError):
        main([str(_suite(folders, tmp_path, tasks=[{**empty, "dataset": {"path": str(tmp_path / "nope.txt")}}]))])
    with pytest.raises(ConfigError):
        main([str(tmp_path / "no-suite.yaml")])


def test_cli_prints_one_line_error_and_exits_2(folders, tmp_path, capsys, monkeypatch):
    from textdiff.cli import main as cli

    monkeypatch.chdir(tmp_path)
    code = cli(["eval", str(_suite(folders, tmp_path, tasks=[{"metric": "nope", "name": "x"}]))])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "unknown metric" in err and "\n" not in err


def test_mauve_and_plots_without_their_extras_are_skipped_with_one_line(folders, tmp_path, monkeypatch, capsys):
    from textdiff.harness.run import main
    from textdiff.eval.mauve import mauve_score

    monkeypatch.setitem(sys.modules, "mauve", None)  # as if mauve-text were not installed
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # ... and matplotlib (the plain install)
    with pytest.raises(MissingExtraError) as e:
        mauve_score([[0.0, 1.0]] * 4, [[1.0, 0.0]] * 4)
    assert "textdiff[mauve]" in str(e.value) and "\n" not in str(e.value)
    gen = {"metric": "generation", "name": "g", "steps": [2], "num_samples": 2, "max_new_tokens": 8,
           "reference": {"path": str(folders["ar"])}, "metrics": ["mauve", "diversity"],
           "mauve": {"dataset": {"path": str(folders["root"] / "data.txt")}}}
    report = json.loads(Path(main([str(_suite(folders, tmp_path, tasks=[gen]))])).read_text())
    err = capsys.readouterr().err
    assert "note: task 'g': MAUVE skipped (mauve is not installed): pip install 'textdiff[mauve]'" in err
    assert "note: the report's plots skipped (matplotlib is not installed): pip install 'textdiff[eval]'" in err
    entry = [r for r in report["results"] if r["metric"] == "generation"][0]
    assert "mauve" not in entry and "diversity" in entry  # the other metrics ran
    assert not list((tmp_path / "out").glob("*.png"))


def test_lm_eval_adapter_needs_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.delitem(sys.modules, "textdiff.eval.lm_eval_adapter", raising=False)
    with pytest.raises(MissingExtraError) as e:
        importlib.import_module("textdiff.eval.lm_eval_adapter")
    assert "textdiff[lmeval]" in str(e.value)


def test_lm_eval_adapter_returns_harness_numbers(folders):
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'textdiff[lmeval]')")
    from lm_eval.api.registry import get_model

    from textdiff.eval.conditional import conditional_nll
    from textdiff.eval.lm_eval_adapter import TextDiffLM
    from textdiff.lm import DiffusionLM

    assert get_model("textdiff") is TextDiffLM
    lm = DiffusionLM.from_pretrained(folders["ar"], device="cpu")
    adapter = TextDiffLM(lm=lm, mc_samples=4, greedy=True)
    reqs = [SimpleNamespace(args=("the cat sat on", " the mat")), SimpleNamespace(args=("a dog", " ran"))]
    out = adapter.loglikelihood(reqs)
    for (ll, greedy), req in zip(out, reqs):
        p = lm.tokenizer(req.args[0], add_special_tokens=False)["input_ids"]
        a = lm.tokenizer(req.args[1], add_special_tokens=False)["input_ids"]
        assert ll == pytest.approx(-conditional_nll(lm.model, lm.process, p, a).nll, abs=1e-5)  # AR: exact
        assert isinstance(greedy, bool)
    rolling = adapter.loglikelihood_rolling([SimpleNamespace(args=("the sun is warm and the sky is blue",))])
    assert rolling[0] < 0
    text = adapter.generate_until([SimpleNamespace(args=("the cat", {"until": ["."], "max_gen_toks": 6}))])
    assert isinstance(text[0], str) and "." not in text[0]


def test_mauve_separates_distributions_over_seeds():
    pytest.importorskip("mauve", reason="mauve-text is not installed (pip install 'textdiff[mauve]')")
    import numpy as np

    from textdiff.eval.mauve import mauve_score

    rng = np.random.default_rng(0)
    p, q, far = rng.normal(size=(120, 8)), rng.normal(size=(120, 8)), rng.normal(size=(120, 8)) + 3.0
    same = mauve_score(p, q, seeds=(0, 1, 2))
    apart = mauve_score(p, far, seeds=(0, 1, 2))
    assert len(same["mauve_values"]) == 3 and same["mauve_std"] >= 0.0
    assert same["mauve_mean"] > 0.8 > 0.1 > apart["mauve_mean"]


def test_samples_do_not_depend_on_batch_size(folders):
    from textdiff.eval.speed import sample_texts
    from textdiff.lm import DiffusionLM

    lm = DiffusionLM.from_pretrained(folders["masked"], device="cpu")
    kw = dict(num_samples=3, max_new_tokens=12, steps=6, seed=11, warmup=False)
    one, _, s1 = sample_texts(lm.model, lm.process, lm.tokenizer, batch_size=1, **kw)
    three, texts, s3 = sample_texts(lm.model, lm.process, lm.tokenizer, batch_size=3, **kw)
    assert one == three and len(texts) == 3
    assert s1["batches"] == 3 and s3["batches"] == 1 and s3["batch_size"] == 3 and s3["nfe"] <= 6


@pytest.mark.slow
def test_eval_runs_from_any_folder_with_package_code_only(folders, tmp_path):
    """``python -m textdiff.cli eval`` from a folder holding a booby-trapped ``evaluation/`` package and
    relative paths: the package's harness runs, paths resolve from that folder, output under runs/eval/."""
    import os
    import subprocess

    work = tmp_path / "elsewhere"
    (work / "evaluation").mkdir(parents=True)
    (work / "evaluation" / "__init__.py").write_text("raise RuntimeError('code from the working directory ran')\n")
    (work / "evaluation" / "run.py").write_text("raise RuntimeError('code from the working directory ran')\n")
    (work / "docs.txt").write_text((folders["root"] / "data.txt").read_text())
    suite = {"name": "moved", "models": [str(folders["masked"])],
             "tasks": [{"metric": "likelihood", "name": "lines", "dataset": {"path": "docs.txt"}, "t_samples": 2,
                        "bootstrap": 20},
                       {"metric": "generation", "name": "gen", "steps": [2], "num_samples": 2, "max_new_tokens": 8,
                        "reference": {"path": "runs/no-reference/final", "optional": True}}]}
    (work / "suite.yaml").write_text(yaml.safe_dump(suite))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run([sys.executable, "-m", "textdiff.cli", "eval", "suite.yaml", "--quiet"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((work / "runs" / "eval" / "moved" / "report.json").read_text(encoding="utf-8"))
    lik, gen = report["results"]
    assert lik["rows"] > 0 and lik["dataset"]["path"] == "docs.txt"
    assert "gen_ppl" not in gen and "diversity" in gen  # the optional reference is absent: skipped with a note
    assert "reference model 'runs/no-reference/final' is absent, gen_ppl skipped" in res.stderr
    assert (work / "runs" / "eval" / "moved" / "genppl_entropy_vs_steps.png").stat().st_size > 0
    assert not (work / "runs" / "eval" / "moved" / "quality_vs_speed.png").exists()  # no gen PPL, no such plot


def test_shipped_suites_load_by_name_and_write_under_runs():
    from textdiff.harness.suite import load_suite, output_dir, packaged_suites

    assert {"quickstart", "zero_shot", "process_comparison"} <= set(packaged_suites())
    for name in packaged_suites():
        suite, _ = load_suite(name)
        assert output_dir(suite).relative_to(Path.cwd()).parts[:2] == ("runs", "eval")  # never evaluation/results
    quick, _ = load_suite("quickstart")
    [gen] = [t for t in quick.tasks if t.metric == "generation"]
    assert gen.reference.optional and gen.reference.path == "runs/ref-ar/final"
    with pytest.raises(ConfigError) as e:
        load_suite("quickstrat")
    assert "quickstart" in str(e.value) and "\n" not in str(e.value)


def test_plot_axes_use_plain_labels_without_crowded_ticks():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from textdiff.harness.report import _scale

    fig, ax = plt.subplots()
    ax.plot([8, 64, 127, 128], [900, 1100, 150, 1000])
    _scale(ax, "x", [8, 64, 127, 128], "steps", ticks=[8, 64, 127, 128])  # 16x: log
    _scale(ax, "y", [900, 1100, 1000], "gen PPL")  # less than a decade: linear
    fig.canvas.draw()
    assert list(ax.get_xticks()) == [8, 64, 128] and ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["8", "64", "128"]  # plain numbers, no 10^x, no 127 on top of 128
    assert all(not t.get_text() for t in ax.get_xticklabels(minor=True))
    plt.close(fig)
