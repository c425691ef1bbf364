"""A composed statement as text and bound parameters, for the search path's queries.

The search compiler (store/search/) composes its statements from ``sql.Literal`` s. Rendering
them as literals (``Composed.as_bytes``) builds a psycopg Transformer and a dumper per
literal, and makes every statement's text unique to its values: ~0.15 ms of Python per
search, and PostgreSQL parses a new text each time (docs/PERFORMANCE.md, "Search").
:func:`bind` walks the tree once instead and sends the values that type alike either way as
parameters, so one query shape is one text, whatever its values (prepared by psycopg after a
few executions on a connection; PostgreSQL still plans each execution for its values, see
store/repository.py ``Repository``).

Which values are bound: ``str`` (a literal ``'x'`` and a parameter of psycopg's default text
dumper are both of PostgreSQL's type ``unknown``, resolved by their context), lists of ``str``
(``'{a,b}'`` unknown either way), ``datetime``, ``date`` and ``Decimal`` (typed alike:
timestamptz, date, numeric). Everything else (ints, floats, booleans, NULL) types differently
as a parameter (an int is dumped as smallint, a float as float8; a literal ``21`` is an
integer, ``1.5`` numeric) and stays a literal, rendered by psycopg as before.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from psycopg import sql

_TOKENS = re.compile(rb"(%%|%s)")


class Bound(sql.Composable):
    """A piece of statement already bound: its text (``%s`` for each parameter, ``%%`` for a
    literal percent sign) and its parameters, e.g. a clause the search compiler took from its
    cache of shapes (store/search/shapes.py). :func:`bind` splices it in as it is;
    ``as_bytes`` renders the parameters as literals, for whoever prints a statement."""

    def __init__(self, text: bytes, params: list[Any]):
        super().__init__(text)
        self.params = params

    def as_bytes(self, context: Any = None) -> bytes:
        values = iter(self.params)
        out = [
            b"%"
            if token == b"%%"
            else sql.Literal(next(values)).as_bytes(context)
            if token == b"%s"
            else token
            for token in _TOKENS.split(self._obj)
        ]
        return b"".join(out)


@lru_cache(maxsize=8192)
def _text(string: str) -> bytes:
    # With parameters, psycopg reads %s placeholders in the text: a literal % is written %%.
    return string.replace("%", "%%").encode()


@lru_cache(maxsize=4096)
def _identifier(names: tuple[str, ...]) -> bytes:
    # The quoting depends on nothing but the names (UTF-8 connections, store/repository.py).
    return _text(sql.Identifier(*names).as_string(None))


@lru_cache(maxsize=1024)
def _inline(kind: str, value: float | None) -> bytes:
    """A literal kept in the text (``LIMIT 21``), rendered once: psycopg builds a Transformer
    per rendering. ``kind`` keeps ``True``, ``1`` and ``1.0`` apart (they are equal keys)."""
    return _text(sql.Literal(value).as_string(None))


def _bindable(value: object) -> bool:
    if isinstance(value, str | datetime | date | Decimal):
        return True
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def bind(query: sql.Composable) -> tuple[bytes, list[Any]]:
    """``query`` as statement text with ``%s`` placeholders and their values, in order.

    The statement means exactly what ``query.as_bytes()`` renders: the same text around the
    values, each bound value typed as its literal would be. Placeholders are not expected in
    a composed statement (a ``sql.Placeholder`` raises TypeError): this binds them itself.
    """
    parts: list[bytes] = []
    params: list[Any] = []
    stack: list[sql.Composable] = [query]
    while stack:
        node = stack.pop()
        # Exact types first: the search path's trees are made of these four alone.
        kind = type(node)
        if kind is sql.SQL:
            parts.append(_text(node._obj))
        elif kind is sql.Composed:
            stack.extend(reversed(node._obj))
        elif kind is sql.Identifier:
            parts.append(_identifier(node._obj))
        elif kind is Bound:
            parts.append(node._obj)
            params += node.params  # type: ignore[attr-defined]
        elif kind is sql.Literal:
            value = node._obj
            if _bindable(value):
                parts.append(b"%s")
                params.append(value)
            elif isinstance(value, int | float | None):  # bool is an int
                parts.append(_inline(type(value).__name__, value))
            else:
                parts.append(_text(node.as_string(None)))
        elif isinstance(node, sql.Composed):
            stack.extend(reversed(node._obj))
        elif isinstance(node, sql.SQL):
            parts.append(_text(node._obj))
        else:
            raise TypeError(f"bind: unexpected {kind.__name__} in a composed statement")
    return b"".join(parts), params
