#!/usr/bin/env python3
"""Lint of the Bazel files (Bazel itself is not needed): WORKSPACE, BUILD, */BUILD, *.bzl.

Starlark is a subset of Python's syntax, so every file is parsed with :mod:`ast` and
checked for:

* syntax, and Python-only constructs Starlark rejects (import, class, while, try, global);
* ``load("//pkg:file.bzl", ...)`` labels pointing at files that exist, loading names
  the .bzl file defines;
* every source/header named in a BUILD file existing on disk;
* the ops library's ``srcs``/``hdrs`` in kerasq/ops/BUILD being exactly ``SOURCES`` /
  ``HEADERS`` of kerasq/ops/_build_ext.py, and ``KERASQ_COPTS`` in kerasq_ops.bzl being
  exactly its ``CXXFLAGS`` (so the Bazel and the setup.py builds cannot drift apart);
* a plain version number in .bazelversion.

Usage: ``python tools/lint_bazel.py [repo_root]``; exit status 1 and one line per problem
(``file:line: message``) on failure.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS_BUILD = os.path.join("kerasq", "ops", "BUILD")
BUILD_EXT = os.path.join("kerasq", "ops", "_build_ext.py")
MACRO_FILE = "kerasq_ops.bzl"
_FORBIDDEN = (ast.Import, ast.ImportFrom, ast.ClassDef, ast.While, ast.Try, ast.Global,
              ast.Nonlocal, ast.Lambda, ast.With, ast.AsyncFunctionDef, ast.Yield)


def _bazel_files(root: str) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "bazel-", "build"))
                       and d not in ("node_modules", "__pycache__")]
        for f in filenames:
            if f in ("BUILD", "BUILD.bazel", "WORKSPACE", "WORKSPACE.bazel") or f.endswith(".bzl"):
                found.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(found)


def _string_list(node: ast.AST) -> Optional[List[str]]:
    if isinstance(node, (ast.List, ast.Tuple)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return [e.value for e in node.elts]
    return None


def _assigned_lists(tree: ast.AST) -> Dict[str, List[str]]:
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name):
            values = _string_list(node.value)
            if values is not None:
                out[node.targets[0].id] = values
    return out


def _defined_names(tree: ast.Module) -> set:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _label_path(label: str, current: str) -> Optional[str]:
    if label.startswith("@"):
        return None  # external repository
    if label.startswith("//"):
        pkg, _, name = label[2:].partition(":")
        return os.path.join(pkg, name) if name else None
    if label.startswith(":"):
        return os.path.join(os.path.dirname(current), label[1:])
    return os.path.join(os.path.dirname(current), label)


def lint(root: str = ROOT) -> List[str]:
    """All problems found, as ``file:line: message`` strings (empty if clean)."""
    problems: List[str] = []
    trees: Dict[str, ast.Module] = {}
    files = _bazel_files(root)
    for required in ("WORKSPACE", "BUILD", OPS_BUILD, MACRO_FILE, "tf_configure.bzl"):
        if required not in files:
            problems.append(f"{required}:0: missing")
    for rel in files:
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            text = f.read()
        try:
            tree = ast.parse(text, filename=rel)
        except SyntaxError as exc:
            problems.append(f"{rel}:{exc.lineno}: not valid Starlark syntax: {exc.msg}")
            continue
        trees[rel] = tree
        for node in ast.walk(tree):
            if isinstance(node, _FORBIDDEN):
                problems.append(f"{rel}:{node.lineno}: {type(node).__name__} is not Starlark")
    for rel, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id == "load" and node.args:
                label = node.args[0].value if isinstance(node.args[0], ast.Constant) else None
                path = _label_path(label, rel) if isinstance(label, str) else None
                if path is None:
                    continue
                if path not in trees:
                    problems.append(f"{rel}:{node.lineno}: load() of missing file {label}")
                    continue
                defined = _defined_names(trees[path])
                for arg in node.args[1:]:
                    if isinstance(arg, ast.Constant) and arg.value not in defined:
                        problems.append(f"{rel}:{node.lineno}: {label} defines no {arg.value!r}")
            if os.path.basename(rel).startswith("BUILD"):
                for kw in node.keywords:
                    if kw.arg in ("srcs", "hdrs", "data"):
                        for src in _string_list(kw.value) or []:
                            path = os.path.join(os.path.dirname(rel), src)
                            if not src.startswith((":", "@", "//")) and not os.path.exists(
                                    os.path.join(root, path)):
                                problems.append(f"{rel}:{node.lineno}: {kw.arg} entry {src} "
                                                "does not exist")
    problems += _check_in_step(root, trees)
    version_file = os.path.join(root, ".bazelversion")
    if not os.path.exists(version_file):
        problems.append(".bazelversion:0: missing")
    else:
        with open(version_file, encoding="utf-8") as f:
            if not re.fullmatch(r"\d+\.\d+\.\d+\s*", f.read()):
                problems.append(".bazelversion:1: must be a version like 7.4.1")
    return problems


def _check_in_step(root: str, trees: Dict[str, ast.Module]) -> List[str]:
    """The Bazel source list and flags equal setup.py's (kerasq/ops/_build_ext.py)."""
    problems = []
    with open(os.path.join(root, BUILD_EXT), encoding="utf-8") as f:
        ext = _assigned_lists(ast.parse(f.read()))
    rule = None
    for node in ast.walk(trees.get(OPS_BUILD, ast.Module(body=[], type_ignores=[]))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "kerasq_custom_op_library"):
            rule = node
    if rule is None:
        return [f"{OPS_BUILD}:0: no kerasq_custom_op_library rule"]
    attrs = {kw.arg: _string_list(kw.value) for kw in rule.keywords}
    for attr, name in (("srcs", "SOURCES"), ("hdrs", "HEADERS")):
        if sorted(attrs.get(attr) or []) != sorted(ext.get(name, [])):
            problems.append(f"{OPS_BUILD}:{rule.lineno}: {attr} {attrs.get(attr)} != "
                            f"{BUILD_EXT} {name} {ext.get(name)}")
    copts = _assigned_lists(trees.get(MACRO_FILE, ast.Module(body=[], type_ignores=[])))
    if copts.get("KERASQ_COPTS") != ext.get("CXXFLAGS"):
        problems.append(f"{MACRO_FILE}:0: KERASQ_COPTS {copts.get('KERASQ_COPTS')} != "
                        f"{BUILD_EXT} CXXFLAGS {ext.get('CXXFLAGS')}")
    return problems


def main(argv: List[str]) -> int:
    root = os.path.abspath(argv[1]) if len(argv) > 1 else ROOT
    problems = lint(root)
    for p in problems:
        print(p)
    if not problems:
        print(f"bazel lint: {len(_bazel_files(root))} files OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
