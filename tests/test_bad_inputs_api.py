"""A catalogue of bad inputs, part 3 (issue 22): chat templates, resource bounds, inputs that were
accepted without a word, and the Python API's argument types and keywords. The rule is parts 1 and
2's: a CLI mistake is exit status 2 and one ``error:`` line; an API mistake is a ``TextDiffError`` with
a one-line message; an input that is accepted but reinterpreted prints exactly one ``warning:`` line.
Writers (nothing of the user's deleted) are tests/test_writers.py, plus the two CLI cases at the end.
Everything runs in process on the session's tiny trained run (``tiny_trained``).
"""
import copy
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from bad_input_checks import assert_one_line_error, run_cli

from textdiff.chat_template import ChatTemplateError, Limits, render_chat
from textdiff.errors import ConfigError, IncompatibleError, TextDiffError
from textdiff.lm import DiffusionLM

CHAT = [{"role": "user", "content": "hi"}]


def one_line(e) -> str:
    text = str(e.value if hasattr(e, "value") else e)
    assert "\n" not in text and text.strip(), text
    return text


def warnings_of(err: str) -> list[str]:
    """The lines of stderr, all of which must be warnings (transformers' loading bars aside)."""
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "Loading weights" not in ln]
    assert all(ln.startswith("warning: ") for ln in lines), err
    return lines


@pytest.fixture(scope="module")
def lm(tiny_trained):
    return tiny_trained.lm


def with_template(lm, source: str) -> DiffusionLM:
    """The tiny model with a copy of its tokenizer carrying ``source`` as chat template."""
    tok = copy.deepcopy(lm.tokenizer)
    tok.chat_template = source
    return DiffusionLM(lm.model, tok, lm.process, lm.sampler_config, seq_len=lm.seq_len)


# ---------------------------------------------------------------------------------------------
# Chat templates: bounded in time and size; sandbox violations and template errors are one line
# ---------------------------------------------------------------------------------------------

HOSTILE_TEMPLATES = {
    "nested-loops-1e10": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "repeat-1e9": "{{ 'x' * 1000000000 }}",
    "power-1e9": "{{ 10 ** 1000000000 }}",
    "percent-width-1e9": "{{ '%1000000000s' % 'a' }}",
    "format-width-1e9": "{{ '{:>1000000000}'.format('a') }}",
    "filter-argument-1e9": "{{ 'x'|center(1000000000) }}",
    "method-argument-1e9": "{{ 'x'.ljust(1000000000) }}",
    "doubling-in-a-namespace": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling-with-plus": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "sandbox-dunder": "{{ ''.__class__.__mro__ }}",
    "sandbox-globals": "{{ raise_exception.__globals__.os }}",
    "syntax-error": "{% for %}",
    "raise_exception": "{{ raise_exception('only user and assistant roles are supported') }}",
    "undefined": "{{ nothing.at.all }}",
    "type-error": "{{ 1 + 'a' }}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
}


@pytest.mark.parametrize("source", list(HOSTILE_TEMPLATES.values()), ids=list(HOSTILE_TEMPLATES))
def test_hostile_chat_templates_are_one_line_errors_within_the_time_limit(lm, source):
    start = time.thread_time()  # CPU time: the limit's clock, which a busy machine does not stretch
    with pytest.raises(ChatTemplateError) as e:
        with_template(lm, source).generate([CHAT], max_new_tokens=4, steps=2, seed=0)
    assert time.thread_time() - start < 2.5  # the limit is 1 s; a 1e10-iteration loop would take hours
    assert "chat template of " in one_line(e) and "Traceback" not in str(e.value)


def test_a_looping_template_in_a_model_folder_fails_fast_and_names_its_file(tiny_trained, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_trained.final, folder)
    (folder / "chat_template.jinja").write_text(HOSTILE_TEMPLATES["nested-loops-1e10"])
    lm = DiffusionLM.from_pretrained(folder, device="cpu")
    start = time.thread_time()
    with pytest.raises(ChatTemplateError) as e:
        lm.generate([CHAT], max_new_tokens=4, steps=2)
    assert time.thread_time() - start < 2.5
    assert str(folder / "chat_template.jinja") in one_line(e) and "ran longer than 1 s of CPU time" in str(e.value)


