"""Writes never destroy what the user did not name: every folder writer (``save_pretrained``,
``textdiff convert``, ``push_to_hub``'s staging, ``textdiff train``'s output folder and final save,
``textdiff eval``'s report folder) creates a new folder or replaces only one textdiff wrote, when asked;
never a file, a link, the source, the working folder or a folder holding it; failures are one line
and leave no temporary folder; a replaced folder is gone only once the new one is in place."""
import json
import os
import shutil
from pathlib import Path

import pytest
from bad_input_checks import assert_one_line_error, run_cli
from conftest import tiny_recipe

from textdiff.config import load_recipe
from textdiff.errors import ConfigError, TextDiffError
from textdiff.lm import DiffusionLM
from textdiff.models import TextDiffConfig, TextDiffModel
from textdiff.models.format import MARKER, check_target, read_marker, staged_folder
from textdiff import build_process
from textdiff.tokenization import train_bpe, wrap_fast
from textdiff.training.loop import train


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (itself included) with its bytes (None for folders, the target for links)."""
    out = {}
    for p in [folder, *sorted(folder.rglob("*"))] if folder.is_dir() else [folder]:
        key = str(p.relative_to(folder.parent))
        out[key] = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else None)
    return out


def no_temporaries(folder: Path) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-"))]


@pytest.fixture(scope="module")
def lm():
    tok = wrap_fast(train_bpe(["some text to train on"] * 10, vocab_size=280))
    model = TextDiffModel(TextDiffConfig(vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=16))
    return DiffusionLM(model.eval(), tok, build_process("masked", vocab_size=len(tok), mask_id=tok.mask_token_id), seq_len=16)


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A folder of the user's: files textdiff did not write (one looks like a textdiff folder)."""
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub" / "data.bin").write_bytes(b"\x00\x01")
    (folder / "config.json").write_text('{"model_type": "textdiff"}')
    (folder / ".tmp-looks-like-ours-1-abcd").mkdir()
    return folder


def unwritable(tmp_path) -> Path:
    """A folder this process cannot create entries in (a read-only folder, or /sys for root)."""
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    for candidate in (ro, Path("/sys")):
        try:
            (candidate / "probe").mkdir()
        except OSError:
            return candidate
        (candidate / "probe").rmdir()
    pytest.skip("no unwritable folder on this machine")


# ---------------------------------------------------------------------------------------------
# The rules themselves (models/format/writer.py)
# ---------------------------------------------------------------------------------------------


def test_a_staged_folder_appears_whole_with_the_marker_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with staged_folder(target, "model") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-out-") and not target.exists()
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a" and read_marker(target)["kind"] == "model"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_folder(tmp_path / "failed", "model") as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert not (tmp_path / "failed").exists() and no_temporaries(tmp_path)


