"""The house: the import graph points one way, the registry is a leaf, and importing textdiff is cheap.

The graph is read from the source (every ``import`` / ``from ... import``, at module level or inside a
function, relative ones resolved), as ``python ../shared/tools/import_cycles.py textdiff`` does.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "textdiff"

#: circles still open, owned by another part of the restructure (issue 29, the saved-folder format):
#: the package's lazy ``DiffusionLM`` -> lm -> training.setup (PIPELINE_FILE) -> ... and hub -> textdiff
#: (``__version__``). Empty this list when they close; no other circle is tolerated.


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the textdiff modules it imports (``from pkg import name`` is ``pkg`` unless ``name`` is
    a submodule)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    edges[mod].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(comp)
    return found


def test_the_circle_finder_finds_circles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set(), "f": {"g"}, "g": {"f"}}
    assert sorted(map(sorted, circles(edges))) == [["a", "b", "c"], ["f", "g"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_textdiff():
    found = circles(import_graph())
    assert not found, f"import circles: {[sorted(c) for c in found]}"


#: the lower floors, lowest first (DESIGN.md, "Layers"): a module imports only from its own floor or below
FLOORS = [
    ["textdiff.errors", "textdiff.categorical", "textdiff.models.masks",  # masks: torch only (a leaf)
     "textdiff.signatures", "textdiff.chat_template"],  # errors only (chat_template: transformers when called)
    ["textdiff.registry", "textdiff.shipped"],  # shipped: where the packaged recipes are (errors only)
    ["textdiff.dataclass_io"],
    ["textdiff.schedules"],
    ["textdiff.processes"],
    ["textdiff.samplers"],
    ["textdiff.sft", "textdiff.tokenization", "textdiff.rl.config", "textdiff.adapt.config",
     "textdiff.adapt.block_schedule"],  # their section configs sit below config
    ["textdiff.config"],
]


def floor(module: str):
    for i, names in enumerate(FLOORS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


def test_the_lower_floors_import_only_downwards():
    edges = import_graph()
    upward = [f"{m} -> {t}" for m, targets in edges.items() if floor(m) is not None
              for t in targets if floor(t) is None or floor(t) > floor(m)]
    assert not upward, f"imports that point up: {upward}"
    assert edges["textdiff.registry"] == {"textdiff.errors"}  # the leaf


def _child(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


LOADED = '''
import json, sys
{imports}
mods = list(sys.modules)
print(json.dumps({{"modeling": [m for m in mods if m.startswith("transformers.models.") and ".modeling_" in m],
                   "loaded": sorted(m for m in {watch} if m in sys.modules)}}))
'''


def test_reading_a_recipe_imports_no_modeling_code():
    code = LOADED.format(imports="import textdiff.config\ntextdiff.config.load_recipe(raw={'process': 'block'})",
                         watch=["transformers", "datasets", "textdiff.models.published", "textdiff.lm"])
    out = _child(code)
    assert out["modeling"] == [] and out["loaded"] == []


def test_the_cli_and_the_package_import_no_torch():
    out = _child(LOADED.format(imports="import textdiff, textdiff.cli\ntextdiff.available('sampler')",
                               watch=["torch", "transformers", "datasets", "textdiff.models.published"]))
    assert out["modeling"] == [] and out["loaded"] == []


def test_listing_the_published_families_imports_no_transformers():
    """``textdiff list`` reads the family table without importing any family's modeling code."""
    out = _child(LOADED.format(imports="from textdiff.models import published\npublished.available()",
                               watch=["transformers", "datasets"]))
    assert out["modeling"] == [] and out["loaded"] == []


def test_the_builtin_table_names_what_each_module_registers():
    """BUILTINS (imported lazily) and the modules' own @register agree, name for name."""
    from textdiff import registry

    for kind, table in registry.BUILTINS.items():
        for name, module in table.items():
            cls = registry.lookup(kind, name)
            assert cls.registered_name == name and cls.__module__ == module, (kind, name, cls)
        assert set(registry._REGISTRY[kind]) >= set(table)  # (and tests may register more)
    for kind in registry.KINDS:  # nothing registers a built-in-looking name the table lacks
        assert {n for n, c in registry._REGISTRY[kind].items() if c.__module__.startswith("textdiff.")} == set(registry.BUILTINS[kind])


def test_an_unknown_name_is_a_one_line_error_naming_the_known_ones():
    from textdiff.errors import ConfigError
    from textdiff.registry import lookup

    with pytest.raises(ConfigError, match=r"unknown sampler 'ancestor'; available: analytic, ancestral, confidence, editing, entropy_bound, euler, first_hitting, multi_block, remdm, threshold$"):
        lookup("sampler", "ancestor")


def test_native_model_types_are_the_network_classes_types():
    from textdiff.models import NATIVE_MODEL_TYPES
    from textdiff.models.modeling_bidirectional import NATIVE_CLASSES
    from textdiff.models.modeling_moe import MOE_CLASSES

    assert set(NATIVE_MODEL_TYPES) == {"textdiff", *NATIVE_CLASSES, *MOE_CLASSES}
    assert all(config.model_type == kind for kind, (config, _) in {**NATIVE_CLASSES, **MOE_CLASSES}.items())


AUTO = '''
import json, sys
{first}
import textdiff
after_import = [m for m in sys.modules if m.startswith("transformers.models.") and ".modeling_" in m]
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
model = AutoModel.from_pretrained(sys.argv[1])
masked = AutoModelForMaskedLM.from_pretrained(sys.argv[1])
print(json.dumps({{"after_import": after_import, "types": [type(model).__module__, type(masked).__name__],
                   "native": "textdiff_llama" in __import__("transformers").models.auto.configuration_auto.CONFIG_MAPPING}}))
'''


@pytest.mark.parametrize("first", ["", "from transformers import AutoModel",
                                   "import transformers.models.llama.modeling_llama"],
                         ids=["textdiff first", "auto classes first", "llama modeling first"])
@pytest.mark.slow
def test_auto_classes_load_a_textdiff_folder_after_import_textdiff(tmp_path, first):
    """``import textdiff`` imports no modeling code, yet the Auto classes know textdiff's network when
    transformers loads them: whichever comes first (transformers' Llama modeling imports the Auto
    classes midway through its own import: the bidirectional decoders are then left to textdiff's
    loaders, textdiff's own network is registered)."""
    import torch

    from textdiff.models import TextDiffConfig, TextDiffModel

    torch.manual_seed(0)
    TextDiffModel(TextDiffConfig(vocab_size=11, hidden_size=16, num_layers=1, num_heads=2)).save_pretrained(tmp_path)
    done = subprocess.run([sys.executable, "-c", AUTO.format(first=first), str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["types"] == ["textdiff.models.modeling_textdiff", "TextDiffModel"]
    if not first:
        assert out["after_import"] == [] and out["native"]
    if first == "from transformers import AutoModel":
        assert out["native"]
