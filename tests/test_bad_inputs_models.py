"""A catalogue of bad inputs, part 2: prompt files, ``textdiff generate`` / ``score`` arguments,
damaged model folders and checkpoints, and the Python API (``DiffusionLM.generate`` / ``score`` /
``from_pretrained``, ``textdiff.generation.generate``). CLI mistakes are exactly one ``error:``
line on stderr with exit status 2 and no traceback, and write no output file; API mistakes raise a
``TextDiffError`` with a one-line message. Part 1 is tests/test_bad_inputs.py.
"""
import json
import shutil
from pathlib import Path

import pytest
import torch
from bad_input_checks import assert_one_line_error, leftovers, run_cli
from safetensors.torch import load_file, save_file

from textdiff.errors import TextDiffError

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
def test_bad_prompt_files(tiny_trained, tmp_path, capsys, content, suffix):
    path = tmp_path / f"prompts{suffix}"
    if content == "<dir>":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    output = tmp_path / "samples.txt"
    code, out, err = run_cli(["generate", "--model", tiny_trained.final, "--prompt-file", path, "--output", output], capsys)
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
def test_bad_generate_arguments(tiny_trained, tmp_path, capsys, args):
    output = tmp_path / "samples.txt"
    code, out, err = run_cli(["generate", "--model", tiny_trained.final, "--output", output, *args], capsys)
    assert_one_line_error(code, out, err)
    assert leftovers(tmp_path) == []


def test_bad_output_paths(tiny_trained, tmp_path, capsys):
    for output in (tmp_path / "missing-folder" / "out.txt", tmp_path):
        code, out, err = run_cli(["generate", "--model", tiny_trained.final, "--output", output], capsys)
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
def test_bad_score_arguments(tiny_trained, tmp_path, capsys, args):
    (tmp_path / "empty.txt").write_text("\n\n")
    code, out, err = run_cli(["score", "--model", tiny_trained.final, *[a.format(d=tmp_path) for a in args]], capsys)
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
def test_damaged_model_folders(tiny_trained, tmp_path, capsys, damage):
    folder = tmp_path / "model"
    shutil.copytree(tiny_trained.final, folder)
    damage(folder)
    output = tmp_path / "samples.txt"
    code, out, err = run_cli(["generate", "--model", folder, "--max-new-tokens", "4", "--output", output], capsys)
    assert_one_line_error(code, out, err)
    assert not output.exists()


# ---- LLaDA / Dream folders: the published layout (sharded + index) and their converted folders ----

PUBLISHED = Path(__file__).parent / "fixtures" / "published"
_INDEX = "model.safetensors.index.json"