def test_an_empty_folder_is_filled_and_only_a_textdiff_folder_of_the_same_kind_is_replaced(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_folder(empty, "eval") as tmp:
        (tmp / "report.json").write_text("{}")
    assert (empty / "report.json").is_file()
    with pytest.raises(ConfigError, match="already exists"):  # textdiff's own, but no overwrite asked
        check_target(empty, "eval")
    with pytest.raises(ConfigError, match="a textdiff eval folder, not a model folder"):
        check_target(empty, "model", overwrite=True)
    with staged_folder(empty, "eval", overwrite=True) as tmp:
        (tmp / "new.json").write_text("{}")
    assert sorted(p.name for p in empty.iterdir()) == [MARKER, "new.json"] and no_temporaries(tmp_path)


def test_cleanup_touches_only_names_that_carry_the_writers_id(tmp_path):
    from textdiff.models.format import remove_own_temporaries

    for name in (".tmp-final-abc123-17-deadbeef", ".old-checkpoint-4-abc123-9-00ff00ff", ".tmp-final-17-deadbeef",
                 ".tmp-x-abc1234-1-aa", "abc123", ".tmp-notes"):
        (tmp_path / name).mkdir()
    removed = remove_own_temporaries(tmp_path, "abc123")
    assert sorted(p.name for p in removed) == [".old-checkpoint-4-abc123-9-00ff00ff", ".tmp-final-abc123-17-deadbeef"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-final-17-deadbeef", ".tmp-notes", ".tmp-x-abc1234-1-aa", "abc123"]


# ---------------------------------------------------------------------------------------------
# DiffusionLM.save_pretrained
# ---------------------------------------------------------------------------------------------


def test_save_pretrained_refuses_a_prefilled_folder_even_with_overwrite(lm, user_folder):
    before = snapshot(user_folder)
    with pytest.raises(ConfigError, match="already exists") as e:
        lm.save_pretrained(user_folder)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="not a folder textdiff wrote") as e:
        lm.save_pretrained(user_folder, overwrite=True)
    assert "\n" not in str(e.value) and snapshot(user_folder) == before and no_temporaries(user_folder.parent)


def test_save_pretrained_replaces_its_own_folder_only_when_asked(lm, tmp_path):
    lm.save_pretrained(tmp_path / "m")
    first = snapshot(tmp_path / "m")
    assert read_marker(tmp_path / "m")["kind"] == "model"
    with pytest.raises(ConfigError, match="already exists"):
        lm.save_pretrained(tmp_path / "m")
    assert snapshot(tmp_path / "m") == first
    (tmp_path / "m" / "extra.txt").write_text("inside a textdiff folder: replaced with it, as asked")
    lm.save_pretrained(tmp_path / "m", overwrite=True)
    assert not (tmp_path / "m" / "extra.txt").exists() and (tmp_path / "m" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # nothing beside it: no temporary, no old copy
    assert DiffusionLM.from_pretrained(tmp_path / "m", device="cpu").seq_len == lm.seq_len


def test_save_pretrained_never_writes_over_its_source(lm, tmp_path):
    lm.save_pretrained(tmp_path / "m")
    again = DiffusionLM.from_pretrained(tmp_path / "m", device="cpu")
    before = snapshot(tmp_path / "m")
    for target, says in ((tmp_path / "m", "is the source"), (tmp_path / "m" / "inner", "is inside the source"),
                         (tmp_path, "holds the source")):
        with pytest.raises(ConfigError, match=says) as e:
            again.save_pretrained(target, overwrite=True)
        assert "\n" not in str(e.value)
    assert snapshot(tmp_path / "m") == before and no_temporaries(tmp_path)


def test_save_pretrained_refuses_files_links_and_the_working_folder(lm, tmp_path, monkeypatch):
    file = tmp_path / "a-file"
    file.write_text("keep me")
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    (tmp_path / "real").mkdir()
    good_link = tmp_path / "link"
    good_link.symlink_to(tmp_path / "real")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cases = [(file, "is a file"), (link, "dangling symbolic link"), (good_link, "is a symbolic link"),
             (Path("."), "is the working folder"), (Path(".."), "is the working folder or holds it")]
    for target, says in cases:
        for overwrite in (False, True):
            with pytest.raises(ConfigError, match=says) as e:
                lm.save_pretrained(target, overwrite=overwrite)
            assert "\n" not in str(e.value)
    assert file.read_text() == "keep me" and os.readlink(link) == str(tmp_path / "nowhere") and not (tmp_path / "nowhere").exists()
    assert os.readlink(good_link) == str(tmp_path / "real") and not any((tmp_path / "real").iterdir())
    assert not any(work.iterdir()) and no_temporaries(tmp_path)


def test_an_unwritable_destination_is_one_line(lm, tmp_path):
    folder = unwritable(tmp_path)
    with pytest.raises(ConfigError, match="cannot write destination") as e:
        lm.save_pretrained(folder / "m")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="cannot write destination"):  # a path through a file
        (tmp_path / "f").write_text("x")
        lm.save_pretrained(tmp_path / "f" / "m")
    assert (tmp_path / "f").read_text() == "x"


def test_a_failure_while_writing_leaves_the_old_folder_and_no_temporary(lm, tmp_path, monkeypatch):
    lm.save_pretrained(tmp_path / "m")
    before = snapshot(tmp_path / "m")

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lm.tokenizer, "save_pretrained", broken)
    with pytest.raises(ConfigError, match="No space left on device") as e:
        lm.save_pretrained(tmp_path / "m", overwrite=True)
    assert "\n" not in str(e.value) and snapshot(tmp_path / "m") == before and sorted(os.listdir(tmp_path)) == ["m"]


