"""Run folders are safe: one writer at a time (lock), damaged checkpoints are skipped for the newest
intact one (the resumed curve is still the uninterrupted one), metrics are truncated by atomic
replace, moved folders resume, and leftovers of killed writers are cleaned up."""
import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_recipe
from safetensors.torch import load_file, save_file

from textdiff.config import load_recipe
from textdiff.models.format import MARKER
from textdiff.training import loop
from textdiff.training.integrity import INTEGRITY_FILE, check_integrity, write_integrity
from textdiff.training.loop import LossSpikes, train
from textdiff.training.runlock import RunLock, RunLockedError

ROOT = Path(__file__).resolve().parent.parent
DROPOUT = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "cond_dim": 16, "dropout": 0.1}  # RNG state resumes too


def recipe(folder, **train_fields):
    fields = {"max_steps": 6, "save_every": 2, "eval_every": 2, "log_every": 1, **train_fields}
    return load_recipe(raw=tiny_recipe(folder, output_dir=str(folder), model=DROPOUT, train=fields))


def losses(run):
    lines = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["train_loss"]) for m in lines if "train_loss" in m]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 6-step run, and one killed after its step-4 checkpoint (checkpoint-2 and -4)."""
    base = tmp_path_factory.mktemp("safety")
    train(recipe(base / "full"))
    train(recipe(base / "cut"), stop_at=4)
    return base


def copy_cut(runs, dest: Path) -> Path:
    shutil.copytree(runs / "cut", dest)
    return dest


# textdiff.training.runlock imported in a bare process without running textdiff/__init__.py (which
# loads torch and transformers): the holder starts in a fraction of a second
HOLDER = """
import sys, time, types
for name in ("textdiff", "textdiff.training"):
    module = types.ModuleType(name)
    module.__path__ = [sys.argv[1] + "/" + name.replace(".", "/")]
    sys.modules[name] = module
from textdiff.training.runlock import RunLock
RunLock(sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def hold_lock_in_another_process(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


# ---------------------------------------------------------------------------------------------
# One writer per folder
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_is_alive_and_sigterm_releases(tmp_path):
    out = tmp_path / "run"
    holder = hold_lock_in_another_process(out)
    try:
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}") as e:
            train(recipe(out, max_steps=2))
        assert "\n" not in str(e.value)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGTERM)
        code = holder.wait(timeout=30)
    assert code == 128 + signal.SIGTERM and not (out / ".lock").exists()  # released on SIGTERM
    train(recipe(out, max_steps=2))  # the folder is free again
    assert (out / "final").is_dir() and not (out / ".lock").exists()


def test_resume_while_the_run_is_alive_is_refused_and_changes_nothing(runs, tmp_path):
    run = copy_cut(runs, tmp_path / "run")
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    with RunLock(run):  # the live run holds its folder
        with pytest.raises(RunLockedError, match="being written by another run"):
            train(recipe(run), resume=True)
    after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert after == before


@pytest.mark.slow
def test_a_stale_lock_of_a_crashed_run_is_taken_over_with_a_note(tmp_path, capfd):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "yesterday"}))
    train(recipe(out, max_steps=2))
    err = capfd.readouterr().err
    assert f"taking over the lock of {str(out)!r} left by a crashed run (pid {dead.pid}" in err
    assert (out / "final").is_dir() and not (out / ".lock").exists()


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "some-other-host", "started": "now"}))
    with pytest.raises(RunLockedError, match="delete"):
        train(recipe(out, max_steps=2))
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_the_lock_is_released_and_the_folder_removed_when_setup_fails(tmp_path):
    out = tmp_path / "run"
    bad = load_recipe(raw=tiny_recipe(tmp_path, output_dir=str(out), data={"source": str(tmp_path / "none.txt")}))
    with pytest.raises(Exception, match="does not exist"):
        train(bad)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Strict, verified checkpoints
# ---------------------------------------------------------------------------------------------


def _truncate_weights(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])


def _delete_a_tensor(ckpt):
    """A consistent-looking checkpoint (its integrity record rewritten) that lacks one tensor."""
    state = load_file(str(ckpt / "model.safetensors"))
    state.pop("blocks.0.attn.qkv.weight")
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    write_integrity(ckpt)


def _edit_integrity(ckpt):
    record = json.loads((ckpt / INTEGRITY_FILE).read_text())
    record["files"]["optimizer.pt"]["sha256"] = "0" * 64
    (ckpt / INTEGRITY_FILE).write_text(json.dumps(record))


def _truncate_optimizer(ckpt):
    data = (ckpt / "optimizer.pt").read_bytes()
    (ckpt / "optimizer.pt").write_bytes(data[:100])


def _drop_trainer_state(ckpt):
    (ckpt / "trainer_state.json").unlink()


DAMAGES = {"truncated-weights": (_truncate_weights, "model.safetensors"),
           "tensor-deleted": (_delete_a_tensor, "lacks 1 tensor(s), e.g. 'blocks.0.attn.qkv.weight'"),
           "integrity-edited": (_edit_integrity, "optimizer.pt does not match its SHA-256"),
           "truncated-optimizer": (_truncate_optimizer, "optimizer.pt has 100 bytes"),
           "no-trainer-state": (_drop_trainer_state, "trainer_state.json")}


