"""The smaller items of issue 30 (item 7): flags anywhere on the line, files with the user's umask,
chat prompts from the CLI, Dream's caches with Fast-dLLM's rules by default, per-token NELBO terms."""
import json
import os
import stat
import sys

import pytest

from textdiff.cli import main as cli, parse_args
from textdiff.cli_commands import read_messages_file
from textdiff.errors import TextDiffError
from textdiff.models.format.writer import apply_umask, commit


def test_flags_anywhere_between_overrides():
    args = parse_args(["train", "quickstart", "a=1", "--resume", "b=2", "--overwrite"])
    assert (args.recipe, args.overrides, args.resume, args.overwrite, args.command) == ("quickstart", ["a=1", "b=2"], True, True, "train")
    args = parse_args(["eval", "quickstart", "--quiet", "models.0.path=x", "--overwrite", "output_dir=y"])
    assert args.overrides == ["models.0.path=x", "output_dir=y"] and args.quiet and args.overwrite
    assert parse_args(["train", "quickstart"]).overrides == []


def test_missing_recipe_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["train"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "error: textdiff train: the following arguments are required: recipe (see textdiff train --help)\n"


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_committed_files_get_the_users_umask(tmp_path, mask):
    tmp = tmp_path / ".tmp-x-1"
    (tmp / "sub").mkdir(parents=True)
    for f in (tmp / "model.safetensors", tmp / "sub" / "adapter.safetensors"):
        f.write_bytes(b"x")
        os.chmod(f, 0o600)  # what a library writing through a private temporary file leaves
    old = os.umask(mask)
    try:
        commit(tmp, tmp_path / "x", "1")
        assert stat.S_IMODE(os.stat(tmp_path / "x" / "model.safetensors").st_mode) == 0o666 & ~mask
        assert stat.S_IMODE(os.stat(tmp_path / "x" / "sub" / "adapter.safetensors").st_mode) == 0o666 & ~mask
        assert stat.S_IMODE(os.stat(tmp_path / "x" / "sub").st_mode) == 0o777 & ~mask
        apply_umask(tmp_path / "x")  # idempotent
        assert stat.S_IMODE(os.stat(tmp_path / "x" / "model.safetensors").st_mode) == 0o666 & ~mask
    finally:
        os.umask(old)


def test_messages_file_reads_chats_and_rejects_bad_lines(tmp_path):
    good = tmp_path / "m.jsonl"
    good.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n\n'
                    '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}\n')
    assert read_messages_file(str(good)) == [[{"role": "user", "content": "hi"}],
                                             [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]]
    for text, words in [('{"messages": []}\n', "each line must be"), ("nope\n", "not valid JSON"), ("\n", "holds no chats")]:
        bad = tmp_path / "b.jsonl"
        bad.write_text(text)
        with pytest.raises(TextDiffError, match=words):
            read_messages_file(str(bad))
    with pytest.raises(TextDiffError, match="does not exist"):
        read_messages_file(str(tmp_path / "none.jsonl"))


@pytest.mark.slow
def test_chat_from_the_cli_is_the_apis_chat(tmp_path, capsys):
    from published_llm_helpers import FIXTURES, load_fixture

    llada = load_fixture("llada")
    msgs = [{"role": "user", "content": "w1 w2 w3"}]
    want = llada.generate([msgs], max_new_tokens=8, seed=0)
    (tmp_path / "m.jsonl").write_text(json.dumps({"messages": msgs}) + "\n")
    assert cli(["generate", "--model", str(FIXTURES / "llada"), "--chat", "--prompt", "w1 w2 w3", "--messages-file",
                str(tmp_path / "m.jsonl"), "--max-new-tokens", "8", "--format", "jsonl", "--quiet", "--device", "cpu"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == [msgs, msgs] and [r["text"] for r in rows] == want * 2


@pytest.mark.slow
def test_dream_caches_take_fast_dllms_rules_unless_given():
    from published_llm_helpers import load_fixture

    dream = load_fixture("dream")
    kw = dict(max_new_tokens=40, steps=40, temperature=0.0, seed=0, return_output=True)
    plain, _ = dream.generate(["w1 w2"], use_cache="dual", **kw)  # no block size: Dream's cache rules
    ruled, _ = dream.generate(["w1 w2"], use_cache="dual", block_size=32, lookback=0,
                              sampler_options={"first_commit": "leftmost"}, **kw)
    assert plain == ruled
    ranked, _ = dream.generate(["w1 w2"], use_cache="dual", sampler_options={"first_commit": "ranked"}, block_size=8, **kw)
    assert ranked != plain  # an explicit option and block size win
    assert dream.cache_rules("dual", None, {}) == (32, 0, {"first_commit": "leftmost"})
    assert dream.cache_rules("none", None, {}) == (None, None, {})
    assert dream.cache_rules("prefix", 8, {"first_commit": "ranked"}) == (8, 0, {"first_commit": "ranked"})


@pytest.mark.slow
def test_score_per_token_terms_add_up_to_the_nelbo(tiny_trained, capsys):
    from textdiff.eval.token_terms import token_nelbo_terms

    lm = tiny_trained.lm
    texts = ["The list of things.", "A short one."]
    scores = lm.score(texts, t_samples=4, seed=5)
    for i, (text, nelbo) in enumerate(zip(texts, scores)):
        terms = token_nelbo_terms(lm, text, t_samples=4, seed=5, row=i)
        assert len(terms["nelbo_terms"]) == len(terms["tokens"]) == len(terms["token_ids"])
        assert terms["tokens"][-1] == lm.tokenizer.eos_token and all(x >= 0 for x in terms["nelbo_terms"])
        assert sum(terms["nelbo_terms"]) + terms["prior"] == pytest.approx(nelbo, rel=1e-5)
    assert cli(["score", "--model", str(tiny_trained.final), "--text", texts[0], "--t-samples", "4", "--seed", "5",
                "--per-token", "--quiet"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["nelbo"] == pytest.approx(scores[0], rel=1e-6) and sum(row["nelbo_terms"]) + row["prior"] == pytest.approx(row["nelbo"], rel=1e-5)
    assert cli(["score", "--model", str(tiny_trained.final), "--text", texts[0], "--format", "text", "--per-token"]) == 2
