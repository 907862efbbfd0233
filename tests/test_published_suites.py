"""The published evaluation suites (evaluation/suites/published/*.yaml) run end to end on the tiny
published-layout fixtures: the model path, tokenizer and data are overridden (a tiny local text
file, 16-token rows, 2 t samples, 2 rows), everything else is the suite as committed. Each suite must
pin its protocol (tokenizer, context, layout, t samples) and name its published source, and produce a
finite NELBO for every task."""
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from test_published_sedd_duo import word_tokenizer  # noqa: E402

SUITES = ROOT / "evaluation" / "suites" / "published"
FIX = ROOT / "tests" / "fixtures" / "published"
# suite -> the tiny fixture in the same published layout
FIXTURE = {
    "mdlm": FIX / "mdlm" / "owt",
    "bd3lm-L4": FIX / "bd3lm" / "owt-block4",
    "bd3lm-L8": FIX / "bd3lm" / "owt-block4",
    "bd3lm-L16": FIX / "bd3lm" / "owt-block4",
    "sedd-small": FIX / "sedd" / "absorb",
    "sedd-medium": FIX / "sedd" / "absorb",
    "duo": FIX / "duo" / "model",
    "udlm-lm1b": FIX / "udlm" / "model",
}
# (tokenizer size, [MASK] id): OWT absorbing models have [MASK] as the last row; DUO's 64 rows are
# 63 tokens + the [MASK] textdiff appends (GPT-2 + [MASK]); UDLM's [MASK] sits inside (BERT's)
TOKENIZER = {"duo": (63, None), "udlm-lm1b": (64, 5)}


def test_every_family_has_a_suite():
    assert sorted(p.stem for p in SUITES.glob("*.yaml")) == sorted(FIXTURE)


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_suite_pins_its_protocol(name):
    raw = yaml.safe_load((SUITES / f"{name}.yaml").read_text())
    want_len, want_layout = (128, "pad") if name == "udlm-lm1b" else (1024, "wrap")
    assert raw["models"][0]["tokenizer"].endswith("bert-base-uncased" if name == "udlm-lm1b" else "gpt2")
    for task in raw["tasks"]:
        assert task["metric"] == "likelihood"
        assert task["seq_len"] == want_len and task["layout"] == want_layout and task["t_samples"] >= 1
        assert "Published (perplexity bound" in task["dataset"]["protocol"]
        assert not Path(task["dataset"]["path"]).is_absolute()  # the shared data beside the checkout


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_suite_runs_on_the_tiny_fixture(name, tmp_path):
    from textdiff.harness.run import main

    fixture = FIXTURE[name]
    V = json.loads((fixture / "config.json").read_text()).get("vocab_size", 64)  # SEDD's config: 63 tokens + [MASK]
    word_tokenizer(*TOKENIZER.get(name, (V, V - 1))).save_pretrained(tmp_path / "tok")
    data = tmp_path / "data.txt"
    data.write_text("\n".join(" ".join(f"w{(7 * i + j) % 50 + 6}" for j in range(9)) for i in range(12)) + "\n")
    raw = yaml.safe_load((SUITES / f"{name}.yaml").read_text())
    argv = [str(SUITES / f"{name}.yaml"), f"models.0.path={fixture}", f"models.0.tokenizer={tmp_path / 'tok'}",
            f"output_dir={tmp_path / 'out'}", "max_rows=2", "device=cpu"]
    for i in range(len(raw["tasks"])):
        argv += [f"tasks.{i}.dataset.path={data}", f"tasks.{i}.dataset.format=lines", f"tasks.{i}.seq_len=16",
                 f"tasks.{i}.t_samples=2", f"tasks.{i}.bootstrap=20"]
    report = json.loads(main(argv).read_text())
    assert [r["task"] for r in report["results"]] == [t["name"] for t in raw["tasks"]]
    for r in report["results"]:
        assert r["rows"] == 2 and r["layout"] == raw["tasks"][0]["layout"]
        assert math.isfinite(r["nelbo"]) and r["nelbo"] > 0
    assert report["models"][0]["process"]["name"] == {"sedd": "sedd_absorb", "duo": "uniform", "udlm": "uniform",
                                                      "mdlm": "masked", "bd3lm": "block"}[name.split("-")[0]]
