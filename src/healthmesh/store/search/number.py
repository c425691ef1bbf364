"""Number and quantity search (R4 search.html#number, #quantity).

``eq``/``ne`` use the search value's implicit precision: ``100`` means [99.5, 100.5) and
``1e2`` means [50, 150). The ordering prefixes compare with the value itself (the range above
100 is everything greater than 100); ``ap`` is within 10 %. Quantities with a UCUM unit
compare in canonical units, so ``1|http://unitsofmeasure.org|g/L`` finds 100 mg/dL.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from psycopg import sql

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.fhir.search.extract import UCUM, ucum_unit
from healthmesh.fhir.search.query import Clause
from healthmesh.fhir.search_values import PREFIXES
from healthmesh.store.search.sqlbits import all_of, any_of, col

# Far beyond any clinical value, and well inside PostgreSQL numeric's range.
MAX_EXPONENT = 1000


def parse_number(clause: Clause, raw: str) -> tuple[str, Decimal]:
    prefix, rest = "eq", raw
    if raw[:2].isalpha():
        prefix, rest = raw[:2], raw[2:]
        if prefix not in PREFIXES:
            raise InvalidRequest(
                f"Unknown prefix '{prefix}' in {clause.name}={raw}", expression=clause.name
            )
    try:
        number = Decimal(rest)
    except InvalidOperation:
        raise InvalidRequest(
            f"'{rest}' in {clause.name} is not a number", expression=clause.name
        ) from None
    if not number.is_finite() or abs(number.adjusted()) > MAX_EXPONENT:
        raise InvalidRequest(
            f"'{rest}' in {clause.name} is not a number this server can compare",
            expression=clause.name,
        )
    return prefix, number


def precision_range(number: Decimal) -> tuple[Decimal, Decimal]:
    """Half a unit of the last significant digit either side (R4 search.html#number)."""
    half = Decimal(5).scaleb(number.as_tuple().exponent - 1)  # type: ignore[operator]
    return number - half, number + half


def number_condition(
    value: sql.Composable, prefix: str, number: Decimal, scale: Decimal = Decimal(1)
) -> sql.Composable:
    """``value`` against the search number; ``scale`` converts the query's unit to the
    column's (UCUM base units), applied after the precision range is taken in the query's own
    units — 26.19 mL/min means [26.185, 26.195) mL/min, whatever its digits in m3/s."""

    def lit(x: Decimal) -> sql.Composable:
        return sql.Literal(x * scale)

    match prefix:
        case "eq" | "ne":
            lo, hi = precision_range(number)
            inside = sql.SQL("({v} >= {lo} AND {v} < {hi})").format(v=value, lo=lit(lo), hi=lit(hi))
            return inside if prefix == "eq" else sql.SQL("NOT {}").format(inside)
        case "gt" | "sa":
            return sql.SQL("{} > {}").format(value, lit(number))
        case "lt" | "eb":
            return sql.SQL("{} < {}").format(value, lit(number))
        case "ge":
            return sql.SQL("{} >= {}").format(value, lit(number))
        case "le":
            return sql.SQL("{} <= {}").format(value, lit(number))
        case _:  # ap
            gap = abs(number) * Decimal("0.1")
            return sql.SQL("({v} >= {lo} AND {v} <= {hi})").format(
                v=value, lo=lit(number - gap), hi=lit(number + gap)
            )


def number_search(clause: Clause, i: sql.Identifier) -> sql.Composable:
    return any_of(
        [number_condition(col(i, "value"), *parse_number(clause, v)) for v in clause.values]
    )


def _quantity_value(clause: Clause, i: sql.Identifier, raw: str) -> sql.Composable:
    number_part, _, unit_part = raw.partition("|")
    system, _, code = unit_part.partition("|") if "|" in unit_part else ("", "", unit_part)
    prefix, number = parse_number(clause, number_part)
    if system == UCUM and code and (unit := ucum_unit(system, code)) is not None:
        factor, canon_code = unit
        if factor > 0:
            scaled = number_condition(col(i, "canonical_value"), prefix, number, factor)
            return all_of(
                [
                    sql.SQL("{} = {}").format(col(i, "canonical_code"), sql.Literal(canon_code)),
                    scaled,
                ]
            )
    conds = [number_condition(col(i, "value"), prefix, number)]
    if system:
        conds.append(sql.SQL("{} = {}").format(col(i, "system"), sql.Literal(system)))
    if code and system:
        conds.append(sql.SQL("{} = {}").format(col(i, "code"), sql.Literal(code)))
    elif code:  # value||code: the code or the unit as written (R4 search.html#quantity)
        conds.append(
            sql.SQL("({c} = {v} OR {u} = {v})").format(
                c=col(i, "code"), u=col(i, "unit"), v=sql.Literal(code)
            )
        )
    return all_of(conds)


def quantity_search(clause: Clause, i: sql.Identifier) -> sql.Composable:
    return any_of([_quantity_value(clause, i, v) for v in clause.values])
