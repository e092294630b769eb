"""No unsafe loading anywhere in kerasq: no pickle, no eval/exec, no Lambda layers, numpy
loads without pickle, Keras safe mode kept.

The scan parses the Python sources of ``kerasq/`` and ``converters/`` (AST: imports,
names, attribute ``.Lambda``, keyword arguments; words in strings, comments and attribute
names such as ``args.eval`` do not count). A legitimate exception goes into ALLOWED with
its justification.
"""

from __future__ import annotations

import ast
import io
import pathlib
import tokenize
from typing import Dict, List, Tuple

import numpy as np
import pytest
from conftest import REPO_ROOT

SCANNED = [REPO_ROOT / "kerasq", REPO_ROOT / "converters"]
GENERATED = {"caffe_pb2.py"}  # protoc output: no calls, only descriptors

# (relative path, finding) -> justification. Keep empty unless truly needed.
ALLOWED: Dict[Tuple[str, str], str] = {}

BANNED_NAMES = {
    "pickle": "pickle executes code on load",
    "cPickle": "pickle executes code on load",
    "dill": "pickle variant",
    "cloudpickle": "pickle variant",
    "marshal": "code objects on load",
    "shelve": "pickle-backed",
    "eval": "evaluates strings as code",
    "exec": "executes strings as code",
    "Lambda": "Keras Lambda layers deserialize Python bytecode",
}
BANNED_KEYWORDS = {
    ("allow_pickle", True): "np.load must use allow_pickle=False",
    ("safe_mode", False): "Keras safe mode must stay on",
    ("enable_unsafe_deserialization", None): "Keras unsafe deserialization",
}


def _sources() -> List[pathlib.Path]:
    files = []
    for root in SCANNED:
        files.extend(p for p in root.rglob("*.py") if p.name not in GENERATED)
    return sorted(files)


def _name_tokens(path: pathlib.Path) -> List[Tuple[int, str]]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return [(t.start[0], t.string) for t in tokens if t.type == tokenize.NAME]


def _findings(path: pathlib.Path) -> List[Tuple[int, str, str]]:
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in BANNED_NAMES:
                    found.append((node.lineno, root, BANNED_NAMES[root]))
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in BANNED_NAMES:
                found.append((node.lineno, root, BANNED_NAMES[root]))
        elif isinstance(node, ast.Name) and node.id in BANNED_NAMES:
            found.append((node.lineno, node.id, BANNED_NAMES[node.id]))
        elif isinstance(node, ast.Attribute) and node.attr == "Lambda":
            found.append((node.lineno, "Lambda", BANNED_NAMES["Lambda"]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                for (name, value), why in BANNED_KEYWORDS.items():
                    if kw.arg != name:
                        continue
                    literal = isinstance(kw.value, ast.Constant)
                    if value is None or not literal or kw.value.value is value:
                        found.append((node.lineno, f"{name}=", why))
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == "load" and isinstance(func, ast.Attribute):
                owner = getattr(func.value, "id", "")
                if owner in ("np", "numpy") and not any(
                    kw.arg == "allow_pickle"
                    and isinstance(kw.value, ast.Constant)
                    and kw.value.value is False
                    for kw in node.keywords
                ):
                    found.append((node.lineno, "np.load", "np.load without allow_pickle=False"))
            if called == "__import__" and node.args and not isinstance(
                node.args[0], ast.Constant
            ):
                found.append((node.lineno, "__import__", "dynamic import of a computed name"))
    return found


def test_scanner_finds_what_it_should(tmp_path):
    """The scanner is not vacuous: it flags each banned construct in a sample file."""
    sample = tmp_path / "bad.py"
    sample.write_text(
        "import pickle\n"
        "x = eval('1')\n"
        "exec('y = 2')\n"
        "import numpy as np\n"
        "a = np.load('f.npy')\n"
        "b = np.load('f.npy', allow_pickle=True)\n"
        "m = load_model('m.keras', safe_mode=False)\n"
        "layer = keras.layers.Lambda(lambda t: t)\n"
        "s = 'eval( in a string is fine'  # and pickle in a comment too\n"
        "t = args.eval  # an attribute named eval is not the builtin\n"
    )
    words = sorted({w for _, w, _ in _findings(sample)})
    assert words == sorted(
        ["pickle", "eval", "exec", "np.load", "allow_pickle=", "safe_mode=", "Lambda"]
    )
    assert all(line <= 8 for line, _, _ in _findings(sample))


def test_no_unsafe_loading_in_sources():
    files = _sources()
    assert len(files) > 30
    problems = []
    for path in files:
        rel = str(path.relative_to(REPO_ROOT))
        for line, word, why in _findings(path):
            if (rel, word) not in ALLOWED:
                problems.append(f"{rel}:{line}: {word}: {why}")
    assert not problems, "unsafe constructs:\n" + "\n".join(problems)


def test_no_pickle_inside_generated_protobuf_module():
    for root in SCANNED:
        for path in root.rglob("caffe_pb2.py"):
            words = {w for _, w in _name_tokens(path)}
            assert not words & {"pickle", "eval", "exec", "marshal"}, path


def test_load_model_keeps_keras_safe_mode_for_every_format(tmp_path):
    """A saved Lambda holds marshalled Python bytecode: kerasq.load_model refuses it from
    .h5 (tf_keras alone would run it) and .keras; from SavedModel the layer is revived from
    its traced TF graph (no Python bytecode is loaded)."""
    import kerasq
    from kerasq._compat import keras
    from kerasq.errors import DataError, ModelFormatError

    inp = keras.Input((2,))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
    model.save(tmp_path / "lambda.h5", save_format="h5")
    model.save(tmp_path / "lambda.keras")
    model.save(tmp_path / "lambda_savedmodel", save_format="tf")
    for name in ("lambda.h5", "lambda.keras"):
        # refused by the file check (config modules) before Keras reads it, or by safe mode
        with pytest.raises((DataError, ModelFormatError), match="Lambda"):
            kerasq.load_model(tmp_path / name)
    revived = kerasq.load_model(tmp_path / "lambda_savedmodel")
    layer = revived.layers[-1]
    assert type(layer).__name__ != "Lambda" or "RevivedLayer" in [
        c.__name__ for c in type(layer).__mro__
    ]
    np.testing.assert_array_equal(revived(np.ones((1, 2), np.float32)).numpy(), [[2.0, 2.0]])


def test_cli_inspect_refuses_lambda_bytecode(tmp_path, capsys):
    """``kerasq inspect`` loads models itself: same safe mode, one-line error, status 2."""
    from kerasq._compat import keras
    from kerasq.cli import main

    inp = keras.Input((2,))
    keras.Model(inp, keras.layers.Lambda(lambda t: t + 1.0)(inp)).save(
        tmp_path / "lambda.h5", save_format="h5"
    )
    assert main(["inspect", str(tmp_path / "lambda.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lambda.h5" in err[0] and "Lambda" in err[0]
