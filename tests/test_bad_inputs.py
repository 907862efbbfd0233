"""A catalogue of bad inputs: every one is a one-line error (CLI: exit status 2, one ``error:`` line
on stderr, no traceback; API: a ``TextDiffError`` with a one-line message) and leaves nothing behind
(no run folder, no output file). One tiny model is trained once for the whole module.

Areas: recipes (field ranges, types, cross-section rules), data files, tokenizers, prompt files,
CLI arguments, saved model folders, resumable checkpoints and Python API arguments. The lock, the
checkpoint fallback and the metrics truncation have their own tests in tests/test_run_safety.py.
"""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import tiny_recipe
from safetensors.torch import load_file, save_file

from textdiff.cli import main
from textdiff.config import load_recipe
from textdiff.errors import TextDiffError
from textdiff.training.loop import train


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """A tiny trained run (4 steps, checkpoints 2 and 4, final/) and its recipe file."""
    base = tmp_path_factory.mktemp("bad_inputs")
    raw = tiny_recipe(base, train={"max_steps": 4, "eval_every": 2, "save_every": 2, "log_every": 2})
    final = train(load_recipe(raw=raw))
    recipe_file = base / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump({**raw, "output_dir": str(base / "unused")}))
    from textdiff.lm import DiffusionLM

    return SimpleNamespace(base=base, run=base / "run", final=final, raw=raw, recipe=recipe_file,
                           lm=DiffusionLM.from_pretrained(final, device="cpu"))


def run_cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    got = capsys.readouterr()
    return code, got.out, got.err