def test_the_limits_are_the_callers_and_a_big_output_stops_at_its_size(lm):
    tok = with_template(lm, "{% for i in range(100000) %}{{ 'abcdefghij' }}{% endfor %}").tokenizer
    assert len(render_chat(tok, CHAT, limits=Limits(seconds=5.0, max_chars=2_000_000))) == 1_000_000
    with pytest.raises(ChatTemplateError, match="more than 500,000 characters"):
        render_chat(tok, CHAT, limits=Limits(seconds=5.0, max_chars=500_000))
    with pytest.raises(ChatTemplateError, match="ran longer than 0.05 s"):
        render_chat(with_template(lm, HOSTILE_TEMPLATES["nested-loops-1e10"]).tokenizer, CHAT, limits=Limits(seconds=0.05))


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_bounded_rendering_is_the_text_transformers_renders(family):
    from textdiff.tokenization import load_tokenizer

    tok = load_tokenizer(str(Path(__file__).parent / "fixtures" / "published" / family))
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3 + 3?", "name": None}]
    for prompt in (True, False):
        assert render_chat(tok, chat, add_generation_prompt=prompt) == \
            tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt)


def test_the_tracer_of_a_debugger_or_coverage_is_put_back(lm):
    import sys

    before = sys.gettrace()
    render_chat(with_template(lm, "{{ messages[0].content }}").tokenizer, CHAT)
    with pytest.raises(ChatTemplateError):
        render_chat(with_template(lm, "{{ 'x' * 1000000000 }}").tokenizer, CHAT)
    assert sys.gettrace() is before


# ---------------------------------------------------------------------------------------------
# Resource bounds: known before any work, one line
# ---------------------------------------------------------------------------------------------


def test_absurd_steps_are_refused_before_any_work(lm, tiny_trained, capsys):
    from textdiff.generation import generate

    start = time.process_time()
    with pytest.raises(ConfigError, match="per position to decode") as e:
        lm.generate("hi", max_new_tokens=4, steps=10**12)
    with pytest.raises(ConfigError, match="per position to decode"):
        generate(lm.model, lm.process, "ancestral", [[5]], max_new_tokens=4, steps=4001)
    assert len(generate(lm.model, lm.process, "ancestral", [[5]], max_new_tokens=4, steps=4000, seed=0).generated[0]) == 4
    code, out, err = run_cli(["generate", "--model", tiny_trained.final, "--max-new-tokens", "4", "--steps", str(10**12)], capsys)
    assert_one_line_error(code, out, err)
    assert time.process_time() - start < 10 and one_line(e)  # CPU seconds, not the 1e12 steps' hours


