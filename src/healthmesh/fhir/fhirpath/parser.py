"""Pratt parser producing the AST of :mod:`.nodes` (grammar: spec Appendix A, N1).

Operator precedence, loosest first (spec §6 "Operations", "Operator precedence")::

    implies < or xor < and < in contains < = ~ != !~ < <= < > >= < | < is as
    < + - & < * / div mod < unary + - < . [] (invocation, indexer)

All binary operators are left-associative.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from . import lexer as lx
from .errors import FhirPathSyntaxError
from .nodes import (
    Binary,
    Call,
    EmptySet,
    Expr,
    Identifier,
    Index,
    Invoke,
    Literal,
    Special,
    TypeOp,
    TypeSpec,
    Unary,
    Variable,
)
from .quantity import CALENDAR_UNITS, Quantity
from .temporal import DATE, DATETIME, TIME, Temporal

_BINARY_BP: Final[dict[str, int]] = {
    "implies": 1,
    "or": 2,
    "xor": 2,
    "and": 3,
    "in": 4,
    "contains": 4,
    "=": 5,
    "~": 5,
    "!=": 5,
    "!~": 5,
    "<": 6,
    ">": 6,
    "<=": 6,
    ">=": 6,
    "|": 7,
    "+": 9,
    "-": 9,
    "&": 9,
    "*": 10,
    "/": 10,
    "div": 10,
    "mod": 10,
}
_TYPE_BP: Final = 8
_PREFIX_BP: Final = 11
_POSTFIX_BP: Final = 12

_WORD_OPERATORS: Final = frozenset(
    {"implies", "or", "xor", "and", "in", "contains", "div", "mod", "is", "as"}
)
# Keywords that may still name a member or function in term position (grammar "identifier").
_TERM_KEYWORDS: Final = frozenset({"as", "contains", "in", "is"})
_RESERVED: Final = frozenset({"implies", "or", "xor", "and", "div", "mod"})


class Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = lx.tokenize(source)
        self.i = 0

    # -- token helpers -----------------------------------------------------------------------

    def peek(self, offset: int = 0) -> lx.Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def advance(self) -> lx.Token:
        tok = self.tokens[self.i]
        if tok.kind != lx.EOF:
            self.i += 1
        return tok

    def error(self, message: str, tok: lx.Token) -> FhirPathSyntaxError:
        return FhirPathSyntaxError(message, position=tok.pos, expression=self.source)

    def expect_op(self, symbol: str) -> lx.Token:
        tok = self.advance()
        if tok.kind != lx.OP or tok.text != symbol:
            found = "end of expression" if tok.kind == lx.EOF else repr(tok.text)
            raise self.error(f"Expected '{symbol}' but found {found}", tok)
        return tok

    # -- grammar -----------------------------------------------------------------------------

    def parse(self) -> Expr:
        if self.peek().kind == lx.EOF:
            raise self.error("Empty expression", self.peek())
        expr = self.expression(0)
        tok = self.peek()
        if tok.kind != lx.EOF:
            raise self.error(f"Unexpected {tok.text!r}", tok)
        return expr

    def expression(self, min_bp: int) -> Expr:
        left = self.prefix()
        while True:
            tok = self.peek()
            op = self._operator(tok)
            if op is None:
                return left
            if op in (".", "["):
                if min_bp > _POSTFIX_BP:
                    return left
                left = self.postfix(left)
                continue
            if op in ("is", "as"):
                if min_bp >= _TYPE_BP:
                    return left
                self.advance()
                left = TypeOp(tok.pos, op, left, self.type_specifier())
                continue
            bp = _BINARY_BP[op]
            if bp <= min_bp:
                return left
            self.advance()
            right = self.expression(bp)
            left = Binary(tok.pos, op, left, right)

    def _operator(self, tok: lx.Token) -> str | None:
        if tok.kind == lx.OP:
            if tok.text in (".", "[") or tok.text in _BINARY_BP:
                return tok.text
            return None
        if tok.kind == lx.IDENT and tok.text in _WORD_OPERATORS:
            return tok.text
        return None

    def postfix(self, left: Expr) -> Expr:
        tok = self.advance()
        if tok.text == "[":
            index = self.expression(0)
            self.expect_op("]")
            return Index(tok.pos, left, index)
        name_tok = self.advance()
        if name_tok.kind not in (lx.IDENT, lx.DELIMITED):
            raise self.error("Expected an identifier after '.'", name_tok)
        return Invoke(name_tok.pos, left, self.member(name_tok))

    def member(self, name_tok: lx.Token) -> Identifier | Call:
        nxt = self.peek()
        if nxt.kind == lx.OP and nxt.text == "(":
            self.advance()
            args: list[Expr] = []
            if not (self.peek().kind == lx.OP and self.peek().text == ")"):
                args.append(self.expression(0))
                while self.peek().kind == lx.OP and self.peek().text == ",":
                    self.advance()
                    args.append(self.expression(0))
            self.expect_op(")")
            return Call(name_tok.pos, name_tok.text, tuple(args))
        return Identifier(name_tok.pos, name_tok.text)

    def type_specifier(self) -> TypeSpec:
        tok = self.advance()
        if tok.kind not in (lx.IDENT, lx.DELIMITED):
            raise self.error("Expected a type name", tok)
        parts = [tok.text]
        while self.peek().kind == lx.OP and self.peek().text == ".":
            nxt = self.peek(1)
            if nxt.kind not in (lx.IDENT, lx.DELIMITED) or self.peek(2).text == "(":
                break
            self.advance()
            parts.append(self.advance().text)
        if len(parts) == 1:
            return TypeSpec(tok.pos, None, parts[0])
        return TypeSpec(tok.pos, parts[0], ".".join(parts[1:]))

    def prefix(self) -> Expr:
        tok = self.advance()
        kind = tok.kind
        if kind == lx.NUMBER:
            return self.number(tok)
        if kind == lx.STRING:
            return Literal(tok.pos, tok.text)
        if kind in (lx.DATE, lx.DATETIME, lx.TIME):
            temporal_kind = {lx.DATE: DATE, lx.DATETIME: DATETIME, lx.TIME: TIME}[kind]
            value = Temporal.parse(temporal_kind, tok.text[1:])
            if value is None:
                raise self.error(f"Invalid date/time literal {tok.text!r}", tok)
            return Literal(tok.pos, value)
        if kind == lx.IDENT:
            if tok.text in ("true", "false"):
                return Literal(tok.pos, tok.text == "true")
            if tok.text in _RESERVED:
                raise self.error(f"Unexpected keyword {tok.text!r}", tok)
            return self.member(tok)
        if kind == lx.DELIMITED:
            return self.member(tok)
        if kind == lx.VARIABLE:
            return Variable(tok.pos, tok.text)
        if kind == lx.SPECIAL:
            return Special(tok.pos, tok.text)
        if kind == lx.OP:
            if tok.text == "(":
                inner = self.expression(0)
                self.expect_op(")")
                return inner
            if tok.text == "{":
                self.expect_op("}")
                return EmptySet(tok.pos)
            if tok.text in ("+", "-"):
                return Unary(tok.pos, tok.text, self.expression(_PREFIX_BP))
        if kind == lx.EOF:
            raise self.error("Unexpected end of expression", tok)
        raise self.error(f"Unexpected {tok.text!r}", tok)

    def number(self, tok: lx.Token) -> Literal:
        value: int | Decimal = Decimal(tok.text) if "." in tok.text else int(tok.text)
        nxt = self.peek()
        if nxt.kind == lx.STRING:
            self.advance()
            return Literal(tok.pos, Quantity(Decimal(value), nxt.text))
        if nxt.kind == lx.IDENT and nxt.text in CALENDAR_UNITS:
            self.advance()
            return Literal(tok.pos, Quantity(Decimal(value), nxt.text))
        return Literal(tok.pos, value)


def parse(source: str) -> Expr:
    """Parse ``source`` into an AST; raises :class:`FhirPathSyntaxError` with a position."""
    return Parser(source).parse()