def assert_one_line_error(code, out, err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in out + err, err
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# Recipes: `textdiff train tiny.yaml KEY=VALUE ...` refused while validating, before any folder exists
# ---------------------------------------------------------------------------------------------

RECIPE_CASES = {
    # model
    "model.num_heads=0": ["model.num_heads=0"],
    "model.num_heads<0": ["model.num_heads=-2"],
    "model.hidden_size=0": ["model.hidden_size=0"],
    "heads-do-not-divide": ["model.hidden_size=33"],
    "odd-head-size": ["model.hidden_size=30"],
    "model.num_layers=0": ["model.num_layers=0"],
    "model.dropout=1.5": ["model.dropout=1.5"],
    "model.dropout=1": ["model.dropout=1.0"],
    "model.dropout<0": ["model.dropout=-0.1"],
    "model.mlp_ratio=0": ["model.mlp_ratio=0"],
    "model.mlp_ratio<0": ["model.mlp_ratio=-1"],
    "model.cond_dim=0": ["model.cond_dim=0"],
    "model.rope_theta=0": ["model.rope_theta=0"],
    "model.max_seq_len=0": ["model.max_seq_len=0"],
    "seq_len-above-max_seq_len": ["model.max_seq_len=16"],
    "block_size-without-block-attention": ["model.block_size=4"],
    "block-attention-without-size": ["model.attention=block_causal"],
    "block-does-not-divide-seq_len": ["model.attention=block_causal", "model.block_size=5"],
    "model.attention-unknown": ["model.attention=sideways"],
    "model.hidden_size-float": ["model.hidden_size=1.5"],
    "model.hidden_size-string": ["model.hidden_size=big"],
    "model-unknown-key": ["model.hiden_size=32"],
    # train
    "betas-one": ["train.betas=[0.9]"],
    "betas-three": ["train.betas=[0.9,0.98,0.99]"],
    "betas-not-list": ["train.betas=0.9"],
    "beta=1": ["train.betas=[0.9,1.0]"],
    "beta<0": ["train.betas=[-0.1,0.9]"],
    "eval_t_samples=0": ["train.eval_t_samples=0"],
    "min_lr_ratio<0": ["train.min_lr_ratio=-2"],
    "min_lr_ratio>1": ["train.min_lr_ratio=1.5"],
    "lr=0": ["train.lr=0"],
    "lr<0": ["train.lr=-1e-3"],
    "lr=nan": ["train.lr=.nan"],
    "lr=inf": ["train.lr=.inf"],
    "lr-string": ["train.lr=fast"],
    "max_steps=0": ["train.max_steps=0"],
    "max_steps-float": ["train.max_steps=1.5"],
    "batch_size=0": ["train.batch_size=0"],
    "grad_accum=0": ["train.grad_accum=0"],
    "warmup_steps<0": ["train.warmup_steps=-1"],
    "eval_every=0": ["train.eval_every=0"],
    "save_every=0": ["train.save_every=0"],
    "log_every=0": ["train.log_every=0"],
    "eval_batches<0": ["train.eval_batches=-1"],
    "keep_checkpoints<0": ["train.keep_checkpoints=-1"],
    "ema=1": ["train.ema=1.0"],
    "ema<0": ["train.ema=-0.5"],
    "grad_clip<0": ["train.grad_clip=-1"],
    "weight_decay<0": ["train.weight_decay=-0.1"],
    "decay_fraction>1": ["train.decay_fraction=2"],
    "max_minutes=0": ["train.max_minutes=0"],
    "seed<0": ["train.seed=-1"],
    "num_threads=0": ["train.num_threads=0"],
    "cond_dropout-without-sft": ["train.cond_dropout=0.5"],
    "cond_dropout=1": ["train.cond_dropout=1.0", "sft.source=synthetic"],
    "tracker-unknown": ["train.trackers=[nonsense]"],
    "mixed_precision-unknown": ["train.mixed_precision=fp8"],
    "lr_schedule-unknown": ["train.lr_schedule=linear"],
    "train-unknown-key": ["train.learning_rate=1e-3"],
    # data
    "seq_len=1": ["data.seq_len=1"],
    "val_fraction=1": ["data.val_fraction=1.0"],
    "val_fraction<0": ["data.val_fraction=-0.1"],
    "max_documents=0": ["data.max_documents=0"],
    "num_proc=0": ["data.num_proc=0"],
    "layout-unknown": ["data.layout=spiral"],
    "shuffle_seed<0": ["data.shuffle_seed=-1"],
    "text_field-blank": ["data.text_field='  '"],
    "data.source-missing-value": ["data.source="],
    # tokenizer
    "vocab_size-tiny": ["tokenizer.vocab_size=10"],
    "min_frequency=0": ["tokenizer.min_frequency=0"],
    "tokenizer.train-unknown": ["tokenizer.train=wordpiece"],
    "tokenizer-path-and-train": ["tokenizer.path=/some/folder"],
    # process / schedule / sampler
    "process-unknown": ["process.name=nonexistent"],
    "sampler-unknown": ["sampler.name=nonexistent"],
    "schedule-unknown": ["process.schedule.name=bogus"],
    "schedule-eps>1": ["process.schedule.name=cosine", "process.schedule.eps=1.5"],
    "sampler-cannot-serve-sedd": ["process.name=sedd_uniform"],
    "first_hitting-on-uniform": ["process.name=uniform", "sampler.name=first_hitting"],
    "euler-on-masked": ["sampler.name=euler"],
    "confidence-on-ar": ["process.name=ar", "sampler.name=confidence"],
    "block-size-does-not-divide": ["process.name=block", "process.block_size=5"],
    "block-size=0": ["process.name=block", "process.block_size=0"],
    "ar-with-block-attention": ["process.name=ar", "model.attention=block_causal", "model.block_size=4"],
    "block-with-causal-attention": ["process.name=block", "model.attention=causal"],
    "block-sizes-differ": ["process.name=block", "process.block_size=4", "model.attention=block_causal", "model.block_size=8"],
    "sampler.temperature<0": ["sampler.temperature=-1"],
    "sampler.top_p=0": ["sampler.top_p=0"],
    "sampler.top_k=0": ["sampler.top_k=0"],
    "time_conditioning-not-bool": ["process.time_conditioning=maybe"],
    # sft / lora / denoiser
    "sft.val_fraction=1": ["sft.val_fraction=1.0"],
    "sft.tasks-unknown": ["sft.tasks=[fly]"],
    "sft.tasks-empty": ["sft.tasks=[]"],
    "sft.num_examples=0": ["sft.num_examples=0"],
    "sft.pad_eos_weight>1": ["sft.pad_eos_weight=2"],
    "sft.eos_policy-unknown": ["sft.eos_policy=never"],
    "lora.r=0": ["lora.r=0"],
    "lora.alpha=0": ["lora.alpha=0"],
    "lora.dropout=1": ["lora.dropout=1.0"],
    "lora.target_modules-empty": ["lora.target_modules=[]"],
    "denoiser.path-empty": ["denoiser.kind=masked_lm"],
    "denoiser-and-init_from": ["denoiser.path=/x", "train.init_from=/y"],
    # the recipe as a whole
    "name-blank": ["name='  '"],
    "override-without-equals": ["train.lr"],
    "override-into-a-value": ["name.x=1"],
    "unknown-section": ["optimizer.lr=1"],
}


@pytest.mark.parametrize("overrides", list(RECIPE_CASES.values()), ids=list(RECIPE_CASES))
def test_bad_recipe_fields_are_one_line_errors_before_any_work(ctx, tmp_path, capsys, overrides):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", ctx.recipe, f"output_dir={out}", *overrides], capsys)
    assert_one_line_error(code, stdout, err)
    assert not out.exists()


RECIPE_FILES = {
    "missing": None,
    "not-yaml": "model: [unclosed\n",
    "top-level-list": "- a\n- b\n",
    "section-not-mapping": "model: 3\n",
}


@pytest.mark.parametrize("text", list(RECIPE_FILES.values()), ids=list(RECIPE_FILES))
def test_bad_recipe_files(tmp_path, capsys, text):
    path = tmp_path / "recipe.yaml"
    if text is not None:
        path.write_text(text)
    code, out, err = run_cli(["train", path, f"output_dir={tmp_path / 'run'}"], capsys)
    assert_one_line_error(code, out, err)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Data and tokenizers: refused after the run started setting up, and the folder is removed again
# ---------------------------------------------------------------------------------------------


def _write(folder: Path, files: dict) -> None:
    for name, text in files.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text) if isinstance(text, bytes) else p.write_text(text)


