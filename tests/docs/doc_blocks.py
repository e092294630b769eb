"""Extract the fenced code blocks of README.md and docs/*.md and run them.

Imported by ``test_doc_blocks.py`` (extraction, exemptions) and run as a script in a
subprocess (``python doc_blocks.py SPEC.json``) that executes one Markdown file's blocks in
order, in one namespace / one working directory, and prints a JSON list of failures, each
naming ``file:line``.

What a block promises is checked where the text states it:

* python: a one-line statement whose comment is a literal (``dfp_quantize(...)  #
  array([3.1875, 0., 3.96875])``, ``fl = ...  # 5: range ...``) must give that value;
  ``# == expr`` / ``# True`` style promises are checked by the per-file checks in the test;
* bash: every command must exit 0, and every file it names as output (``-o``, ``--tflite``,
  ``--report``, ``--json``, ``--save-config``) must exist afterwards.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import traceback
from typing import Any, Dict, List, Optional, Tuple

FENCE = re.compile(r"^```(\w*)\s*$")
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash",
             "shell": "bash", "console": "bash"}
OUTPUT_FLAGS = ("-o", "--output", "--tflite", "--report", "--json", "--save-config")


@dataclasses.dataclass
class Block:
    file: str  # path relative to the repository root
    line: int  # line of the first code line
    lang: str  # "python" | "bash"
    code: str


def extract(path: pathlib.Path, root: pathlib.Path) -> List[Block]:
    """Every ```python / ```bash block of a Markdown file (other languages are output)."""
    blocks: List[Block] = []
    lang: Optional[str] = None
    start = 0
    lines: List[str] = []
    inside = False
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(text)
        if match and not inside:
            inside, lang, start, lines = True, match.group(1).lower(), number + 1, []
        elif text.startswith("```") and inside:
            inside = False
            if lang in RUN_LANGS:
                blocks.append(Block(str(path.relative_to(root)), start, RUN_LANGS[lang],
                                    "\n".join(lines) + "\n"))
        elif inside:
            lines.append(text)
    return blocks


def bash_commands(block: Block) -> List[Tuple[int, str]]:
    """(line, command) for each command of a bash block; continuation lines joined,
    comments and blank lines dropped."""
    commands: List[Tuple[int, str]] = []
    pending, first = "", 0
    for offset, text in enumerate(block.code.splitlines()):
        stripped = text.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            first = block.line + offset
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        pending += stripped
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quoted string goes on over the next line
            pending += "\n"
            continue
        commands.append((first, pending))
        pending = ""
    if pending:
        commands.append((first, pending))
    return commands


# ------------------------------------------------------------------------------ promises
def _comment(source_line: str) -> Optional[str]:
    """The trailing comment of a line (None if none), using the tokenizer's view."""
    import io
    import tokenize

    try:
        for tok in tokenize.generate_tokens(io.StringIO(source_line).readline):
            if tok.type == tokenize.COMMENT:
                return tok.string[1:].strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return None


def promised_value(comment: str) -> Tuple[bool, Any]:
    """(True, value) if the comment starts with a Python literal (a number, list, tuple,
    bool, or ``array([...])``), as in ``# 5: range ...`` or ``# array([3.1875, 0.])``."""
    candidates = [comment, comment.split(":")[0], comment.split(";")[0],
                  comment.split(" (")[0]]
    for text in candidates:
        text = text.strip().rstrip(",")
        if text.startswith("array(") and text.endswith(")"):
            text = text[len("array("):-1]
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (bool, int, float, list, tuple)):
            return True, value
    return False, None


def _numeric(value: Any) -> bool:
    import numpy as np

    if hasattr(value, "numpy"):
        return True
    if isinstance(value, (bool, int, float, np.ndarray, np.generic)):
        return True
    return isinstance(value, (list, tuple)) and all(_numeric(v) for v in value)


def _matches(actual: Any, expected: Any) -> bool:
    import numpy as np

    try:
        actual_arr = np.asarray(actual.numpy() if hasattr(actual, "numpy") else actual,
                                dtype=np.float64)
        return bool(np.allclose(actual_arr, np.asarray(expected, np.float64), rtol=1e-6,
                                atol=1e-9, equal_nan=True)
                    and actual_arr.shape == np.asarray(expected).shape)
    except (TypeError, ValueError):
        return actual == expected


