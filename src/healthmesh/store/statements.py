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

**Plans kept per connection.** A prepared statement is planned for its values each time
(a *custom* plan) until PostgreSQL finds a *generic* plan, made once without the values, no
costlier than the custom plans' average, planning included (``plan_cache_mode = auto``).
While the resource type and parameter names are parameters too, the generic plan's
estimates are poor, and on a large database PostgreSQL goes on planning each execution for
its values (docs/PERFORMANCE.md): that is right where a value decides the plan (a common
code against a rare one, a date range).
But where every value a statement takes from the request is a :class:`Key` — an identifier
or a resource id, which by definition select a resource or a few whatever they are — the
plan cannot depend on the values, only on the shape: :func:`bind` then writes the shape's
:class:`Constant` s (resource types, parameter names) into the text, binds the keys alone,
and PostgreSQL keeps the generic plan after five executions. ``Patient?identifier=s|v`` at
1M resources: 270 µs a statement → 108 µs (docs/PERFORMANCE.md, "Search"). One plain value
anywhere (a code, a date, the consent condition's patient) and the statement is bound
exactly as before. Either way the statement selects the same rows (a constant means the same
in the text as bound): only when PostgreSQL plans it changes, never what it answers.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from psycopg import sql

_TOKENS = re.compile(rb"(%%|%s)")


class Constant(sql.Literal):
    """A value the statement's shape fixes, not the request: a resource type, a search
    parameter's name. Bound like any value, or written into the text when every value the
    request brings is a :class:`Key` (see the module's docstring)."""


class Key(sql.Literal):
    """A request value that selects at most a few resources whatever it is — an identifier's
    value (with its system), a resource id — so that no plan could suit one such value and
    not another (see the module's docstring)."""


# Per bound parameter: what it is (Bound.kinds).
PLAIN, CONSTANT, KEY = 0, 1, 2


class Bound(sql.Composable):
    """A piece of statement already bound: its text (``%s`` for each parameter, ``%%`` for a
    literal percent sign) and its parameters, e.g. a clause the search compiler took from its
    cache of shapes (store/search/shapes.py). :func:`bind` splices it in as it is;
    ``as_bytes`` renders the parameters as literals, for whoever prints a statement.

    ``kinds`` (None: all :data:`PLAIN`) says which parameters are constants and keys, and
    ``segments`` is then the text split at its placeholders (one more than the parameters),
    so that a statement binding its constants into the text can do so here too."""

    def __init__(
        self,
        text: bytes,
        params: list[Any],
        kinds: tuple[int, ...] | None = None,
        segments: tuple[bytes, ...] | None = None,
    ):
        super().__init__(text)
        self.params = params
        self.kinds = kinds
        self.segments = segments
        if kinds is not None and (
            len(kinds) != len(params) or segments is None or len(segments) != len(params) + 1
        ):
            raise ValueError("Bound: kinds and segments must match the parameters")

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


def placeholder_segments(text: bytes) -> tuple[bytes, ...]:
    """``text`` split at its ``%s`` placeholders (``%%`` stays): one more piece than them."""
    segments: list[bytes] = []
    current: list[bytes] = []
    for token in _TOKENS.split(text):
        if token == b"%s":
            segments.append(b"".join(current))
            current = []
        else:
            current.append(token)
    segments.append(b"".join(current))
    return tuple(segments)


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


@lru_cache(maxsize=4096)
def _quoted(value: str) -> bytes:
    """A constant written into the text: quoted as psycopg quotes a literal (standard
    strings, UTF-8), ``%`` doubled for the placeholders' sake."""
    return _text(sql.Literal(value).as_string(None))


class Parts:
    """A statement bound, before its text is joined: the ``text`` pieces (each parameter one
    ``%s`` piece), the parameters, their kinds, and for each constant its parameter's index
    and the index of its ``%s`` piece."""

    __slots__ = ("constants", "kinds", "params", "text")

    def __init__(
        self,
        text: list[bytes],
        params: list[Any],
        kinds: list[int],
        constants: list[tuple[int, int]],
    ):
        self.text = text
        self.params = params
        self.kinds = kinds
        self.constants = constants

    def keyed(self) -> bool:
        """Whether every parameter is a constant or a key, and some is a constant: the
        statement's plan depends on its shape alone (the module's docstring)."""
        return bool(self.constants) and PLAIN not in self.kinds

    def joined(self, *, inline_constants: bool) -> tuple[bytes, list[Any]]:
        if not inline_constants:
            return b"".join(self.text), self.params
        text = list(self.text)
        params = self.params
        for index, slot in self.constants:
            text[slot] = _quoted(params[index])
        kept = [value for value, kind in zip(params, self.kinds, strict=True) if kind != CONSTANT]
        return b"".join(text), kept


def bind(query: sql.Composable) -> tuple[bytes, list[Any]]:
    """``query`` as statement text with ``%s`` placeholders and their values, in order.

    The statement means exactly what ``query.as_bytes()`` renders: the same text around the
    values, each bound value typed as its literal would be. Placeholders are not expected in
    a composed statement (a ``sql.Placeholder`` raises TypeError): this binds them itself.
    A statement whose request values are all keys gets its constants in the text.
    """
    parts = bind_parts(query)
    return parts.joined(inline_constants=parts.keyed())


def bind_parts(query: sql.Composable) -> Parts:
    """``query`` bound, every value a parameter, with what each is (store/search/shapes.py
    keeps a clause so)."""
    parts: list[bytes] = []
    params: list[Any] = []
    kinds: list[int] = []
    constants: list[tuple[int, int]] = []
    stack: list[sql.Composable] = [query]
    while stack:
        node = stack.pop()
        # Exact types first: the search path's trees are made of these alone.
        kind = type(node)
        if kind is sql.SQL:
            parts.append(_text(node._obj))
        elif kind is sql.Composed:
            stack.extend(reversed(node._obj))
        elif kind is sql.Identifier:
            parts.append(_identifier(node._obj))
        elif kind is sql.Literal or kind is Constant or kind is Key:
            value = node._obj
            if _bindable(value):
                if kind is Constant and isinstance(value, str):
                    constants.append((len(params), len(parts)))
                    kinds.append(CONSTANT)
                else:
                    kinds.append(KEY if kind is Key else PLAIN)
                parts.append(b"%s")
                params.append(value)
            elif isinstance(value, int | float | None):  # bool is an int
                parts.append(_inline(type(value).__name__, value))
            else:
                parts.append(_text(node.as_string(None)))
        elif kind is Bound:
            node_kinds = node.kinds  # type: ignore[attr-defined]
            node_params = node.params  # type: ignore[attr-defined]
            if node_kinds is None:
                parts.append(node._obj)
                kinds += [PLAIN] * len(node_params)
            else:
                segments = node.segments  # type: ignore[attr-defined]
                parts.append(segments[0])
                for n, segment in enumerate(segments[1:]):
                    if node_kinds[n] == CONSTANT:
                        constants.append((len(params) + n, len(parts)))
                    parts.append(b"%s")
                    parts.append(segment)
                kinds += node_kinds
            params += node_params
        elif isinstance(node, sql.Composed):
            stack.extend(reversed(node._obj))
        elif isinstance(node, sql.SQL):
            parts.append(_text(node._obj))
        else:
            raise TypeError(f"bind: unexpected {kind.__name__} in a composed statement")
    return Parts(parts, params, kinds, constants)
