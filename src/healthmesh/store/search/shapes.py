"""Compiled clauses kept by shape: compose and bind a clause once, reuse it with new values.

Composing a token clause with psycopg's ``sql`` objects and binding it (store/statements.py)
is ~40 % of the Python of a one-clause search such as ``Patient?identifier=system|value``
(callgrind, docs/PERFORMANCE.md "Search"), and its text is the same for every value of the
same *shape*: the resource type, parameter, modifier, the row alias and alias number, and
each value's *form* (``code``, ``system|code``, ``|code``, ``system|``). Only the values
differ, and they reach the statement as bound parameters, verbatim.

So a shape's first clause is compiled twice, once with its own values and once with
stand-ins of the same forms (strings no request can send: they hold a NUL, which the API
refuses, api/parsing.py); which parameter is which piece of which value is read off the
stand-ins, and the shape is kept only if that reproduces the real compilation exactly. Later
clauses of the shape are the kept text with their own pieces as parameters: no composing.
Each parameter's kind (plain, constant, key: store/statements.py) is kept with the text, and
the stand-ins must give the same kinds as the real values, so a kept clause binds into a
statement exactly as its compilation would (constants in the text or not).

Only plain token clauses (no modifier or ``:not``) are kept: their compilation looks at a
value's form and nothing else (store/search/token.py ``value_condition``). Any clause whose
SQL could depend on what a value says — a date's precision, a number's digits, a string's
normalisation, a reference's base URL — is compiled every time, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from psycopg import sql

from healthmesh.fhir.search.query import Clause
from healthmesh.fhir.search_values import parse_token
from healthmesh.store.statements import Bound, bind_parts, placeholder_segments

MAX_SHAPES = 4096  # distinct shapes kept; the cache starts over when full
# Token forms: whether the value has a system part, an empty one ("|code"), and a code.
Form = tuple[bool, bool, bool]


@dataclass(frozen=True, slots=True)
class _Shape:
    text: bytes
    recipe: tuple[int | None, ...]  # per parameter: the piece it is, or None (a constant)
    constants: tuple[Any, ...]  # per parameter: its value when a constant
    aliases: int  # table aliases the clause numbers (the compiler's counter moves on by this)
    kinds: tuple[int, ...] = ()  # per parameter: plain, constant or key (store/statements.py)
    segments: tuple[bytes, ...] = ()  # the text split at its placeholders


_UNKEPT = _Shape(b"", (), (), -1)  # a shape whose compilation did not reproduce: never kept
_shapes: dict[tuple[Any, ...], _Shape] = {}


def token_pieces(clause: Clause) -> tuple[tuple[Form, ...], list[str]]:
    """Each value's form and its pieces (code, then system, as ``value_condition`` emits
    them). Raises for a malformed value, as compiling it would."""
    forms: list[Form] = []
    pieces: list[str] = []
    for raw in clause.values:
        token = parse_token(clause.name, raw)
        forms.append((token.system is not None, token.system == "", token.code is not None))
        if token.code is not None:
            pieces.append(token.code)
        if token.system:
            pieces.append(token.system)
    return tuple(forms), pieces


def _stand_in(forms: tuple[Form, ...]) -> tuple[tuple[str, ...], list[str]]:
    """Values of the same forms whose pieces are unique markers, and those markers."""
    values: list[str] = []
    pieces: list[str] = []
    for has_system, empty_system, has_code in forms:
        code = system = ""
        if has_code:
            code = f"\x00code{len(pieces)}\x00"
            pieces.append(code)
        if has_system and not empty_system:
            system = f"\x00system{len(pieces)}\x00"
            pieces.append(system)
        values.append(f"{system}|{code}" if has_system else code)
    return tuple(values), pieces


def kept_token_clause(
    clause: Clause,
    key: tuple[Any, ...],
    aliases: int,
    compile_clause: Callable[[Clause], tuple[sql.Composable, int]],
) -> tuple[Bound, int] | None:
    """The clause bound from its shape's kept text, and how many aliases it numbered; None
    when the shape cannot be kept (the caller compiles it as usual).

    ``key``: what besides the values' forms decides the clause's text (type, parameter,
    modifier, row alias), ``aliases`` the compiler's alias counter before the clause, and
    ``compile_clause`` compiles a clause from that counter, returning it and the aliases used.
    """
    forms, pieces = token_pieces(clause)
    full_key = (*key, aliases, forms)
    shape = _shapes.get(full_key)
    if shape is None:
        shape = _learn(clause, forms, pieces, compile_clause)
        if len(_shapes) >= MAX_SHAPES:
            _shapes.clear()
        _shapes[full_key] = shape
    if shape is _UNKEPT:
        return None
    params = [
        pieces[piece] if piece is not None else constant
        for piece, constant in zip(shape.recipe, shape.constants, strict=True)
    ]
    return Bound(shape.text, params, shape.kinds, shape.segments), shape.aliases


def _learn(
    clause: Clause,
    forms: tuple[Form, ...],
    pieces: list[str],
    compile_clause: Callable[[Clause], tuple[sql.Composable, int]],
) -> _Shape:
    # The real clause first: its errors are the request's (a stand-in's are not).
    real, real_aliases = compile_clause(clause)
    real_parts = bind_parts(real)
    values, markers = _stand_in(forms)
    try:
        marked, marked_aliases = compile_clause(replace(clause, values=values))
    except Exception:  # whatever a stand-in provokes, the shape is not kept
        return _UNKEPT
    marked_parts = bind_parts(marked)
    text, marked_params = marked_parts.joined(inline_constants=False)
    index = {marker: n for n, marker in enumerate(markers)}
    recipe = tuple(index.get(p) if isinstance(p, str) else None for p in marked_params)
    if len({n for n in recipe if n is not None}) != len(markers):
        return _UNKEPT  # some piece did not reach the statement verbatim
    constants = tuple(
        None if n is not None else p for n, p in zip(recipe, marked_params, strict=True)
    )
    again = [pieces[n] if n is not None else c for n, c in zip(recipe, constants, strict=True)]
    real_text, real_params = real_parts.joined(inline_constants=False)
    if (
        real_text != text
        or real_params != again
        or real_aliases != marked_aliases
        # A value is a key or plain by its clause and form, never by what it says.
        or real_parts.kinds != marked_parts.kinds
    ):
        return _UNKEPT
    segments = placeholder_segments(text)
    if len(segments) != len(marked_params) + 1:
        return _UNKEPT
    return _Shape(text, recipe, constants, marked_aliases, tuple(marked_parts.kinds), segments)