def test_requests_larger_than_the_memory_are_refused_before_any_work(lm, tiny_trained, tmp_path, capsys):
    from textdiff.bounds import GIB, free_memory
    from textdiff.generation import generate

    free = free_memory("cpu")
    if free is None:
        pytest.skip("this system does not say how much memory is free")
    rows = int(free // (4 * 300 * 4)) + 1  # 4 new positions x 300 float32 logits per row: just past free memory
    assert lm.process.vocab_size == 300 and rows * 4 * 300 * 4 > free and free / GIB > 0.01
    with pytest.raises(ConfigError, match="GiB free") as e:
        lm.generate([""] * rows, max_new_tokens=4, steps=2)
    with pytest.raises(ConfigError, match="GiB free"):
        generate(lm.model, lm.process, "ancestral", [[5]] * 1000, max_new_tokens=10**7, steps=10**7)
    with pytest.raises(ConfigError, match="use fewer t_samples"):
        lm.score("hi", t_samples=10**9)
    assert one_line(e)
    output = tmp_path / "samples.txt"
    code, out, err = run_cli(["generate", "--model", tiny_trained.final, "--max-new-tokens", "4", "--num-samples", str(rows),
                              "--output", output], capsys)
    assert_one_line_error(code, out, err)
    assert "--num-samples" in err and not output.exists()


# ---------------------------------------------------------------------------------------------
# Inputs that were accepted without a word: now an error or exactly one warning line
# ---------------------------------------------------------------------------------------------


def test_literal_mask_text_in_a_prompt_is_text_with_one_warning_and_ids_still_infill(lm, capsys):
    mask = lm.process.mask_id
    ids = lm.encode_prompts(["a [MASK] b"])[0]
    assert mask not in ids and lm.tokenizer.decode(ids) == "a [MASK] b"
    assert "encoded as text" in warnings_of(capsys.readouterr().err)[0]
    assert lm.encode_prompts(["a b"]) == [lm.tokenizer("a b", add_special_tokens=False)["input_ids"]]
    assert capsys.readouterr().err == ""  # no mask text: no warning, the same ids as before
    assert lm.encode_prompts([[5, mask, 6]]) == [[5, mask, 6]]  # ids ask for infilling: kept
    chat = with_template(lm, "{% for m in messages %}{{ m.content }}{% endfor %}")
    assert mask not in chat.encode_prompts([[{"role": "user", "content": "x [MASK] y"}]])[0]
    assert len(warnings_of(capsys.readouterr().err)) == 1


def test_steps_a_sampler_or_process_does_not_use_are_one_warning(lm, capsys):
    from textdiff.processes.base import build_process
    from textdiff.samplers.base import build_sampler, unused_steps_note

    lm.generate("hi", sampler="first_hitting", steps=3, max_new_tokens=4, seed=0)
    (line,) = warnings_of(capsys.readouterr().err)
    assert "steps=3 is not used" in line and "first_hitting" in line
    lm.generate("hi", sampler="first_hitting", max_new_tokens=4, seed=0)
    lm.generate("hi", sampler="ancestral", steps=3, max_new_tokens=4, seed=0)
    assert capsys.readouterr().err == ""
    ar = build_process("ar", vocab_size=300, mask_id=1)
    assert "one token per step" in unused_steps_note(8, build_sampler("ancestral", ar), ar)


def test_negative_guidance_warns_and_below_minus_one_is_an_error(lm, capsys):
    lm.generate("hi", max_new_tokens=4, steps=2, seed=0, guidance_weight=-0.5)
    (line,) = warnings_of(capsys.readouterr().err)
    assert "not trained with condition dropout" in line
    with pytest.raises(ConfigError, match="inverts") as e:
        lm.generate("hi", max_new_tokens=4, steps=2, guidance_weight=-2.0)
    lm.generate("hi", max_new_tokens=4, steps=2, seed=0, guidance_weight=1.0)
    assert capsys.readouterr().err == "" and one_line(e)


def test_float16_on_cpu_warns_once(tiny_trained, capsys):
    from textdiff.training.loop import resolve_precision

    lm = DiffusionLM.from_pretrained(tiny_trained.final, device="cpu", dtype=torch.float16)
    (line,) = warnings_of(capsys.readouterr().err)
    assert "float16 on CPU" in line and lm.model.dtype == torch.float16
    with pytest.raises(TextDiffError, match="torch floating dtype") as e:
        DiffusionLM.from_pretrained(tiny_trained.final, device="cpu", dtype="fp16")
    assert one_line(e)
    if not torch.cuda.is_available():
        assert resolve_precision("fp16") == "no"
        assert "training in float32" in warnings_of(capsys.readouterr().err)[0]


def test_causal_attention_under_a_diffusion_process_warns(tiny_trained, capsys):
    from textdiff.config import load_recipe

    load_recipe(raw={**tiny_trained.raw, "model": {**tiny_trained.raw["model"], "attention": "causal"}})
    (line,) = warnings_of(capsys.readouterr().err)
    assert "causal attention" in line and "bidirectional" in line
    load_recipe(raw=tiny_trained.raw)
    load_recipe(raw={**tiny_trained.raw, "process": {"name": "ar"}, "model": {**tiny_trained.raw["model"], "attention": "causal"}})
    assert capsys.readouterr().err == ""


def test_a_mask_token_added_to_the_callers_tokenizer_is_one_warning(tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from textdiff.tokenization import TokenizerConfig, build_tokenizer

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2, "</s>": 3}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", eos_token="</s>").save_pretrained(tmp_path / "tok")
    tok = build_tokenizer(TokenizerConfig(path=str(tmp_path / "tok")))
    (line,) = warnings_of(capsys.readouterr().err)
    assert tok.mask_token == "[MASK]" and "'[MASK]' (id 4)" in line and str(tmp_path / "tok") in line


def test_process_vocabulary_and_mask_id_are_checked_where_the_process_is_built():
    from textdiff.processes.base import build_process

    for bad in (-3, 0, 1, "300", 2.5, True):
        with pytest.raises(ConfigError, match="vocab_size") as e:
            build_process("masked", vocab_size=bad, mask_id=0)
        one_line(e)
    with pytest.raises(IncompatibleError, match="mask_id=300"):
        build_process("masked", vocab_size=300, mask_id=300)
    assert build_process("uniform", vocab_size=300, mask_id=300).vocab_size == 300  # uniform has no use for it


def _copy(tiny_trained, tmp_path, edit_json: str, change) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_trained.final, folder)
    data = json.loads((folder / edit_json).read_text())
    change(data)
    (folder / edit_json).write_text(json.dumps(data))
    return folder


