"""What every benchmark writes: the machine's name and the results as JSON and Markdown."""
from __future__ import annotations

import json
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    """The processor's model name and architecture, e.g. "AMD EPYC (x86_64)"."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    return f"{cpu or platform.machine()} ({platform.machine()})"


def save(name: str, rows: list, meta: dict, text: str) -> None:
    """results/<name>.json (meta and rows) and results/<name>.md (``text``), and print the text."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / f"{name}.md").write_text(text + "\n")
    print(text)


def sections(rows: list, titles: dict) -> list:
    """Markdown lines: one table per ``section`` of ``rows`` (dicts; columns in order of appearance,
    blank where a row has no value), under ``## titles[section]``; sections without rows are left out."""
    out = []
    for sec, title in titles.items():
        part = [r for r in rows if r["section"] == sec]
        if not part:
            continue
        keys = []
        for r in part:
            keys += [k for k in r if k != "section" and k not in keys]
        out += [f"## {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        out += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in part] + [""]
    return out