ROWS = "\n".join(json.dumps({"text": f"document number {i} has some words in it."}) for i in range(6))
DATA_CASES = {  # files under data/, overrides ({d} is that folder)
    "source-missing": ({}, ["data.source={d}/nothing.txt"]),
    "empty-txt": ({"a.txt": ""}, ["data.source={d}/a.txt"]),
    "blank-txt": ({"a.txt": "\n\n   \n"}, ["data.source={d}/a.txt"]),
    "jsonl-no-text-field": ({"a.jsonl": '{"body": "x"}\n{"body": "y"}\n'}, ["data.source={d}/a.jsonl"]),
    "jsonl-text-numbers": ({"a.jsonl": '{"text": 1}\n{"text": 2}\n'}, ["data.source={d}/a.jsonl"]),
    "jsonl-broken-line": ({"a.jsonl": ROWS + "\n{broken\n"}, ["data.source={d}/a.jsonl"]),
    "jsonl-text_field-wrong": ({"a.jsonl": ROWS}, ["data.source={d}/a.jsonl", "data.text_field=body"]),
    "folder-without-data": ({"sub/readme.bin": "x"}, ["data.source={d}/sub"]),
    "folder-mixed-types": ({"m/a.txt": "some text here", "m/b.jsonl": ROWS}, ["data.source={d}/m"]),
    "shorter-than-one-row": ({"a.txt": "tiny\n\nalso tiny\n"}, ["data.source={d}/a.txt", "data.seq_len=512", "model.max_seq_len=512"]),
    "single-document": ({"a.txt": "only one paragraph of text in this corpus"}, ["data.source={d}/a.txt"]),
    "val_source-missing": ({}, ["data.val_source={d}/val.txt"]),
    "not-utf8-jsonl": ({"a.jsonl": b'{"text": "\xff\xfe bad"}\n'}, ["data.source={d}/a.jsonl"]),
    "sft-source-missing": ({}, ["sft.source={d}/sft.jsonl"]),
    "sft-bad-json": ({"s.jsonl": '{"prompt": "a", "response": "b"}\n{nope\n'}, ["sft.source={d}/s.jsonl"]),
    "sft-row-not-object": ({"s.jsonl": '[1, 2]\n'}, ["sft.source={d}/s.jsonl"]),
    "sft-no-response": ({"s.jsonl": '{"prompt": "a"}\n{"prompt": "b"}\n'}, ["sft.source={d}/s.jsonl", "sft.val_fraction=0"]),
    "sft-bad-messages": ({"s.jsonl": '{"messages": "hi"}\n{"messages": "ho"}\n'}, ["sft.source={d}/s.jsonl", "sft.val_fraction=0"]),
    "sft-empty": ({"s.jsonl": "\n"}, ["sft.source={d}/s.jsonl"]),
    "tokenizer-path-missing": ({}, ["tokenizer.path={d}/tok", "tokenizer.train=null"]),
    "tokenizer-folder-empty": ({"tok/.keep": ""}, ["tokenizer.path={d}/tok", "tokenizer.train=null"]),
    "tokenizer-json-damaged": ({"tok/tokenizer.json": "{\"version\": ", "tok/tokenizer_config.json": "{}"},
                               ["tokenizer.path={d}/tok", "tokenizer.train=null"]),
    "init_from-missing": ({}, ["train.init_from={d}/no-model"]),
    "init_from-not-a-model": ({"m/notes.txt": "x"}, ["train.init_from={d}/m"]),
    "output_dir-is-a-file": ({"taken": "x"}, ["output_dir={d}/taken"]),
}


