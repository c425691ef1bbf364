"""String manipulation functions (spec §5.6) and the FHIRPath 2.1 additions exercised by the
official R4 suite (trim, split, join, encode, decode, escape, unescape)."""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from functools import lru_cache
from typing import Any

from ..collections_ import single_value
from ..env import Env
from ..errors import FhirPathEvaluationError
from .registry import function


def _string(inp: list[Any], what: str) -> str | None:
    """The single input string; a non-string input is an error (spec §5.6 preamble)."""
    value = single_value(inp, what)
    if value is None:
        return None
    if type(value) is not str:
        raise FhirPathEvaluationError(f"{what} expects a String input")
    return value


def _arg(arg: list[Any], what: str) -> str | None:
    value = single_value(arg, what)
    if value is None:
        return None
    if type(value) is not str:
        raise FhirPathEvaluationError(f"{what} expects a String argument")
    return value


def _int_arg(arg: list[Any], what: str) -> int | None:
    value = single_value(arg, what)
    if value is None:
        return None
    if type(value) is not int:
        raise FhirPathEvaluationError(f"{what} expects an Integer argument")
    return int(value)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        # Single-line mode: '.' matches newlines (spec §5.6.9).
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise FhirPathEvaluationError(f"Invalid regular expression {pattern!r}: {exc}") from None


@function("indexOf", 1)
def index_of(inp: list[Any], env: Env, sub: list[Any]) -> list[Any]:
    s, needle = _string(inp, "indexOf()"), _arg(sub, "indexOf()")
    return [] if s is None or needle is None else [s.find(needle)]


@function("substring", 1, 2)
def substring(
    inp: list[Any], env: Env, start: list[Any], length: list[Any] | None = None
) -> list[Any]:
    s = _string(inp, "substring()")
    begin = _int_arg(start, "substring()")
    if s is None or begin is None or begin < 0 or begin >= len(s):
        return []
    if length is None:
        return [s[begin:]]
    count = _int_arg(length, "substring()")
    if count is None:
        return [s[begin:]]
    return [s[begin : begin + max(count, 0)]]


def _predicate(name: str, test: Any) -> None:
    def impl(inp: list[Any], env: Env, arg: list[Any]) -> list[Any]:
        s, other = _string(inp, f"{name}()"), _arg(arg, f"{name}()")
        return [] if s is None or other is None else [bool(test(s, other))]

    function(name, 1)(impl)


_predicate("startsWith", str.startswith)
_predicate("endsWith", str.endswith)
_predicate("contains", lambda s, sub: sub in s)
_predicate("matches", lambda s, pattern: _regex(pattern).search(s) is not None)
_predicate("matchesFull", lambda s, pattern: _regex(pattern).fullmatch(s) is not None)


def _transform(name: str, transform: Any) -> None:
    def impl(inp: list[Any], env: Env) -> list[Any]:
        s = _string(inp, f"{name}()")
        return [] if s is None else [transform(s)]

    function(name)(impl)


_transform("upper", str.upper)
_transform("lower", str.lower)
_transform("length", len)
_transform("trim", str.strip)


@function("toChars")
def to_chars(inp: list[Any], env: Env) -> list[Any]:
    s = _string(inp, "toChars()")
    return [] if s is None else list(s)


@function("replace", 2)
def replace(inp: list[Any], env: Env, pattern: list[Any], sub: list[Any]) -> list[Any]:
    s = _string(inp, "replace()")
    old, new = _arg(pattern, "replace()"), _arg(sub, "replace()")
    if s is None or old is None or new is None:
        return []
    return [s.replace(old, new)]


_GROUP_REF = re.compile(r"\$(\d+)")


@function("replaceMatches", 2)
def replace_matches(inp: list[Any], env: Env, pattern: list[Any], sub: list[Any]) -> list[Any]:
    s = _string(inp, "replaceMatches()")
    regex, new = _arg(pattern, "replaceMatches()"), _arg(sub, "replaceMatches()")
    if s is None or regex is None or new is None:
        return []
    if regex == "":
        return [s]
    # FHIRPath substitutions name groups as $1 (spec §5.6.10); Python uses \1.
    replacement = _GROUP_REF.sub(r"\\g<\1>", new.replace("\\", "\\\\"))
    return [_regex(regex).sub(replacement, s)]


@function("split", 1)
def split(inp: list[Any], env: Env, sep: list[Any]) -> list[Any]:
    s, separator = _string(inp, "split()"), _arg(sep, "split()")
    if s is None or separator is None:
        return []
    return list(s.split(separator)) if separator else list(s)


@function("join", 0, 1)
def join(inp: list[Any], env: Env, sep: list[Any] | None = None) -> list[Any]:
    separator = _arg(sep, "join()") if sep is not None else ""
    parts: list[str] = []
    for item in inp:
        value = single_value([item], "join()")
        if value is None:  # a primitive with only extensions
            continue
        if type(value) is not str:
            raise FhirPathEvaluationError("join() expects String items")
        parts.append(value)
    return ["".join(parts) if separator is None else separator.join(parts)]


@function("encode", 1)
def encode(inp: list[Any], env: Env, fmt: list[Any]) -> list[Any]:
    s, kind = _string(inp, "encode()"), _arg(fmt, "encode()")
    if s is None or kind is None:
        return []
    data = s.encode("utf-8")
    if kind == "base64":
        return [base64.b64encode(data).decode("ascii")]
    if kind == "urlbase64":
        return [base64.urlsafe_b64encode(data).decode("ascii")]
    if kind == "hex":
        return [data.hex()]
    raise FhirPathEvaluationError(f"encode(): unknown format {kind!r}")


@function("decode", 1)
def decode(inp: list[Any], env: Env, fmt: list[Any]) -> list[Any]:
    s, kind = _string(inp, "decode()"), _arg(fmt, "decode()")
    if s is None or kind is None:
        return []
    try:
        if kind == "base64":
            data = base64.b64decode(s, validate=True)
        elif kind == "urlbase64":
            data = base64.urlsafe_b64decode(s)
        elif kind == "hex":
            data = bytes.fromhex(s)
        else:
            raise FhirPathEvaluationError(f"decode(): unknown format {kind!r}")
        return [data.decode("utf-8")]
    except (binascii.Error, ValueError):
        return []


@function("escape", 1)
def escape(inp: list[Any], env: Env, fmt: list[Any]) -> list[Any]:
    s, kind = _string(inp, "escape()"), _arg(fmt, "escape()")
    if s is None or kind is None:
        return []
    if kind == "html":
        return [html.escape(s, quote=True).replace("&#x27;", "&#39;")]
    if kind == "json":
        return [json.dumps(s, ensure_ascii=False)[1:-1]]
    raise FhirPathEvaluationError(f"escape(): unknown format {kind!r}")


@function("unescape", 1)
def unescape(inp: list[Any], env: Env, fmt: list[Any]) -> list[Any]:
    s, kind = _string(inp, "unescape()"), _arg(fmt, "unescape()")
    if s is None or kind is None:
        return []
    if kind == "html":
        return [html.unescape(s)]
    if kind == "json":
        return [_JSON_ESCAPE.sub(_json_unescape, s)]
    raise FhirPathEvaluationError(f"unescape(): unknown format {kind!r}")


_JSON_ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})')
_JSON_SIMPLE = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def _json_unescape(m: re.Match[str]) -> str:
    code = m.group(1)
    return chr(int(code[1:], 16)) if code[0] == "u" else _JSON_SIMPLE[code]
