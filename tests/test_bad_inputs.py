"""A catalogue of bad inputs, part 1: recipes, data files, tokenizers and fine-tuning starts given
to ``textdiff train``. Every one is exactly one ``error:`` line on stderr with exit status 2 and no
traceback, and leaves no run folder behind (most are refused while the recipe is validated, before
any work; data and tokenizer errors come during set-up, after which the folder is removed again).

Part 2 (tests/test_bad_inputs_models.py): prompt files, generate/score arguments, saved model
folders, checkpoints and the Python API. The lock, the checkpoint fallback and the metrics
truncation are tested in tests/test_run_safety.py. Both parts share one tiny trained run
(``tiny_trained`` in conftest.py, built once per session).
"""
import json
from pathlib import Path

import pytest
from bad_input_checks import assert_one_line_error, leftovers, run_cli

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
def test_bad_recipe_fields_are_one_line_errors_before_any_work(tiny_trained, tmp_path, capsys, overrides):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", tiny_trained.recipe, f"output_dir={out}", *overrides], capsys)
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
def test_bad_data_and_tokenizers_leave_no_run_folder(tiny_trained, tmp_path, capsys, files, overrides):
    d = tmp_path / "data"
    d.mkdir()
    _write(d, files)
    out = tmp_path / "run"
    args = [o.format(d=d) for o in overrides]
    code, stdout, err = run_cli(["train", tiny_trained.recipe, f"output_dir={out}", *args], capsys)
    assert_one_line_error(code, stdout, err)
    assert not out.exists(), leftovers(out)


def test_init_from_of_another_process_is_refused_before_any_work(tiny_trained, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", tiny_trained.recipe, f"output_dir={out}", f"train.init_from={tiny_trained.final}",
                                 "process.name=ar"], capsys)
    assert_one_line_error(code, stdout, err)
    assert "was trained with process 'masked'" in err and not out.exists()


def test_a_second_fresh_run_in_a_used_folder_is_refused_and_the_first_is_untouched(tiny_trained, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_trained.run.iterdir()}
    code, stdout, err = run_cli(["train", tiny_trained.recipe, f"output_dir={tiny_trained.run}"], capsys)
    assert_one_line_error(code, stdout, err)
    assert {p.name: p.stat().st_mtime_ns for p in tiny_trained.run.iterdir()} == before