@pytest.mark.parametrize("files,overrides", list(DATA_CASES.values()), ids=list(DATA_CASES))
def test_bad_data_and_tokenizers_leave_no_run_folder(ctx, tmp_path, capsys, files, overrides):
    d = tmp_path / "data"
    d.mkdir()
    _write(d, files)
    out = tmp_path / "run"
    args = [o.format(d=d) for o in overrides]
    code, stdout, err = run_cli(["train", ctx.recipe, f"output_dir={out}", *args], capsys)
    assert_one_line_error(code, stdout, err)
    assert not out.exists(), leftovers(out)


def test_init_from_of_another_process_is_refused_before_any_work(ctx, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", ctx.recipe, f"output_dir={out}", f"train.init_from={ctx.final}",
                                 "process.name=ar"], capsys)
    assert_one_line_error(code, stdout, err)
    assert "was trained with process 'masked'" in err and not out.exists()


def test_a_second_fresh_run_in_a_used_folder_is_refused_and_the_first_is_untouched(ctx, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in ctx.run.iterdir()}
    code, stdout, err = run_cli(["train", ctx.recipe, f"output_dir={ctx.run}"], capsys)
    assert_one_line_error(code, stdout, err)
    assert {p.name: p.stat().st_mtime_ns for p in ctx.run.iterdir()} == before


# ---------------------------------------------------------------------------------------------
# `textdiff generate` / `textdiff score`: prompt files, arguments, outputs
# ---------------------------------------------------------------------------------------------

PROMPT_FILES = {
    "missing": (None, ".txt"),
    "folder": ("<dir>", ".txt"),
    "empty-txt": ("", ".txt"),
    "blank-txt": ("\n  \n", ".txt"),
    "empty-jsonl": ("", ".jsonl"),
    "jsonl-bad-line": ('{"prompt": "a"}\n{"prompt": \n', ".jsonl"),
    "jsonl-no-prompt": ('{"text": "a"}\n', ".jsonl"),
    "jsonl-prompt-number": ('{"prompt": 5}\n', ".jsonl"),
    "jsonl-row-list": ('["a"]\n', ".jsonl"),
    "not-utf8": (b"\xff\xfe\x00bad", ".txt"),
}