FOLDER_PIPELINES = {
    "sampler-for-another-process": lambda d: d.update(sampler={"name": "euler"}),
    "process-needing-causal-attention": lambda d: d.update(process={"name": "ar"}),
    "process-needing-time-conditioning": lambda d: d.update(process={**d["process"], "time_conditioning": True}),
}


@pytest.mark.parametrize("change", list(FOLDER_PIPELINES.values()), ids=list(FOLDER_PIPELINES))
def test_a_folder_whose_textdiff_json_does_not_fit_its_network_is_refused_at_load(tiny_trained, tmp_path, capsys, change):
    folder = _copy(tiny_trained, tmp_path, "textdiff.json", change)
    with pytest.raises(IncompatibleError, match="does not fit the network") as e:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert str(folder / "textdiff.json") in one_line(e)
    capsys.readouterr()  # (the API call's loading bar)
    code, out, err = run_cli(["generate", "--model", folder, "--max-new-tokens", "4"], capsys)
    assert_one_line_error(code, out, err)


def test_a_zero_head_count_is_reported_as_the_configs_not_the_tokenizers(tiny_trained, tmp_path, capsys):
    folder = _copy(tiny_trained, tmp_path, "config.json", lambda d: d.update(num_heads=0))
    code, out, err = run_cli(["generate", "--model", folder, "--max-new-tokens", "4"], capsys)
    assert_one_line_error(code, out, err)
    assert "config.json" in err and "num_heads=0" in err and "tokenizer" not in err


def test_a_streaming_file_of_blank_lines_says_so(tmp_path):
    from textdiff.config import DataConfig
    from textdiff.streaming import stream_split

    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\n" * 20)
    with pytest.raises(TextDiffError, match="is blank") as e:
        stream_split(DataConfig(source=str(path), lines_are_documents=True, seq_len=16, streaming=True, val_documents=5))
    assert "val_documents" not in one_line(e)


CHAT_SHAPES = {
    "message-among-strings": [{"role": "user", "content": "hi"}, "x"],
    "string-inside-a-chat": [[{"role": "user", "content": "hi"}, "x"]],
    "number-inside-a-chat": [[{"role": "user", "content": "hi"}, 5]],
}