# ---------------------------------------------------------------------------------------------
# push_to_hub's staging
# ---------------------------------------------------------------------------------------------


def test_push_to_hub_stages_in_a_new_temporary_folder_and_touches_nothing_else(lm, tmp_path, monkeypatch):
    import huggingface_hub

    lm.save_pretrained(tmp_path / "m")
    loaded = DiffusionLM.from_pretrained(tmp_path / "m", device="cpu")
    seen = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message, revision=None):
            seen["folder"] = Path(folder_path)
            seen["files"] = sorted(p.name for p in Path(folder_path).iterdir())

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    loaded.push_to_hub("me/tiny")
    assert {"config.json", "model.safetensors", "textdiff.json", "README.md"} <= set(seen["files"])
    assert MARKER not in seen["files"]  # the marker describes a folder on this machine, not the model
    assert not seen["folder"].exists() and not seen["folder"].is_relative_to(tmp_path)
    assert snapshot(tmp_path) == before  # neither the source nor the working folder changed


# ---------------------------------------------------------------------------------------------
# textdiff convert
# ---------------------------------------------------------------------------------------------


def test_convert_refuses_prefilled_source_inside_file_and_working_folder_before_loading(lm, tmp_path, user_folder,
                                                                                         capsys, monkeypatch):
    src = tmp_path / "src"
    lm.save_pretrained(src)
    (tmp_path / "a-file").write_text("keep me")
    monkeypatch.setattr(DiffusionLM, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("loaded before checking DST")))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    for dst in (user_folder, src, src / "sub", tmp_path, tmp_path / "a-file", ".", ".."):
        for extra in ([], ["--overwrite"]):
            code, out, err = run_cli(["convert", src, dst, *extra], capsys)
            assert_one_line_error(code, out, err)
    assert snapshot(tmp_path) == before


def test_convert_writes_a_new_folder_and_replaces_only_its_own_with_overwrite(lm, tmp_path, capsys):
    src = tmp_path / "src"
    lm.save_pretrained(src)
    dst = tmp_path / "dst"
    capsys.readouterr()
    assert run_cli(["convert", src, dst], capsys)[0] == 0
    assert read_marker(dst)["kind"] == "model" and (dst / "textdiff.json").is_file()
    code, out, err = run_cli(["convert", src, dst], capsys)
    assert_one_line_error(code, out, err)
    assert "--overwrite" in err
    assert run_cli(["convert", src, dst, "--overwrite"], capsys)[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["dst", "src"]


# ---------------------------------------------------------------------------------------------
# textdiff train: the output folder and the final save
# ---------------------------------------------------------------------------------------------


def small(tmp_path, out, **train_fields):
    return load_recipe(raw=tiny_recipe(tmp_path, output_dir=str(out),
                                       train={"max_steps": 2, "eval_every": 2, "save_every": 2, "log_every": 1, **train_fields}))


def test_train_refuses_a_prefilled_folder_and_writes_nothing_there(tmp_path, user_folder, capsys):
    before = snapshot(user_folder)
    recipe = tmp_path / "r.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path, output_dir=str(user_folder))))
    for extra in ([], ["--resume"], ["--overwrite"]):
        code, out, err = run_cli(["train", recipe, *extra], capsys)
        assert_one_line_error(code, out, err)
    assert snapshot(user_folder) == before


def test_train_output_folder_links_files_and_other_textdiff_folders_are_one_line(lm, tmp_path, capsys):
    import yaml

    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "a-file").write_text("x")
    lm.save_pretrained(tmp_path / "model")
    model_before = snapshot(tmp_path / "model")
    for out in ("dangling", "a-file", "model"):
        recipe = tmp_path / f"{out}.yaml"
        recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path, output_dir=str(tmp_path / out))))
        code, stdout, err = run_cli(["train", recipe], capsys)
        assert_one_line_error(code, stdout, err)
    assert not (tmp_path / "nowhere").exists() and (tmp_path / "a-file").read_text() == "x"
    assert snapshot(tmp_path / "model") == model_before