@pytest.mark.parametrize("content,suffix", list(PROMPT_FILES.values()), ids=list(PROMPT_FILES))
def test_bad_prompt_files(ctx, tmp_path, capsys, content, suffix):
    path = tmp_path / f"prompts{suffix}"
    if content == "<dir>":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    output = tmp_path / "samples.txt"
    code, out, err = run_cli(["generate", "--model", ctx.final, "--prompt-file", path, "--output", output], capsys)
    assert_one_line_error(code, out, err)
    assert not output.exists() and leftovers(tmp_path) == [path.name] * path.exists()
    if content == '{"prompt": "a"}\n{"prompt": \n':
        assert f"{path}:2:" in err  # the line number of the bad line


GENERATE_CASES = {
    "max-new-tokens=0": ["--max-new-tokens", "0"],
    "max-new-tokens<0": ["--max-new-tokens", "-3"],
    "max-new-tokens-not-int": ["--max-new-tokens", "x"],
    "max-new-tokens-above-context": ["--max-new-tokens", "500"],
    "steps=0": ["--steps", "0"],
    "steps<0": ["--steps", "-1"],
    "num-samples=0": ["--num-samples", "0"],
    "temperature<0": ["--temperature", "-1"],
    "top-p=0": ["--top-p", "0"],
    "top-p>1": ["--top-p", "1.5"],
    "top-k=0": ["--top-k", "0"],
    "block-size=0": ["--block-size", "0"],
    "sampler-unknown": ["--sampler", "nonexistent"],
    "sampler-incompatible": ["--sampler", "euler"],
    "sampler-option-no-equals": ["--sampler-option", "junk"],
    "sampler-option-unknown-field": ["--sampler-option", "nosuchfield=1"],
    "guidance-uncond-unknown": ["--guidance-uncond", "x"],
    "cache-unknown": ["--cache", "bogus"],
    "format-unknown": ["--format", "xml"],
    "device-not-a-device": ["--device", "banana"],
    "device-absent": ["--device", "cuda:7"],
    "unknown-flag": ["--frobnicate"],
    "prompt-longer-than-context": ["--prompt", "word " * 200],
}


@pytest.mark.parametrize("args", list(GENERATE_CASES.values()), ids=list(GENERATE_CASES))
def test_bad_generate_arguments(ctx, tmp_path, capsys, args):
    output = tmp_path / "samples.txt"
    code, out, err = run_cli(["generate", "--model", ctx.final, "--output", output, *args], capsys)
    assert_one_line_error(code, out, err)
    assert leftovers(tmp_path) == []


def test_bad_output_paths(ctx, tmp_path, capsys):
    for output in (tmp_path / "missing-folder" / "out.txt", tmp_path):
        code, out, err = run_cli(["generate", "--model", ctx.final, "--output", output], capsys)
        assert_one_line_error(code, out, err)
    assert leftovers(tmp_path) == []


SCORE_CASES = {
    "no-text-no-file": [],
    "file-missing": ["--file", "{d}/none.txt"],
    "file-empty": ["--file", "{d}/empty.txt"],
    "file-is-folder": ["--file", "{d}"],
    "t-samples=0": ["--text", "hello", "--t-samples", "0"],
    "text-longer-than-context": ["--text", "word " * 200],
    "seed-not-int": ["--text", "hi", "--seed", "a"],
}


@pytest.mark.parametrize("args", list(SCORE_CASES.values()), ids=list(SCORE_CASES))
def test_bad_score_arguments(ctx, tmp_path, capsys, args):
    (tmp_path / "empty.txt").write_text("\n\n")
    code, out, err = run_cli(["score", "--model", ctx.final, *[a.format(d=tmp_path) for a in args]], capsys)
    assert_one_line_error(code, out, err)


def test_bad_commands(capsys):
    for argv in (["frobnicate"], [], ["train"], ["generate"], ["score", "--text", "x"]):
        code, out, err = run_cli(argv, capsys)
        assert_one_line_error(code, out, err)


# ---------------------------------------------------------------------------------------------
# Saved model folders: `textdiff generate --model DIR` on damaged copies
# ---------------------------------------------------------------------------------------------


def _drop_tensor(d: Path):
    state = load_file(str(d / "model.safetensors"))
    state.pop(sorted(state)[0])
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})


