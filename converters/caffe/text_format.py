"""A schema-less, tolerant reader for protobuf text format (Caffe prototxt files).

The converter reads the quantization settings of caffe-jacinto (0.15, 0.16, 0.17) and
Ristretto prototxts with it (:mod:`.quantization`); the net itself is read by :mod:`.reader`
against kerasq's ``caffe.proto``. The forks' ``.proto`` files disagree with each other and
with BVLC Caffe (the same field name has different numbers, enums differ), so a generated
``caffe_pb2`` cannot hold their settings, and errors must name the line of a field, which a
protobuf message does not keep. This module parses the text format without a schema:

- a message is an ordered list of ``(name, value, line)`` entries; a repeated or nested
  field is simply a name that occurs more than once;
- scalars become ``int``, ``float`` or ``str`` (quoted strings, with C escapes and adjacent
  literal concatenation); bare identifiers (enum values, ``true``/``false``) become
  :class:`Identifier`, a ``str`` subclass, so the caller decides what they mean;
- ``#`` comments, ``;`` and ``,`` separators, ``field: {...}``, ``field {...}``,
  ``field <...>`` and list values ``field: [1, 2]`` are accepted.

Malformed text raises :class:`kerasq.errors.CaffeFormatError` naming the file and line.

Example:
    >>> msg = parse('quantize: true  # on\\nlayer { name: "c1" type: "Convolution" }')
    >>> msg.get("quantize"), msg.get("layer").get("name")
    ('true', 'c1')
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional, Tuple, Union

from kerasq.errors import CaffeFormatError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["Identifier", "Message", "parse", "parse_file"]


class Identifier(str):
    """A bare (unquoted) identifier: an enum value or ``true``/``false``."""


@dataclass
class Message:
    """One text-format message: ordered ``(name, value, line)`` entries.

    ``line`` is the 1-based line of the field name; ``source`` the file it came from.
    """

    entries: List[Tuple[str, Any, int]] = field(default_factory=list)
    line: int = 1
    source: Optional[str] = None

    def getall(self, name: str) -> List[Any]:
        """All values of field ``name`` in file order (``[]`` if absent)."""
        return [value for key, value, _ in self.entries if key == name]

    def get(self, name: str, default: Any = None) -> Any:
        """The last value of ``name`` (protobuf semantics for a singular field)."""
        values = self.getall(name)
        return values[-1] if values else default

    def has(self, name: str) -> bool:
        """True if field ``name`` occurs at least once."""
        return any(key == name for key, _, _ in self.entries)

    def line_of(self, name: str) -> int:
        """Line of the last occurrence of ``name`` (the message's own line if absent)."""
        lines = [line for key, _, line in self.entries if key == name]
        return lines[-1] if lines else self.line

    def names(self) -> List[str]:
        """Distinct field names in order of first occurrence."""
        seen: List[str] = []
        for key, _, _ in self.entries:
            if key not in seen:
                seen.append(key)
        return seen

    def __iter__(self) -> Iterator[Tuple[str, Any, int]]:
        return iter(self.entries)


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?(?![\w.]))
  | (?P<signed_ident>-(?:inf|infinity|nan)\b)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>\[\]:;,])
    """,
    re.VERBOSE,
)

_SIMPLE_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "?": "?",
}


@dataclass
class _Token:
    kind: str
    text: str
    line: int


def _unescape(body: str, line: int, source: Optional[str]) -> str:
    out: List[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]  # the token regex guarantees a character after '\'
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group(0)  # type: ignore[union-attr]
            out.append(chr(int(digits, 8)))
            i += 1 + len(digits)
        elif nxt in "xX" and re.match(r"[0-9a-fA-F]", body[i + 2:i + 3]):
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]).group(0)  # type: ignore[union-attr]
            out.append(chr(int(digits, 16)))
            i += 2 + len(digits)
        else:
            raise CaffeFormatError(f"line {line}: invalid escape '\\{nxt}' in string", file=source)
    return "".join(out)


def _tokenize(text: str, source: Optional[str]) -> List[_Token]:
    tokens: List[_Token] = []
    line = 1
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            snippet = text[pos:pos + 20].split("\n")[0]
            if text[pos] in "\"'":
                reason = "unterminated string"
            else:
                reason = f"unexpected character {text[pos]!r} near {snippet!r}"
            raise CaffeFormatError(f"line {line}: {reason}", file=source)
        kind = match.lastgroup or ""
        value = match.group(0)
        if kind == "newline":
            line += 1
        elif kind not in ("ws", "comment"):
            tokens.append(_Token(kind, value, line))
        pos = match.end()
    return tokens


def _number(text: str) -> Union[int, float]:
    body = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
        return int(body, 16)
    if re.fullmatch(r"[-+]?\d+", body):
        return int(body)
    return float(body)


class _Parser:
    def __init__(self, tokens: List[_Token], source: Optional[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.source = source

    def _error(self, reason: str, token: Optional[_Token] = None) -> CaffeFormatError:
        if token is None:
            token = self.tokens[self.pos] if self.pos < len(self.tokens) else None
        if token is not None:
            where = f"line {token.line}"
        else:
            last = self.tokens[-1].line if self.tokens else 1
            where = f"line {last} (end of file)"
        return CaffeFormatError(f"{where}: {reason}", file=self.source)

    def _peek(self) -> Optional[_Token]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> _Token:
        token = self._peek()
        if token is None:
            raise self._error("unexpected end of file")
        self.pos += 1
        return token

    def message(self, close: Optional[str], line: int) -> Message:
        msg = Message(line=line, source=self.source)
        while True:
            token = self._peek()
            if token is None:
                if close is not None:
                    raise self._error(f"missing '{close}' for the message opened at line {line}")
                return msg
            if token.kind == "punct" and token.text in ";,":
                self.pos += 1
                continue
            if close is not None and token.kind == "punct" and token.text == close:
                self.pos += 1
                return msg
            if token.kind != "ident":
                raise self._error(f"expected a field name, got {token.text!r}")
            self.pos += 1
            name = token.text
            nxt = self._peek()
            colon = nxt is not None and nxt.kind == "punct" and nxt.text == ":"
            if colon:
                self.pos += 1
                nxt = self._peek()
            if nxt is not None and nxt.kind == "punct" and nxt.text in "{<":
                self.pos += 1
                value: Any = self.message("}" if nxt.text == "{" else ">", token.line)
                msg.entries.append((name, value, token.line))
            elif not colon:
                raise self._error(f"expected ':' or '{{' after field name {name!r}", nxt)
            elif nxt is not None and nxt.kind == "punct" and nxt.text == "[":
                self.pos += 1
                for value in self._list(token.line):
                    msg.entries.append((name, value, token.line))
            else:
                msg.entries.append((name, self._scalar(name), token.line))

    def _list(self, line: int) -> List[Any]:
        values: List[Any] = []
        while True:
            token = self._peek()
            if token is None:
                raise self._error(f"missing ']' for the list opened at line {line}")
            if token.kind == "punct" and token.text == "]":
                self.pos += 1
                return values
            if token.kind == "punct" and token.text == ",":
                self.pos += 1
                continue
            if token.kind == "punct" and token.text in "{<":
                self.pos += 1
                values.append(self.message("}" if token.text == "{" else ">", token.line))
            else:
                values.append(self._scalar("list element"))

    def _scalar(self, name: str) -> Any:
        token = self._peek()
        if token is None:
            raise self._error(f"missing value for field {name!r}")
        if token.kind == "string":
            parts = []
            while token is not None and token.kind == "string":
                parts.append(_unescape(token.text[1:-1], token.line, self.source))
                self.pos += 1
                token = self._peek()
            return "".join(parts)
        self.pos += 1
        if token.kind == "number":
            return _number(token.text)
        if token.kind == "signed_ident":
            return float(token.text.replace("infinity", "inf"))
        if token.kind == "ident":
            lowered = token.text.lower()
            if lowered in ("inf", "infinity", "nan"):
                return float(lowered.replace("infinity", "inf"))
            return Identifier(token.text)
        raise self._error(f"expected a value for field {name!r}, got {token.text!r}", token)


def parse(text: str, source: Optional[PathLike] = None) -> Message:
    """Parse protobuf text format ``text``; ``source`` names the file in errors.

    Example:
        >>> parse("a: 1 b { c: [2, 3] }").get("b").getall("c")
        [2, 3]
    """
    src = os.fspath(source) if source is not None else None
    return _Parser(_tokenize(text, src), src).message(None, 1)


def parse_file(path: PathLike) -> Message:
    """Read and parse a prototxt file (UTF-8; undecodable bytes raise CaffeFormatError)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise CaffeFormatError(f"cannot read file: {err.strerror or err}", file=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CaffeFormatError(f"line {line}: not UTF-8 text (binary file?)", file=path) from None
    return parse(text, path)
