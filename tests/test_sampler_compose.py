"""Sampler choice and options compose (issue 30, item 2): naming a sampler keeps the model's saved
options that apply to it, an explicit option overrides, unknown options are one-line errors."""
import subprocess
import sys

import pytest

from textdiff.config import resolve_section
from textdiff.errors import ConfigError
from textdiff.samplers.base import compose_sampler_spec, describe_sampler

LLADA = {"name": "confidence", "ordering": "confidence", "commit_schedule": "linear", "temperature": 0.0}


def test_switching_sampler_keeps_the_saved_options_it_shares():
    spec, kept = compose_sampler_spec(LLADA, "threshold")
    assert spec["name"] == "threshold" and spec["temperature"] == 0.0 and kept == ["temperature"]
    assert "ordering" not in spec and "commit_schedule" not in spec  # confidence-only fields are dropped
    spec, kept = compose_sampler_spec(LLADA, "ancestral")
    assert spec["temperature"] == 0.0 and set(spec) <= {"name", "temperature", "top_k", "top_p", "cache_unchanged"}


def test_an_explicit_option_overrides_and_none_keeps_the_saved_sampler():
    spec, kept = compose_sampler_spec(LLADA, "threshold", {"temperature": 0.7, "threshold": 0.5})
    assert (spec["temperature"], spec["threshold"], kept) == (0.7, 0.5, [])
    spec, kept = compose_sampler_spec(LLADA, None, {"ordering": "margin"})
    assert spec["name"] == "confidence" and spec["ordering"] == "margin" and spec["temperature"] == 0.0
    spec, _ = compose_sampler_spec(LLADA, "confidence", {"temperature": 0})
    assert spec["temperature"] == 0 and spec["ordering"] == "confidence"


def test_a_mapping_is_the_whole_spec():
    spec, kept = compose_sampler_spec(LLADA, {"name": "threshold", "threshold": 0.3})
    assert spec["temperature"] == 1.0 and spec["threshold"] == 0.3 and kept == []


@pytest.mark.parametrize("sampler, options, words", [
    ("threshold", {"ordering": "margin"}, ["'threshold': unknown key(s) ['ordering']", "min_commit"]),
    ("ancestral", {"foo": 1}, ["'ancestral': unknown key(s) ['foo']", "temperature"]),
    (None, {"name": "threshold"}, ["cannot be 'name'"]),
])
def test_unknown_options_are_one_line_errors(sampler, options, words):
    with pytest.raises(ConfigError) as e:
        compose_sampler_spec(LLADA, sampler, options)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words)


def test_the_line_names_the_sampler_and_what_was_kept():
    spec, kept = compose_sampler_spec(LLADA, "threshold", {"threshold": 0.5})
    line = describe_sampler(resolve_section("sampler", spec, "sampler"), kept, "confidence")
    assert line == "sampler: threshold temperature=0.0 threshold=0.5 (kept from the model's confidence sampler: temperature)"


@pytest.mark.slow
def test_llada_api_and_cli_keep_greedy_decoding(tmp_path):
    from published_llm_helpers import FIXTURES, load_fixture

    llada = load_fixture("llada")
    kw = dict(max_new_tokens=8, steps=8, seed=3)
    greedy = llada.generate(["w1 w2"], sampler={"name": "threshold", "temperature": 0.0}, **kw)
    assert llada.generate(["w1 w2"], sampler="threshold", **kw) == greedy
    assert llada.generate(["w1 w2"], sampler="threshold", sampler_options={"temperature": 0}, **kw) == greedy
    assert llada.make_sampler("threshold").config.temperature == 0.0
    with pytest.raises(ConfigError, match="given twice"):
        llada.generate(["w1 w2"], temperature=0.5, sampler_options={"temperature": 0}, **kw)
    run = subprocess.run([sys.executable, "-m", "textdiff.cli", "generate", "--model", str(FIXTURES / "llada"),
                          "--prompt", "w1 w2", "--max-new-tokens", "8", "--sampler", "threshold",
                          "--sampler-option", "threshold=0.5"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "sampler: threshold temperature=0.0 threshold=0.5 (kept from the model's confidence sampler: temperature)" in run.stderr
    bad = subprocess.run([sys.executable, "-m", "textdiff.cli", "generate", "--model", str(FIXTURES / "llada"),
                          "--sampler-option", "ordering=margin", "--sampler", "threshold"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown key(s) ['ordering']" in bad.stderr
