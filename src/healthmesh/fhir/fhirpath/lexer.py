"""Tokenizer for FHIRPath expressions (spec §2 and Appendix "Grammar", http://hl7.org/fhirpath/N1/).

The lexer is a single compiled regular expression; keywords (``and``, ``is``, ``div`` …) come out
as identifiers and the parser decides by position, because the grammar lets keywords be used as
member and function names after a dot (e.g. ``'abc'.contains('b')``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import FhirPathSyntaxError

IDENT: Final = "ident"  # plain identifier, also keywords
DELIMITED: Final = "delimited"  # `backtick identifier`
STRING: Final = "string"
NUMBER: Final = "number"
DATE: Final = "date"
DATETIME: Final = "datetime"
TIME: Final = "time"
VARIABLE: Final = "variable"  # %name, %`name`, %'name'
SPECIAL: Final = "special"  # $this, $index, $total
OP: Final = "op"
EOF: Final = "eof"


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str  # decoded text: identifier name, unescaped string, operator symbol
    pos: int


_DATE = r"\d{4}(?:-\d{2}(?:-\d{2})?)?"
_TIME = r"\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?"
_TZ = r"(?:Z|[+-]\d{2}:\d{2})"

_TOKEN_RE: Final = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<line_comment>//[^\n]*)
  | (?P<block_comment>/\*.*?\*/)
  | (?P<open_comment>/\*)
  | (?P<datetime>@{_DATE}T(?:{_TIME}{_TZ}?)?)
  | (?P<time>@T{_TIME})
  | (?P<date>@{_DATE})
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<delimited>`(?:\\.|[^\\`])*`)
  | (?P<string>'(?:\\.|[^\\'])*')
  | (?P<variable>%(?:[A-Za-z_][A-Za-z0-9_]*|`(?:\\.|[^\\`])*`|'(?:\\.|[^\\'])*'))
  | (?P<special>\$(?:this|index|total))
  | (?P<op><=|>=|!=|!~|[-+*/&|=~<>.,()\[\]{{}}])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES: Final = {
    "'": "'",
    '"': '"',
    "`": "`",
    "\\": "\\",
    "/": "/",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def unescape(body: str, pos: int, source: str) -> str:
    """Decode the escapes of a string or delimited identifier body (spec §2.3 "String")."""
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt == "u":
            digits = body[i + 2 : i + 6]
            if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise FhirPathSyntaxError("Invalid \\u escape", position=pos + i, expression=source)
            out.append(chr(int(digits, 16)))
            i += 6
        elif nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            raise FhirPathSyntaxError(
                f"Invalid escape sequence '\\{nxt}'", position=pos + i, expression=source
            )
    return "".join(out)


def tokenize(source: str) -> list[Token]:
    """Split ``source`` into tokens, dropping whitespace and comments; ends with an EOF token."""
    tokens: list[Token] = []
    pos = 0
    end = len(source)
    match = _TOKEN_RE.match
    while pos < end:
        m = match(source, pos)
        if m is None:
            raise FhirPathSyntaxError(
                f"Unexpected character {source[pos]!r}", position=pos, expression=source
            )
        kind = m.lastgroup
        text = m.group()
        if kind == "open_comment":
            raise FhirPathSyntaxError("Unterminated comment", position=pos, expression=source)
        if kind in ("ws", "line_comment", "block_comment"):
            pos = m.end()
            continue
        assert kind is not None
        if kind in (STRING, DELIMITED):
            text = unescape(text[1:-1], pos + 1, source)
        elif kind == VARIABLE:
            name = text[1:]
            if name[:1] in ("`", "'"):
                name = unescape(name[1:-1], pos + 2, source)
            text = name
        tokens.append(Token(kind, text, pos))
        pos = m.end()
    tokens.append(Token(EOF, "", end))
    return tokens