@pytest.mark.parametrize("prompts", list(CHAT_SHAPES.values()), ids=list(CHAT_SHAPES))
def test_a_chat_in_the_wrong_shape_says_what_a_chat_is(lm, prompts):
    with pytest.raises(ConfigError, match="a chat is a list of") as e:
        lm.generate(prompts, max_new_tokens=4, steps=2)
    assert "must be an integer token id" not in one_line(e)


# ---------------------------------------------------------------------------------------------
# The Python API: unknown keywords and wrong types are one-line TextDiffErrors
# ---------------------------------------------------------------------------------------------


def _api_calls(lm, tiny):
    from textdiff import generation
    from textdiff.config import ModelConfig, load_recipe
    from textdiff.eval import evaluate_likelihood, sample_texts
    from textdiff.harness.run import main as harness_main
    from textdiff.processes.base import build_process
    from textdiff.processes.masked import MaskedConfig
    from textdiff.samplers.ancestral import AncestralConfig
    from textdiff.samplers.base import build_sampler
    from textdiff.schedules import LogLinearConfig

    return {
        "generate-stepz": ("stepz", lambda: lm.generate("hi", stepz=3)),
        "generate-forwarded-typo": ("use_cach", lambda: lm.generate("hi", max_new_tokens=4, use_cach=False)),
        "score-tsamples": ("tsamples", lambda: lm.score("hi", tsamples=3)),
        "from_pretrained-devise": ("devise", lambda: DiffusionLM.from_pretrained(tiny.final, devise="cpu")),
        "save_pretrained-overwrit": ("overwrit", lambda: lm.save_pretrained(tiny.base / "never", overwrit=True)),
        "make_sampler-positional": ("positional", lambda: lm.make_sampler("ancestral", {}, 3)),
        "build_process-vocab": ("vocab", lambda: build_process("masked", vocab=300)),
        "build_sampler-proces": ("proces", lambda: build_sampler("ancestral", proces=lm.process)),
        "generation.generate-stepz": ("stepz", lambda: generation.generate(lm.model, lm.process, "ancestral", [[1]], stepz=2)),
        "load_recipe-pth": ("pth", lambda: load_recipe(pth="x.yaml")),
        "ModelConfig-hiden": ("hiden", lambda: ModelConfig(hiden_size=3)),
        "MaskedConfig-antithetc": ("antithetc", lambda: MaskedConfig(antithetc=True)),
        "AncestralConfig-temprature": ("temprature", lambda: AncestralConfig(temprature=0.5)),
        "LogLinearConfig-epss": ("epss", lambda: LogLinearConfig(epss=0.1)),
        "stream-stepz": ("stepz", lambda: generation.stream(lm.model, lm.process, "ancestral", [[1]], stepz=2)),
        "evaluate_likelihood-batch": ("batchsize", lambda: evaluate_likelihood(lm.model, lm.process, [], batchsize=2)),
        "sample_texts-stepz": ("stepz", lambda: sample_texts(lm, stepz=2)),
        "harness-overwrit": ("overwrit", lambda: harness_main(["quickstart"], overwrit=True)),
    }


def test_unknown_keywords_and_bad_bindings_name_the_function_and_its_keywords(lm, tiny_trained):
    for case, (word, call) in _api_calls(lm, tiny_trained).items():
        with pytest.raises(ConfigError) as e:
            call()
        text = one_line(e)
        assert word in text and "it accepts:" in text, (case, text)
    assert not (tiny_trained.base / "never").exists()


