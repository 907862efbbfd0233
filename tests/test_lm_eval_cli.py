"""lm-evaluation-harness through its own CLI (``textdiff lm-eval`` passes every argument to lm-eval),
on local task YAMLs over tiny JSON files: the numbers lm-eval logs are the adapter's (exact for an
AR model: equal to textdiff's conditional NLL), on CPU without ``--device``, offline; the adapter's
scores do not depend on batch_size; one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'textdiff[lmeval]')")

from textdiff.config import ModelConfig, resolve_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the cat sat on the mat .", "a dog ran in the park .", "the sun is warm today .", "we read a book ."] * 6
CHOICES = [
    {"context": "the cat sat on the", "choices": [" mat", " park", " book"], "label": 0},
    {"context": "a dog ran in the", "choices": [" park", " mat", " sun"], "label": 0},
    {"context": "we read a", "choices": [" dog", " book", " cat"], "label": 1},
    {"context": "the sun is", "choices": [" warm", " a", " ran"], "label": 0},
]


def _save(root: Path, name: str) -> Path:
    from textdiff.lm import DiffusionLM
    from textdiff.models import TextDiffModel
    from textdiff.models.build import denoiser_config
    from textdiff import build_process
    from textdiff.tokenization import ensure_special_tokens, train_bpe, wrap_fast

    tok = wrap_fast(train_bpe(TEXTS, 280, 1))
    ensure_special_tokens(tok)
    process = build_process(name, vocab_size=len(tok), mask_id=tok.mask_token_id)
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, cond_dim=16)
    model = TextDiffModel(denoiser_config(cfg, len(tok), process, 32, tok.mask_token_id)).eval()
    DiffusionLM(model, tok, process, resolve_section("sampler", "ancestral", "sampler"), seq_len=32).save_pretrained(root / name)
    return root / name


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmeval")
    data = root / "data"
    data.mkdir()
    (data / "choice.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CHOICES))
    (data / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:3]))
    (data / "gen.jsonl").write_text("".join(json.dumps({"context": d["context"], "answer": d["choices"][d["label"]]}) + "\n"
                                            for d in CHOICES))
    tasks = root / "tasks"
    tasks.mkdir()
    common = "dataset_path: json\ntest_split: test\n"
    (tasks / "tiny_choice.yaml").write_text(
        f"task: tiny_choice\n{common}dataset_kwargs:\n  data_files:\n    test: {data / 'choice.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{label}}'\ntarget_delimiter: ''\nmetric_list:\n  - metric: acc\n")
    (tasks / "tiny_rolling.yaml").write_text(
        f"task: tiny_rolling\n{common}dataset_kwargs:\n  data_files:\n    test: {data / 'text.jsonl'}\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n")
    (tasks / "tiny_gen.yaml").write_text(
        f"task: tiny_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {data / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_text: '{{context}}'\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['.']\n  max_gen_toks: 5\nmetric_list:\n  - metric: exact_match\n")
    return {"root": root, "tasks": tasks, "ar": _save(root, "ar"), "masked": _save(root, "masked")}


def _lm_eval(setup, model_args: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m textdiff.cli lm-eval ...`` from a folder outside the repository (no --device: CPU)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "textdiff.cli", "lm-eval", "--model", "textdiff", "--model_args", model_args,
           "--tasks", "tiny_choice,tiny_rolling,tiny_gen", "--include_path", str(setup["tasks"]), "--limit", "4",
           "--batch_size", "3", "--output_path", str(out), "--log_samples", *extra]
    return subprocess.run(cmd, cwd=setup["root"], env=env, capture_output=True, text=True, timeout=600)


def _samples(out: Path, task: str) -> list[dict]:
    [path] = list(out.rglob(f"samples_{task}_*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # lm-eval's CLI indexes its ~10k built-in task files first (~30 s)
def test_lm_eval_cli_runs_the_three_request_types_and_logs_the_adapters_numbers(setup):
    from textdiff.eval.conditional import conditional_nll
    from textdiff.lm import DiffusionLM

    out = setup["root"] / "out-ar"
    res = _lm_eval(setup, f"pretrained={setup['ar']}", out)
    assert res.returncode == 0, res.stderr[-3000:]
    [results] = list(out.rglob("results_*.json"))
    report = json.loads(results.read_text())["results"]
    assert 0.0 <= report["tiny_choice"]["acc,none"] <= 1.0
    assert report["tiny_rolling"]["word_perplexity,none"] > 1.0
    assert 0.0 <= report["tiny_gen"]["exact_match,none"] <= 1.0
    # the log-likelihoods lm-eval recorded are textdiff's exact conditional NLLs (AR: no Monte Carlo)
    lm = DiffusionLM.from_pretrained(setup["ar"], device="cpu")
    enc = lambda s: lm.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    samples = _samples(out, "tiny_choice")
    assert len(samples) == 4
    for s in samples:
        doc = s["doc"]
        for choice, resp in zip(doc["choices"], s["resps"]):
            ll = float(resp[0][0])
            assert ll == pytest.approx(-conditional_nll(lm.model, lm.process, enc(doc["context"]), enc(choice)).nll, abs=1e-4)
    gens = _samples(out, "tiny_gen")
    assert all(isinstance(g["resps"][0][0], str) and "." not in g["resps"][0][0] for g in gens)


def test_masked_model_through_lm_evals_evaluator_with_mc_samples(setup):
    """The same tasks through lm-eval's evaluator in-process (its task index limited to our folder)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import textdiff.eval.lm_eval_adapter  # noqa: F401  (what `textdiff lm-eval` does before lm-eval's CLI)

    tm = TaskManager(include_path=str(setup["tasks"]), include_defaults=False)
    out = lm_eval.simple_evaluate(model="textdiff", model_args=f"pretrained={setup['masked']},mc_samples=4,t_samples=2",
                                  tasks=["tiny_choice", "tiny_rolling", "tiny_gen"], task_manager=tm, limit=4,
                                  batch_size=5, device="cuda:0", log_samples=True)  # cuda:0 falls back to CPU
    assert 0.0 <= out["results"]["tiny_choice"]["acc,none"] <= 1.0
    lls = [float(r[0][0]) for s in out["samples"]["tiny_choice"] for r in s["resps"]]
    assert len(lls) == 12 and all(v < 0 for v in lls)  # −NELBO of a non-empty answer: negative