def _sharded(d: Path) -> None:
    """Make a converted folder's single model.safetensors two shards with an index (the published form)."""
    if (d / _INDEX).is_file():
        return
    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    names = sorted(state)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, str(d / shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in part})
    (d / _INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _index_points(where):
    def apply(d: Path):
        _sharded(d)
        index = json.loads((d / _INDEX).read_text())
        name = sorted(index["weight_map"])[0]
        target = where(d)
        shutil.copy(d / index["weight_map"][name], d.parent / "elsewhere.safetensors")  # a real file, outside
        index["weight_map"][name] = target
        (d / _INDEX).write_text(json.dumps(index))
    return apply


def _misshapen(d: Path) -> None:
    _sharded(d)
    shard = sorted(d.glob("model-*.safetensors"))[0]
    state = load_file(str(shard))
    key = sorted(k for k in state if state[k].dim() == 2)[0]
    state[key] = state[key][:-1]
    save_file(state, str(shard), metadata={"format": "pt"})


def _pickle_only(d: Path) -> None:
    for f in list(d.glob("model*.safetensors*")):
        f.unlink()
    torch.save({"w": torch.zeros(1)}, d / "pytorch_model.bin")


LARGE_FOLDER_CASES = {  # damage, what the one-line error must say
    "missing-shard": (lambda d: (_sharded(d), sorted(d.glob("model-*.safetensors"))[-1].unlink()), "lacks 1 of 2 weight shards"),
    "misshapen-tensor": (_misshapen, "has shape"),
    "index-names-parent-file": (_index_points(lambda d: "../elsewhere.safetensors"), "not a file name inside the folder"),
    "index-names-absolute-file": (_index_points(lambda d: str(d.parent / "elsewhere.safetensors")), "not a file name inside"),
    "index-without-weight_map": (lambda d: (_sharded(d), (d / _INDEX).write_text('{"weight_map": []}')), "no weight_map"),
    "unknown-architecture": (_edit_json("config.json", lambda c: c.update(model_type="mistral", architectures=["MistralForCausalLM"])),
                             "'mistral' model"),
    "pickle-only": (_pickle_only, "only pickle weights"),
}


@pytest.fixture(scope="module")
def converted_large(tmp_path_factory):
    """LLaDA and Dream converted by `textdiff convert` (textdiff_llama / textdiff_qwen2 folders)."""
    from textdiff.lm import DiffusionLM

    root = tmp_path_factory.mktemp("converted")
    for name in ("llada", "dream"):
        DiffusionLM.from_pretrained(PUBLISHED / name, device="cpu").save_pretrained(root / name)
    return root


@pytest.mark.parametrize("layout", ["llada", "dream", "llada-converted", "dream-converted"])
@pytest.mark.parametrize("damage,says", list(LARGE_FOLDER_CASES.values()), ids=list(LARGE_FOLDER_CASES))
def test_damaged_llada_dream_folders(converted_large, tmp_path, capsys, layout, damage, says):
    name, _, converted = layout.partition("-")
    folder = tmp_path / "d" / name
    shutil.copytree(converted_large / name if converted else PUBLISHED / name, folder,
                    ignore=shutil.ignore_patterns("expected.safetensors"))  # test data, not part of the layout
    damage(folder)
    output = tmp_path / "samples.txt"
    code, out, err = run_cli(["generate", "--model", folder, "--max-new-tokens", "4", "--output", output], capsys)
    assert_one_line_error(code, out, err)
    assert says in err and not output.exists()


def test_a_dream_mask_id_outside_the_vocabulary_is_one_line(tmp_path, capsys):
    folder = tmp_path / "dream"
    shutil.copytree(PUBLISHED / "dream", folder, ignore=shutil.ignore_patterns("expected.safetensors"))
    _edit_json("config.json", lambda c: c.update(mask_token_id=10**12))(folder)
    code, out, err = run_cli(["generate", "--model", folder, "--max-new-tokens", "4"], capsys)
    assert_one_line_error(code, out, err)
    assert "mask id 1000000000000" in err


def test_resume_with_every_checkpoint_damaged_is_one_line_and_changes_nothing(tiny_trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_trained.run, run)
    for ckpt in run.glob("checkpoint-*"):
        _truncate("model.safetensors")(ckpt)
    before = (run / "metrics.jsonl").read_bytes()
    code, out, err = run_cli(["train", tiny_trained.recipe, f"output_dir={run}", "train.max_steps=6", "--resume"], capsys)
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
    "prompts-token-str": dict(prompts=[[5, "x"]]),
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
def test_bad_generate_api_arguments(tiny_trained, kwargs):
    kwargs = {"prompts": ["the"], "max_new_tokens": 4, **kwargs}
    with pytest.raises(TextDiffError) as e:
        tiny_trained.lm.generate(kwargs.pop("prompts"), **kwargs)
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
def test_bad_score_api_arguments(tiny_trained, kwargs):
    kwargs = {"texts": ["hello"], **kwargs}
    with pytest.raises(TextDiffError) as e:
        tiny_trained.lm.score(kwargs.pop("texts"), **kwargs)
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
def test_bad_low_level_generate_arguments(tiny_trained, kwargs):
    from textdiff.generation import generate

    kwargs = {"prompts": [[1, 2]], "max_new_tokens": 4, "steps": 4, "sampler": "ancestral", **kwargs}
    with pytest.raises(TextDiffError) as e:
        generate(tiny_trained.lm.model, tiny_trained.lm.process, kwargs.pop("sampler"), kwargs.pop("prompts"), **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs", [dict(path="/no/such/model/folder"), dict(device="cuda:9"), dict(device="banana"),
                                    dict(device=3)], ids=["missing-folder", "absent-device", "not-a-device", "device=int"])
