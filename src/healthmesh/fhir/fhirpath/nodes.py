"""Abstract syntax tree for FHIRPath expressions (spec Appendix A grammar, N1).

Nodes are immutable; ``pos`` is the character offset used in error messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Expr:
    pos: int


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    """A literal System value (Boolean, String, Integer, Decimal, Date, DateTime, Time, Quantity)."""

    value: Any


@dataclass(frozen=True, slots=True)
class EmptySet(Expr):
    """``{}`` — the empty collection (spec §4.1)."""


@dataclass(frozen=True, slots=True)
class Identifier(Expr):
    """A member name or type name evaluated against the current focus (spec §3)."""

    name: str


@dataclass(frozen=True, slots=True)
class Call(Expr):
    """``name(args)``: a function applied to the focus (spec §5)."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Invoke(Expr):
    """``target.member`` where member is an :class:`Identifier` or :class:`Call`."""

    target: Expr
    member: Identifier | Call


@dataclass(frozen=True, slots=True)
class Index(Expr):
    """``target[index]`` (spec §6.6 "Indexer")."""

    target: Expr
    index: Expr


@dataclass(frozen=True, slots=True)
class Unary(Expr):
    """Polarity ``+x`` / ``-x`` (spec §6.7 "Math")."""

    op: str
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class TypeSpec(Expr):
    """A (possibly namespace-qualified) type name, e.g. ``FHIR.Patient`` (spec §6.3)."""

    namespace: str | None
    name: str


@dataclass(frozen=True, slots=True)
class TypeOp(Expr):
    """``expr is Type`` / ``expr as Type`` (spec §6.3 "Types")."""

    op: str
    operand: Expr
    type: TypeSpec


@dataclass(frozen=True, slots=True)
class Variable(Expr):
    """An environment variable ``%name`` (spec §7 "Environment variables")."""

    name: str


@dataclass(frozen=True, slots=True)
class Special(Expr):
    """``$this``, ``$index`` or ``$total`` (spec §5.2 "Filtering and projection")."""

    name: str