def test_textdiff_lm_eval_verb_prints_one_line_errors(setup, monkeypatch, capsys):
    import lm_eval.__main__

    from textdiff.cli import main

    seen = {}

    def fake_cli():  # stands in for lm-eval's CLI: build the model the way lm-eval does
        from lm_eval.api.registry import get_model

        seen["argv"] = list(sys.argv)
        args = sys.argv[sys.argv.index("--model_args") + 1]
        get_model(sys.argv[sys.argv.index("--model") + 1]).create_from_arg_string(args, {"device": "cuda:0", "batch_size": 1})

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", fake_cli)
    assert main(["lm-eval", "--model_args", f"pretrained={setup['root'] / 'nope'}", "--tasks", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "does not exist" in err[-1]
    assert seen["argv"][:3] == ["lm_eval", "--model", "textdiff"]  # --model textdiff added when missing
    assert main(["lm-eval", "--model_args", f"pretrained={setup['ar']},colour=red", "--tasks", "x"]) == 2
    assert "unknown textdiff model_args" in capsys.readouterr().err


def test_adapter_scores_do_not_depend_on_batch_size_or_request_order(setup):
    from textdiff.eval.lm_eval_adapter import TextDiffLM, pick_device
    from textdiff.lm import DiffusionLM

    assert pick_device("cuda:0") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    lm = DiffusionLM.from_pretrained(setup["masked"], device="cpu")
    reqs = [SimpleNamespace(args=(d["context"], c)) for d in CHOICES for c in d["choices"]]
    one = TextDiffLM(lm=lm, mc_samples=5, batch_size=1, greedy=True).loglikelihood(reqs)
    many = TextDiffLM(lm=lm, mc_samples=5, batch_size=7, greedy=True).loglikelihood(reqs[::-1])[::-1]
    assert [g for _, g in one] == [g for _, g in many]
    assert [v for v, _ in one] == pytest.approx([v for v, _ in many], abs=1e-5)
    gen = [SimpleNamespace(args=(d["context"], {"until": ["."], "max_gen_toks": 4})) for d in CHOICES]
    assert TextDiffLM(lm=lm, batch_size=1).generate_until(gen) == TextDiffLM(lm=lm, batch_size=4).generate_until(gen)
    rolling = [SimpleNamespace(args=(" ".join(TEXTS[:8]),))]  # longer than one 32-token window
    a = TextDiffLM(lm=lm, t_samples=2, batch_size=1).loglikelihood_rolling(rolling)
    b = TextDiffLM(lm=lm, t_samples=2, batch_size=8).loglikelihood_rolling(rolling)
    assert a == pytest.approx(b, abs=1e-4) and a[0] < 0


def test_adapter_on_a_dream_style_network_shifted_logits_full_attention(setup):
    """A Hugging Face causal LM run with full attention and Dream's shifted logits (issue 12's Dream
    layout, tiny and random): the adapter scores and generates through it, batch-invariant."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from textdiff.config import DenoiserConfig
    from textdiff.eval.conditional import conditional_nll
    from textdiff.eval.lm_eval_adapter import TextDiffLM
    from textdiff.lm import DiffusionLM
    from textdiff.models.external import ExternalDenoiser
    from textdiff import build_process

    tok = DiffusionLM.from_pretrained(setup["masked"], device="cpu").tokenizer
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)).eval()
    net = ExternalDenoiser(hf, DenoiserConfig(path="x", kind="causal", full_attention=True), len(tok), tok.mask_token_id).eval()
    lm = DiffusionLM(net, tok, build_process("masked", vocab_size=len(tok), mask_id=tok.mask_token_id), seq_len=32)
    reqs = [SimpleNamespace(args=(d["context"], c)) for d in CHOICES[:2] for c in d["choices"]]
    a = TextDiffLM(lm=lm, mc_samples=4, batch_size=2).loglikelihood(reqs)
    b = TextDiffLM(lm=lm, mc_samples=4, batch_size=16).loglikelihood(reqs)
    assert [x for x, _ in a] == pytest.approx([x for x, _ in b], abs=1e-5)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    from textdiff.eval.lm_eval_adapter import request_key

    c, x = reqs[0].args
    ref = conditional_nll(net, lm.process, enc(c), enc(x), mc_samples=4, index=request_key(c, x), seq_len=32)
    assert a[0][0] == pytest.approx(-ref.nll, abs=1e-5)  # LLaDA's MC NELBO, as textdiff's own estimator gives it
    gen = [SimpleNamespace(args=(d["context"], {"until": ["."], "max_gen_toks": 4})) for d in CHOICES]
    assert TextDiffLM(lm=lm, batch_size=1).generate_until(gen) == TextDiffLM(lm=lm, batch_size=4).generate_until(gen)


def test_adapter_progress_bar_with_tokens_per_second(setup, capsys, monkeypatch):
    from textdiff.eval.lm_eval_adapter import TextDiffLM
    from textdiff.lm import DiffusionLM

    lm = DiffusionLM.from_pretrained(setup["masked"], device="cpu")
    reqs = [SimpleNamespace(args=(d["context"], d["choices"][0])) for d in CHOICES]
    TextDiffLM(lm=lm, mc_samples=2).loglikelihood(reqs)
    assert "tok/s" not in capsys.readouterr().err  # not a terminal: no bar
    monkeypatch.setenv("TEXTDIFF_PROGRESS", "1")
    TextDiffLM(lm=lm, mc_samples=2).loglikelihood(reqs)
    err = capsys.readouterr().err
    assert "textdiff loglikelihood" in err and "8/8" in err and "tok/s" in err  # 4 scores + 4 greedy decodings
    TextDiffLM(lm=lm, mc_samples=2).loglikelihood(reqs, disable_tqdm=True)
    TextDiffLM(lm=lm, mc_samples=2, progress=False).loglikelihood(reqs)
    assert "tok/s" not in capsys.readouterr().err