def test_bad_from_pretrained_arguments(tiny_trained, kwargs):
    from textdiff.lm import DiffusionLM

    kwargs = {"path": tiny_trained.final, **kwargs}
    with pytest.raises(TextDiffError) as e:
        DiffusionLM.from_pretrained(kwargs.pop("path"), **kwargs)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# No folder can make textdiff run code (the caller's trust_remote_code only)
# ---------------------------------------------------------------------------------------------

EVIL = '''
import pathlib
pathlib.Path({sentinel!r}).write_text("the folder's code ran")
from transformers import PretrainedConfig, PreTrainedModel


class EvilConfig(PretrainedConfig):
    model_type = "evil"


class EvilModel(PreTrainedModel):
    config_class = EvilConfig
'''


def _code_shipping_folder(tiny_trained, folder: Path, sentinel: Path) -> Path:
    """An external-denoiser folder whose marker file asks for trust_remote_code and whose config
    maps the Auto classes to a Python file beside it that writes ``sentinel`` when imported."""
    shutil.copytree(tiny_trained.final, folder)
    (folder / "evil.py").write_text(EVIL.format(sentinel=str(sentinel)))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel", "AutoModelForMaskedLM": "evil.EvilModel"}}))
    (folder / "textdiff_denoiser.json").write_text(json.dumps({
        "kind": "masked_lm", "trust_remote_code": True, "vocab_size": 300, "mask_token_id": 3}))
    return folder


def test_a_folder_cannot_switch_on_remote_code(tiny_trained, tmp_path, capsys):
    from textdiff.lm import DiffusionLM

    sentinel = tmp_path / "ran.txt"
    folder = _code_shipping_folder(tiny_trained, tmp_path / "evil", sentinel)
    code, out, err = run_cli(["generate", "--model", folder, "--max-new-tokens", "4"], capsys)
    assert_one_line_error(code, out, err)
    assert "run the custom code?" not in out + err  # not even a question on the terminal
    with pytest.raises(TextDiffError) as e:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(e.value) and "run the custom code?" not in "".join(capsys.readouterr())
    run = tmp_path / "run"
    code, out, err = run_cli(["train", tiny_trained.recipe, f"output_dir={run}", f"train.init_from={folder}"], capsys)
    assert_one_line_error(code, out, err)
    assert "run the custom code?" not in out + err and not run.exists()
    assert not sentinel.exists(), "a file in the folder decided to run its code"
    # the caller may allow it, and then the same folder's code does run: the refusal above was real
    try:
        DiffusionLM.from_pretrained(folder, device="cpu", trust_remote_code=True)
    except Exception:  # noqa: BLE001 - the toy classes cannot serve as a denoiser; only the import matters
        pass
    assert sentinel.exists()


def test_eval_never_imports_code_from_the_working_directory(tmp_path, capsys, monkeypatch):
    """``textdiff eval`` runs the installed harness only: an ``evaluation/run.py`` in the working
    directory (as a downloaded repository could ship) is not imported, whatever the suite name."""
    sentinel = tmp_path / "ran.txt"
    (tmp_path / "evaluation").mkdir()
    for name in ("__init__.py", "run.py", "__main__.py"):
        (tmp_path / "evaluation" / name).write_text(f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('ran')\n")
    monkeypatch.chdir(tmp_path)
    for suite in ("no-such-suite.yaml", "evaluation/run.py"):
        code, out, err = run_cli(["eval", suite], capsys)
        assert_one_line_error(code, out, err)
    assert not sentinel.exists()