def _edit_json(name, edit):
    def apply(d: Path):
        data = json.loads((d / name).read_text())
        edit(data)
        (d / name).write_text(json.dumps(data))
    return apply


def _truncate(name, keep=0.5):
    def apply(d: Path):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: int(len(data) * keep)])
    return apply


FOLDER_CASES = {
    "missing": lambda d: shutil.rmtree(d),
    "a-file": lambda d: (shutil.rmtree(d), d.write_text("x")),
    "empty-folder": lambda d: (shutil.rmtree(d), d.mkdir()),
    "no-weights": lambda d: (d / "model.safetensors").unlink(),
    "no-config": lambda d: (d / "config.json").unlink(),
    "no-textdiff.json": lambda d: (d / "textdiff.json").unlink(),
    "no-tokenizer": lambda d: [(d / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
    "truncated-weights": _truncate("model.safetensors"),
    "weights-header-only": _truncate("model.safetensors", keep=0.02),
    "tensor-deleted": _drop_tensor,
    "config-shapes-edited": _edit_json("config.json", lambda c: c.update(hidden_size=64)),
    "config-vocab-edited": _edit_json("config.json", lambda c: c.update(vocab_size=999)),
    "config-truncated": _truncate("config.json"),
    "config-other-architecture": _edit_json("config.json", lambda c: c.update(model_type="bert")),
    "textdiff.json-truncated": _truncate("textdiff.json"),
    "textdiff.json-list": lambda d: (d / "textdiff.json").write_text("[]"),
    "textdiff.json-unknown-process": _edit_json("textdiff.json", lambda m: m["process"].update(name="nonexistent")),
    "textdiff.json-unknown-sampler": _edit_json("textdiff.json", lambda m: m.update(sampler={"name": "nonexistent"})),
    "textdiff.json-bad-seq_len": _edit_json("textdiff.json", lambda m: m.update(seq_len="long")),
}


@pytest.mark.parametrize("damage", list(FOLDER_CASES.values()), ids=list(FOLDER_CASES))
def test_damaged_model_folders(ctx, tmp_path, capsys, damage):
    folder = tmp_path / "model"
    shutil.copytree(ctx.final, folder)
    damage(folder)
    output = tmp_path / "samples.txt"
    code, out, err = run_cli(["generate", "--model", folder, "--max-new-tokens", "4", "--output", output], capsys)
    assert_one_line_error(code, out, err)
    assert not output.exists()


def test_resume_with_every_checkpoint_damaged_is_one_line_and_changes_nothing(ctx, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(ctx.run, run)
    for ckpt in run.glob("checkpoint-*"):
        _truncate("model.safetensors")(ckpt)
    before = (run / "metrics.jsonl").read_bytes()
    code, out, err = run_cli(["train", ctx.recipe, f"output_dir={run}", "train.max_steps=6", "--resume"], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err
    assert lines[-1].startswith("error: no intact checkpoint") and "checkpoint-4" in lines[-1]
    assert all(ln.startswith("warning: checkpoint-") for ln in lines[:-1])  # one warning per damaged checkpoint
    assert (run / "metrics.jsonl").read_bytes() == before and not (run / ".lock").exists()


# ---------------------------------------------------------------------------------------------
# Python API: DiffusionLM.generate / score, textdiff.generation.generate, from_pretrained
# ---------------------------------------------------------------------------------------------

LM_GENERATE_CASES = {
    "prompts=None": dict(prompts=None),
    "prompts=int": dict(prompts=123),
    "prompts=[]": dict(prompts=[]),
    "prompts=[ints]": dict(prompts=[1, 2]),
    "prompts=[None]": dict(prompts=[None]),
    "max_new_tokens=str": dict(max_new_tokens="8"),
    "max_new_tokens=0": dict(max_new_tokens=0),
    "max_new_tokens<0": dict(max_new_tokens=-1),
    "max_new_tokens=float": dict(max_new_tokens=1.5),
    "max_new_tokens=bool": dict(max_new_tokens=True),
    "steps=0": dict(steps=0),
    "steps=str": dict(steps="4"),
    "seed=str": dict(seed="a"),
    "seed=float": dict(seed=1.5),
    "seeds-wrong-count": dict(seed=[1, 2]),
    "temperature<0": dict(temperature=-1.0),
    "temperature=str": dict(temperature="hot"),
    "top_k=0": dict(top_k=0),
    "top_p=0": dict(top_p=0.0),
    "top_p>1": dict(top_p=2.0),
    "block_size=0": dict(block_size=0),
    "guidance_uncond-unknown": dict(guidance_uncond="x"),
    "guidance_weight=str": dict(guidance_weight="strong"),
    "sampler-unknown": dict(sampler="nope"),
    "sampler=int": dict(sampler=42),
    "sampler_options=str": dict(sampler_options="threshold"),
    "sampler_options-unknown-field": dict(sampler_options={"nosuchfield": 1}),
    "return_output=str": dict(return_output="yes"),
    "too-long-for-context": dict(max_new_tokens=100),
}


@pytest.mark.parametrize("kwargs", list(LM_GENERATE_CASES.values()), ids=list(LM_GENERATE_CASES))
def test_bad_generate_api_arguments(ctx, kwargs):
    kwargs = {"prompts": ["the"], "max_new_tokens": 4, **kwargs}
    with pytest.raises(TextDiffError) as e:
        ctx.lm.generate(kwargs.pop("prompts"), **kwargs)
    assert "\n" not in str(e.value) and str(e.value)


SCORE_API_CASES = {
    "texts=[int]": dict(texts=[123]),
    "texts=None": dict(texts=None),
    "texts=[]": dict(texts=[]),
    "t_samples=0": dict(t_samples=0),
    "t_samples=str": dict(t_samples="4"),
    "seed=str": dict(seed="a"),
    "text-too-long": dict(texts=["word " * 200]),
}


@pytest.mark.parametrize("kwargs", list(SCORE_API_CASES.values()), ids=list(SCORE_API_CASES))
def test_bad_score_api_arguments(ctx, kwargs):
    kwargs = {"texts": ["hello"], **kwargs}
    with pytest.raises(TextDiffError) as e:
        ctx.lm.score(kwargs.pop("texts"), **kwargs)
    assert "\n" not in str(e.value)


LOW_LEVEL_CASES = {
    "prompts=str": dict(prompts="abc"),
    "prompts-token-str": dict(prompts=[[1, "a"]]),
    "prompts-token-float": dict(prompts=[[1.5]]),
    "prompts-out-of-vocab": dict(prompts=[[10 ** 6]]),
    "steps=0": dict(steps=0),
    "max_new_tokens=str": dict(max_new_tokens="8"),
    "seed=str": dict(seed="a"),
    "callback=int": dict(callback=5),
    "use_cache=int": dict(use_cache=3),
    "use_cache-unknown": dict(use_cache="bogus"),
    "batch_size=0": dict(prompts=None, batch_size=0),
    "generators-wrong-count": dict(generator=[torch.Generator()] * 3),
    "sampler-incompatible": dict(sampler="euler"),
}


@pytest.mark.parametrize("kwargs", list(LOW_LEVEL_CASES.values()), ids=list(LOW_LEVEL_CASES))
def test_bad_low_level_generate_arguments(ctx, kwargs):
    from textdiff.generation import generate

    kwargs = {"prompts": [[1, 2]], "max_new_tokens": 4, "steps": 4, "sampler": "ancestral", **kwargs}
    with pytest.raises(TextDiffError) as e:
        generate(ctx.lm.model, ctx.lm.process, kwargs.pop("sampler"), kwargs.pop("prompts"), **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs", [dict(path="/no/such/model/folder"), dict(device="cuda:9"), dict(device="banana"),
                                    dict(device=3)], ids=["missing-folder", "absent-device", "not-a-device", "device=int"])
def test_bad_from_pretrained_arguments(ctx, kwargs):
    from textdiff.lm import DiffusionLM

    kwargs = {"path": ctx.final, **kwargs}
    with pytest.raises(TextDiffError) as e:
        DiffusionLM.from_pretrained(kwargs.pop("path"), **kwargs)
    assert "\n" not in str(e.value)
