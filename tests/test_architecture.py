"""Architecture checks that import-linter does not make (docs/architecture.md, "Checks").

* The module import graph of ``kerasq`` and ``converters`` (``converters`` is installed as
  ``kerasq.converters``), built from every import statement, those inside functions
  included, has no cycle. import-linter checks cycles between sibling packages only.
* No module names a module of a higher layer (the layers contract in pyproject.toml) in a
  string either: lazy export tables (``_LAZY_ATTRS = {"f": "kerasq.x.y"}``) and
  ``importlib.import_module("kerasq.x")`` load modules that import-linter does not see.
* Code, tests and docs name no machine paths and tell no development history.
"""

from __future__ import annotations

import ast
import pathlib
import re
import tomllib
from typing import Dict, List, Optional, Set, Tuple

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"kerasq": REPO / "kerasq", "kerasq.converters": REPO / "converters"}


def _module_files() -> Dict[str, pathlib.Path]:
    modules = {}
    for prefix, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([prefix, *parts])] = path
    return modules


def _absolute(name: str) -> str:
    return "kerasq.converters" + name[len("converters"):] if name.split(".")[0] == (
        "converters") else name


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree``, function bodies included, except ``if TYPE_CHECKING:`` blocks
    (imports for type annotations only, never executed)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = getattr(child, "test", None) if isinstance(child, ast.If) else None
            if test is not None and "TYPE_CHECKING" in ast.unparse(test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _imports(module: str, path: pathlib.Path, known: Set[str]) -> Set[str]:
    """Modules of ``known`` that ``module`` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: Set[str] = set()

    def add(name: str) -> None:
        name = _absolute(name)
        while name and name not in known:  # kerasq.x.attr -> kerasq.x
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                full = _absolute(f"{source}.{alias.name}")
                add(full if full in known else source)
    return found


def _find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_function_level_cycle(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("if TYPE_CHECKING:\n    import kerasq.c\ndef f():\n    from kerasq.b import g\n")
    b = tmp_path / "b.py"
    b.write_text("from kerasq import a\n")
    known = {"kerasq", "kerasq.a", "kerasq.b", "kerasq.c"}
    graph = {"kerasq.a": _imports("kerasq.a", a, known), "kerasq.b": _imports("kerasq.b", b, known)}
    assert graph["kerasq.a"] == {"kerasq.b"}  # the annotation-only import is not an edge
    assert _find_cycle(graph) == ["kerasq.a", "kerasq.b", "kerasq.a"]


def test_module_import_graph_is_acyclic():
    files = _module_files()
    known = set(files)
    graph = {module: _imports(module, path, known) for module, path in files.items()}
    assert sum(len(v) for v in graph.values()) > 200  # the scan sees the real imports
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _layers() -> List[Set[str]]:
    """The packages of each layer of pyproject's layers contract, highest layer first."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"]
                   if c["type"] == "layers"]
    return [{p.strip() for p in re.split(r"[|:]", layer)} for layer in contract["layers"]]


def _layer_of(module: str, layers: List[Set[str]]) -> Optional[int]:
    """Index of the layer holding ``module`` (0 = highest), None outside the layers."""
    for index, packages in enumerate(layers):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return index
    return None


def _module_strings(path: pathlib.Path, known: Set[str]) -> Set[str]:
    """Known module names written as whole string constants anywhere in ``path`` (lazy
    export tables, ``importlib.import_module`` arguments, ...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = _absolute(node.value.strip())
            if name in known:
                found.add(name)
    return found


def _upward_string_refs(files: Dict[str, pathlib.Path], layers: List[Set[str]]
                        ) -> List[Tuple[str, str]]:
    known = set(files) | set().union(*layers)
    offenders = []
    for module, path in sorted(files.items()):
        own = _layer_of(module, layers)
        if own is None:
            continue
        for name in sorted(_module_strings(path, known)):
            other = _layer_of(name, layers)
            if other is not None and other < own:
                offenders.append((module, name))
    return offenders


def test_upward_string_finder_finds_a_lazy_export_and_an_import_module(tmp_path):
    lower = tmp_path / "lower.py"
    lower.write_text('"""Docs name kerasq.top freely."""\n'
                     '_LAZY_ATTRS = {"f": "kerasq.top.impl", "g": "kerasq.low.other"}\n')
    other = tmp_path / "other.py"
    other.write_text('import importlib\ndef f():\n    importlib.import_module("kerasq.top")\n')
    layers = [{"kerasq.top"}, {"kerasq.low"}]
    files = {"kerasq.low.lower": lower, "kerasq.low.other": other, "kerasq.top.impl": other}
    assert _upward_string_refs(files, layers) == [
        ("kerasq.low.lower", "kerasq.top.impl"), ("kerasq.low.other", "kerasq.top")]


def test_no_lower_layer_names_a_higher_one_in_a_string():
    files = _module_files()
    layers = _layers()
    assert {"kerasq.prune", "kerasq.dispatch", "kerasq.keras3"} <= set().union(*layers)
    strings = {m: _module_strings(p, set(files)) for m, p in files.items()}
    assert "kerasq.prune.api" in strings["kerasq.prune"]  # the scan reads the lazy tables
    offenders = _upward_string_refs(files, layers)
    assert not offenders, "lower layer names a higher one: " + ", ".join(
        f"{m} -> {n}" for m, n in offenders)


# Text that tells who worked on what, or where a machine keeps files: built from pieces so
# this file does not match itself.
_HISTORY = re.compile("|".join([r"\bengineer", r"second\s+half", r"\bC2\s+layers"]), re.I)
_MACHINE_PATH = re.compile("|".join([r"/wo" + r"rk/", r"/ho" + r"me/"]))
_TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".cc", ".h", ".bzl", ".sh",
                  ".prototxt", ".yml", ".yaml", ".json"}
_TEXT_NAMES = {"BUILD", "WORKSPACE", "run"}
_SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "build",
              "dist", ".import_linter_cache"}


def _text_files():
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if not path.is_file() or _SKIP_DIRS.intersection(rel.parts) or rel.parts[0].endswith(
                ".egg-info"):
            continue
        if path.suffix in _TEXT_SUFFIXES or path.name in _TEXT_NAMES:
            yield rel, path


def test_no_history_words_or_machine_paths_in_code_tests_and_docs():
    offenders = []
    scanned = 0
    for rel, path in _text_files():
        if path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        scanned += 1
        for n, line in enumerate(text.splitlines(), 1):
            if _HISTORY.search(line) or _MACHINE_PATH.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert scanned > 100
    assert not offenders, "history words or machine paths:\n" + "\n".join(offenders)
