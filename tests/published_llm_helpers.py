"""Shared by the LLaDA / Dream / LLaDA-MoE / LLaDA 2.0 tests: the fixture folders, their loads and
the publisher's expected outputs stored beside them."""
from pathlib import Path

from safetensors.torch import load_file

from textdiff.lm import DiffusionLM

FIXTURES = Path(__file__).parent / "fixtures" / "published"


def load_fixture(name, **kw):
    return DiffusionLM.from_pretrained(FIXTURES / name, device="cpu", **kw)


def fixture_expected(name):
    return load_file(str(FIXTURES / name / "expected.safetensors"))


def relative(a, b):
    """max |a − b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())
