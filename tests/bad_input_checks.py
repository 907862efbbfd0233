"""Shared by the bad-input catalogue (tests/test_bad_inputs*.py): run the CLI in process and check
that a mistake is exactly one ``error:`` line on stderr with exit status 2 and no traceback."""
from pathlib import Path

from textdiff.cli import main


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