@pytest.mark.slow
def test_train_overwrite_replaces_a_finished_run_and_its_final_save_is_a_marked_model_folder(tmp_path, monkeypatch):
    out = tmp_path / "run"
    final = train(small(tmp_path, out))
    assert read_marker(out)["kind"] == "run" and read_marker(final)["kind"] == "model"
    first_id = read_marker(out)["id"]
    (out / "checkpoint-999").mkdir()  # anything in the old run folder goes with it
    with pytest.raises(ConfigError, match="already holds a run"):
        train(small(tmp_path, out))
    train(small(tmp_path, out, max_steps=1, save_every=1, eval_every=1), overwrite=True)
    assert read_marker(out)["id"] != first_id and not (out / "checkpoint-999").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"] and no_temporaries(out)
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no old copy or temporary beside it
    with pytest.raises(ConfigError, match="either --resume .* or --overwrite"):
        train(small(tmp_path, out), resume=True, overwrite=True)
    before = snapshot(out)
    monkeypatch.chdir(out / "final")
    with pytest.raises(ConfigError, match="is the working folder or holds it, which --overwrite would delete"):
        train(small(tmp_path, out), overwrite=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="is inside output_dir .* which --overwrite would delete"):  # never the source
        train(load_recipe(raw=tiny_recipe(tmp_path, output_dir=str(out), train={"init_from": str(out / "final")})),
              overwrite=True)
    assert snapshot(out) == before


def test_train_final_save_refuses_a_final_folder_it_did_not_write(tmp_path):
    out = tmp_path / "run"
    train(small(tmp_path, out), stop_at=1)  # a killed run: no final/ yet
    shutil.rmtree(out / "final", ignore_errors=True)
    (out / "final").mkdir()
    (out / "final" / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a folder textdiff wrote"):
        train(small(tmp_path, out), resume=True)
    assert (out / "final" / "mine.txt").read_text() == "keep" and no_temporaries(out)


def test_an_empty_output_folder_is_used_and_a_failed_setup_leaves_it_empty(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    bad = load_recipe(raw=tiny_recipe(tmp_path, output_dir=str(out), data={"source": str(tmp_path / "none.txt")}))
    with pytest.raises(TextDiffError, match="does not exist"):
        train(bad)
    assert out.is_dir() and not any(out.iterdir())
    train(small(tmp_path, out))
    assert (out / "final" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# textdiff eval: the report folder
# ---------------------------------------------------------------------------------------------


def test_eval_writes_a_new_report_folder_and_replaces_only_its_own(lm, tmp_path, user_folder, capsys):
    import yaml

    lm.save_pretrained(tmp_path / "m")
    (tmp_path / "data.txt").write_text("some text to train on\n" * 4)

    def suite(out) -> Path:
        path = tmp_path / "suite.yaml"
        path.write_text(yaml.safe_dump({"name": "w", "output_dir": str(out), "models": [str(tmp_path / "m")],
                                        "tasks": [{"metric": "likelihood", "name": "lines", "t_samples": 1, "bootstrap": 10,
                                                   "dataset": {"path": str(tmp_path / "data.txt")}}]}))
        return path

    before = snapshot(user_folder)
    for extra in ([], ["--overwrite"]):
        code, out, err = run_cli(["eval", suite(user_folder), "--quiet", *extra], capsys)
        assert_one_line_error(code, out, err)
    assert snapshot(user_folder) == before
    code, out, err = run_cli(["eval", suite(tmp_path / "m"), "--quiet", "--overwrite"], capsys)  # a model folder
    assert_one_line_error(code, out, err)
    report = tmp_path / "report"
    assert run_cli(["eval", suite(report), "--quiet"], capsys)[0] == 0
    assert read_marker(report)["kind"] == "eval" and json.loads((report / "report.json").read_text())["results"]
    code, out, err = run_cli(["eval", suite(report), "--quiet"], capsys)
    assert_one_line_error(code, out, err)
    assert run_cli(["eval", suite(report), "--quiet", "--overwrite"], capsys)[0] == 0
    assert no_temporaries(tmp_path)
