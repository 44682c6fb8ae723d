"""The layering rules of docs/architecture.md, read from the source with ``ast``.

* ``nic`` (the library) imports neither ``preprocess`` nor ``eval``; ``preprocess`` and ``eval``
  import ``nic`` and not each other; only the entry points (train.py, caption.py) and the
  benches compose packages.
* No import cycles between modules (not even through a function-level import).
* Size: no module of nic/, eval/ or preprocess/ over 450 lines, no function over 60 lines
  outside tests. A module that is mostly a data table says so with the marker comment
  ``# architecture: data table`` and a reason; it is then exempt from the file-size rule only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nic", "eval", "preprocess")
# which project packages each package may import (itself always)
ALLOWED = {"nic": set(), "eval": {"nic"}, "preprocess": {"nic"}}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 450, 60
DATA_TABLE_MARKER = "# architecture: data table"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return files + sorted((ROOT / "bench").glob("*.py")) + [ROOT / "train.py", ROOT / "caption.py"]


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere in it (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:  # "nic.search.beam_search" -> "nic.search"
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = project_files()
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, known) for p in files}


def test_the_graph_is_read(graph):
    # the reader must see real edges, or every rule below would pass vacuously
    assert "nic.search" in graph["nic.captioner"]
    assert "nic" not in graph or isinstance(graph["nic"], set)
    assert any(dep.startswith("nic.") for dep in graph["eval.bleu_report"])
    assert {"preprocess.build", "nic.training"} <= graph["train"]


def test_packages_import_one_way(graph):
    wrong = []
    for module, deps in graph.items():
        pkg = module.split(".")[0]
        if pkg not in ALLOWED:
            continue  # entry points and benches compose the packages
        for dep in deps:
            dep_pkg = dep.split(".")[0]
            if dep_pkg in PACKAGES and dep_pkg != pkg and dep_pkg not in ALLOWED[pkg]:
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "imports against the layering (docs/architecture.md):\n" + "\n".join(sorted(wrong))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_module_and_function_sizes():
    too_long = []
    for path in project_files():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        lines = text.count("\n")
        if rel.parts[0] in PACKAGES and lines > MAX_FILE_LINES and DATA_TABLE_MARKER not in text:
            too_long.append(f"{rel}: {lines} lines (max {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}(): {n} lines (max {MAX_FUNCTION_LINES})")
    assert not too_long, "\n".join(too_long)