def run_python(block: Block, namespace: Dict[str, Any], failures: List[Dict[str, Any]]) -> None:
    """Run a block statement by statement; check literal comment promises."""
    source_lines = block.code.splitlines()
    try:
        tree = ast.parse(block.code, filename=block.file)
    except SyntaxError as err:
        failures.append({"where": f"{block.file}:{block.line + (err.lineno or 1) - 1}",
                         "error": f"SyntaxError: {err.msg}"})
        return
    for statement in tree.body:
        ast.increment_lineno(statement, block.line - 1)
        where = f"{block.file}:{statement.lineno}"
        single = statement.lineno == statement.end_lineno
        comment = _comment(source_lines[statement.lineno - block.line]) if single else None
        has_promise, expected = promised_value(comment) if comment else (False, None)
        try:
            if isinstance(statement, ast.Expr):
                code = compile(ast.Expression(statement.value), block.file, "eval")
                value = eval(code, namespace)  # noqa: S307 - running the docs is the test
            else:
                exec(compile(ast.Module([statement], []), block.file, "exec"), namespace)
                value = None
                if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                        and isinstance(statement.targets[0], ast.Name):
                    value = namespace.get(statement.targets[0].id)
                else:
                    has_promise = False  # no single value to compare
        except BaseException as err:  # noqa: BLE001 - report any failure with its line
            tb = traceback.extract_tb(err.__traceback__)
            frames = [f for f in tb if f.filename == block.file]
            line = frames[-1].lineno if frames else statement.lineno
            message = str(err).splitlines()[0] if str(err) else ""
            failures.append({"where": f"{block.file}:{line}",
                             "error": f"{type(err).__name__}: {message}"})
            return  # later statements of the block depend on this one
        if has_promise and _numeric(value) and not _matches(value, expected):
            failures.append({"where": where,
                             "error": f"comment promises {expected!r}, got {value!r}"})


def _outputs(command: str) -> List[str]:
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return []
    reads_tflite = len(words) > 1 and words[1] in ("inspect", "eval")  # --tflite is input
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in OUTPUT_FLAGS
            and not (reads_tflite and w == "--tflite")]


def run_bash(block: Block, workdir: str, failures: List[Dict[str, Any]],
             exempt: Dict[str, str], env: Dict[str, str]) -> None:
    """Run each command of a bash block (``kerasq`` as ``python -m kerasq``)."""
    for line, command in bash_commands(block):
        if any(key in command for key in exempt):
            continue
        python = shlex.quote(sys.executable)
        shell = re.sub(r"(^|&&\s*|;\s*)kerasq\b", lambda m: f"{m.group(1)}{python} -m kerasq",
                       command)
        shell = re.sub(r"(^|&&\s*|;\s*)python\b", lambda m: f"{m.group(1)}{python}", shell)
        outputs = _outputs(command)
        for out in outputs:
            path = os.path.join(workdir, out)
            if os.path.isfile(path):
                os.remove(path)
        proc = subprocess.run(shell, shell=True, cwd=workdir, env=env, capture_output=True,
                              text=True, timeout=900)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines()
                    or [""])[-1]
            failures.append({"where": f"{block.file}:{line}",
                             "error": f"exit {proc.returncode}: {command} -> {last}"})
            continue
        missing = [o for o in outputs if not os.path.exists(os.path.join(workdir, o))]
        if missing:
            failures.append({"where": f"{block.file}:{line}",
                             "error": f"{command}: did not write {', '.join(missing)}"})


def main(spec_path: str) -> int:
    """Run the blocks of SPEC.json; print the failures as JSON on the last stdout line."""
    spec = json.loads(pathlib.Path(spec_path).read_text())
    workdir = spec["workdir"]
    os.chdir(workdir)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import doc_fixtures  # noqa: E402 - the test directory, added above

    namespace: Dict[str, Any] = doc_fixtures.prelude(workdir, spec["file"])
    failures: List[Dict[str, Any]] = []
    env = dict(os.environ)
    for item in spec["blocks"]:
        block = Block(**item)
        if block.lang == "python":
            code = block.code
            for old, new in doc_fixtures.SUBSTITUTIONS.items():
                code = code.replace(old, new)
            run_python(dataclasses.replace(block, code=code), namespace, failures)
        else:
            run_bash(block, workdir, failures, spec["exempt_commands"], env)
    for problem in doc_fixtures.check(spec["file"], namespace, workdir):
        failures.append({"where": spec["file"], "error": problem})
    print(json.dumps(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