WRONG_TYPES = {
    "build_sampler-no-process": lambda lm: __import__("textdiff.samplers.base", fromlist=["x"]).build_sampler("ancestral", None),
    "build_sampler-process-name": lambda lm: __import__("textdiff.samplers.base", fromlist=["x"]).build_sampler("ancestral", "masked"),
    "load_recipe-int": lambda lm: __import__("textdiff.config", fromlist=["x"]).load_recipe(3),
    "load_recipe-overrides-string": lambda lm: __import__("textdiff.config", fromlist=["x"]).load_recipe(raw={}, overrides="train.lr=1"),
    "config-object-with-a-bad-field": lambda lm: __import__("textdiff.processes.base", fromlist=["x"]).build_process(
        __import__("textdiff.processes.masked", fromlist=["x"]).MaskedConfig(antithetic="yes"), vocab_size=300, mask_id=1),
    "config-class-not-instance": lambda lm: __import__("textdiff.samplers.base", fromlist=["x"]).build_sampler(
        type(lm.make_sampler().config), lm.process),
    "from_pretrained-path-int": lambda lm: DiffusionLM.from_pretrained(3),
    "from_pretrained-tokenizer-int": lambda lm: DiffusionLM.from_pretrained("x", tokenizer=5),
    "from_pretrained-trust_remote_code-str": lambda lm: DiffusionLM.from_pretrained("x", trust_remote_code="yes"),
    "from_pretrained-revision-int": lambda lm: DiffusionLM.from_pretrained("x", revision=3),
    "save_pretrained-path-int": lambda lm: lm.save_pretrained(3),
    "save_pretrained-remote_code-str": lambda lm: lm.save_pretrained("never-written", remote_code="yes"),
    "save_pretrained-repo_id-int": lambda lm: lm.save_pretrained("never-written", repo_id=5),
    "make_sampler-int": lambda lm: lm.make_sampler(3),
    "encode_prompts-int": lambda lm: lm.encode_prompts(3),
    "generate-progress-str": lambda lm: lm.generate("hi", max_new_tokens=4, progress="yes"),
    "generate-callback-str": lambda lm: lm.generate("hi", max_new_tokens=4, callback="print"),
    "generate-template-str": lambda lm: lm.generate("hi", max_new_tokens=4, template="abc"),
    "score-progress-str": lambda lm: lm.score("hi", progress="x"),
}


@pytest.mark.parametrize("call", list(WRONG_TYPES.values()), ids=list(WRONG_TYPES))
def test_wrong_argument_types_are_one_line_errors(lm, call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TextDiffError) as e:
        call(lm)
    one_line(e)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_tokenizer_given_for_a_folder_with_its_own_is_one_warning(tiny_trained, capsys):
    DiffusionLM.from_pretrained(tiny_trained.final, device="cpu", tokenizer=str(tiny_trained.final))
    (line,) = warnings_of(capsys.readouterr().err)
    assert "tokenizer= is not used" in line


def test_lm_eval_model_args_of_the_wrong_type_and_a_missing_chat_template(lm):
    pytest.importorskip("lm_eval")
    from textdiff.eval.lm_eval_adapter import TextDiffLM

    for bad in ({"mc_samples": "abc"}, {"t_samples": "0"}, {"greedy": "maybe"}, {"batch_size": "big"},
                {"steps": "x"}, {"seed": "1.5"}, {"max_gen_toks": "-1"}, {"progress": "sometimes"}):
        with pytest.raises(ConfigError, match=f"model_args {next(iter(bad))}=") as e:
            TextDiffLM(lm=lm, **bad)
        one_line(e)
    adapter = TextDiffLM(lm=lm, mc_samples="4", greedy="false", batch_size="auto")
    assert (adapter.mc_samples, adapter.greedy, adapter.batch_size) == (4, False, 16)
    assert adapter.chat_template(False) is None
    with pytest.raises(ConfigError, match="drop --apply_chat_template") as e:
        adapter.chat_template(True)
    one_line(e)


# ---------------------------------------------------------------------------------------------
# Writers at the CLI: a dangling link and an unwritable place are one line, and nothing is left
# ---------------------------------------------------------------------------------------------


def test_convert_to_a_dangling_link_or_an_unwritable_folder_is_one_line(tiny_trained, tmp_path, capsys):
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    code, out, err = run_cli(["convert", tiny_trained.final, link], capsys)
    assert_one_line_error(code, out, err)
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        code, out, err = run_cli(["convert", tiny_trained.final, locked / "model"], capsys)
        assert_one_line_error(code, out, err)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "locked"]