@pytest.mark.slow
@pytest.mark.parametrize("damage,reason", list(DAMAGES.values()), ids=list(DAMAGES))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_exactly(runs, tmp_path, capfd, damage, reason):
    run = copy_cut(runs, tmp_path / "run")
    damage(run / "checkpoint-4")
    train(recipe(run), resume=True)
    err = capfd.readouterr().err
    warning = [ln for ln in err.splitlines() if ln.startswith("warning: checkpoint-4 is damaged")]
    assert len(warning) == 1 and reason in warning[0] and warning[0].endswith("falling back to checkpoint-2")
    # steps 3-4 are trained again from checkpoint-2: the killed run's lines for them were dropped, and
    # the whole curve is the uninterrupted run's, bit for bit
    assert losses(run) == losses(runs / "full")
    assert check_integrity(run / "checkpoint-4") and check_integrity(run / "checkpoint-6")


def test_every_checkpoint_written_has_a_complete_integrity_record_written_last(runs):
    for ckpt in sorted((runs / "full").glob("checkpoint-*")):
        record = json.loads((ckpt / INTEGRITY_FILE).read_text())["files"]
        files = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file() and p.name != INTEGRITY_FILE)
        assert sorted(record) == files and {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(files)
        assert all(record[f]["size"] == (ckpt / f).stat().st_size for f in files)
        assert check_integrity(ckpt) is True


@pytest.mark.slow
def test_a_moved_run_folder_resumes_and_only_this_runs_leftovers_are_removed(runs, tmp_path, capfd):
    """A resumed run removes what killed writers OF THIS RUN left (their names carry the run's id, kept in
    the folder's marker) and nothing else: entries that merely look like temporary files stay."""
    run = copy_cut(runs, tmp_path / "moved" / "elsewhere")  # config.yaml still names the old output_dir
    rid = json.loads((run / MARKER).read_text())["id"]
    ours = (f".tmp-checkpoint-6-{rid}-4242-deadbeef", f".tmp-final-{rid}-4242-cafe0000", f".old-final-{rid}-17-00ff00ff",
            f".tmp-metrics.jsonl-{rid}-4242-00aa00aa")
    lookalikes = (".tmp-checkpoint-6-4242-deadbeef", ".old-final-17-00ff00ff", ".tmp-notes")  # another writer's, the user's
    for left in ours + lookalikes:
        (run / left).mkdir()
        (run / left / "model.safetensors").write_bytes(b"half")
    train(recipe(run), resume=True)
    got = capfd.readouterr()
    assert losses(run) == losses(runs / "full")
    for left in ours:
        assert not (run / left).exists() and f"note: removed {left}" in got.out + got.err
    for left in lookalikes:
        assert (run / left / "model.safetensors").read_bytes() == b"half" and left not in got.out + got.err


# ---------------------------------------------------------------------------------------------
# metrics.jsonl truncation by atomic replace
# ---------------------------------------------------------------------------------------------


def _metrics(tmp_path) -> Path:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "train_loss": 1.0 / s}) + "\n" for s in range(1, 7)) + '{"step": 7, "tra')
    return path


def test_metrics_are_truncated_by_writing_a_new_file_and_renaming_it(tmp_path):
    path = _metrics(tmp_path)
    inode = path.stat().st_ino
    loop._truncate_metrics(path, 4)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [1, 2, 3, 4]  # the cut line is gone too
    assert path.stat().st_ino != inode  # a new file took the name: the old one was never rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_kill_during_metrics_truncation_leaves_the_old_history_whole(tmp_path, monkeypatch):
    path = _metrics(tmp_path)
    before = path.read_bytes()

    def killed(*args):
        raise KeyboardInterrupt  # as if the process died between writing the new file and renaming it

    monkeypatch.setattr(loop.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        loop._truncate_metrics(path, 4)
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# Warnings: dropped rows, loss spikes, a learning rate far too high
# ---------------------------------------------------------------------------------------------


def test_rows_without_the_text_field_are_counted_in_a_warning(tmp_path, capsys):
    from textdiff.config import DataConfig
    from textdiff.data import load_documents

    rows = [{"text": "kept one"}, {"body": "lost"}, {"text": "kept two"}, {"body": "lost"}, {"body": "lost"}]
    (tmp_path / "half.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = load_documents(str(tmp_path / "half.jsonl"), DataConfig())
    assert docs["text"] == ["kept one", "kept two"]
    assert "warning: 3 of 5 rows" in capsys.readouterr().err


def test_a_loss_spike_is_reported_once_and_a_steady_loss_never():
    said = []
    watch = LossSpikes()
    flags = [watch.observe(s, 3.0 - 0.01 * s, lambda *a, **k: said.append(a[0])) for s in range(1, 30)]
    assert not any(flags) and not said
    watch.observe(30, 9.0, lambda *a, **k: said.append(a[0]))
    watch.observe(31, 9.5, lambda *a, **k: said.append(a[0]))  # within the quiet period: no second line
    assert len(said) == 1 and said[0].startswith("warning: loss spike at step 30")


def test_a_learning_rate_far_too_high_is_accepted_with_a_warning(tmp_path, capsys):
    r = load_recipe(raw=tiny_recipe(tmp_path, train={"lr": 1e6}))
    assert r.train.lr == 1e6 and "warning: train.lr=1e+06 is far above" in capsys.readouterr().err
