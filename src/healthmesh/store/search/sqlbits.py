"""Small helpers for composing SQL safely: values are always literals, never formatted in."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

TRUE = sql.SQL("true")
FALSE = sql.SQL("false")


def any_of(conditions: Sequence[sql.Composable]) -> sql.Composable:
    if not conditions:
        return FALSE
    if len(conditions) == 1:
        return conditions[0]
    return sql.SQL("({})").format(sql.SQL(" OR ").join(conditions))


def all_of(conditions: Sequence[sql.Composable]) -> sql.Composable:
    if not conditions:
        return TRUE
    if len(conditions) == 1:
        return conditions[0]
    return sql.SQL("({})").format(sql.SQL(" AND ").join(conditions))


def like_prefix(value: str) -> str:
    """A LIKE pattern matching strings that start with ``value`` (wildcards escaped)."""
    return escape_like(value) + "%"


def like_contains(value: str) -> str:
    return "%" + escape_like(value) + "%"


def escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def col(alias: sql.Identifier, column: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(alias, sql.Identifier(column))
