"""Location ``near`` (R4 location.html#positional): within a distance of a point.

``near=lat|lon|distance|units``; units km (the default), m, mi or [mi_i]; without a distance,
10 km. Distance is great-circle (haversine) on a sphere of the Earth's mean radius.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from psycopg import sql

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.fhir.search.query import Clause

EARTH_RADIUS_KM = 6371.0088
DEFAULT_KM = 10.0
_TO_KM = {"km": 1.0, "m": 0.001, "mi": 1.609344, "[mi_i]": 1.609344}


def _number(clause: Clause, text: str, what: str) -> float:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidRequest(
            f"{clause.name}: {what} '{text}' is not a number", expression=clause.name
        ) from None
    if not value.is_finite():
        raise InvalidRequest(f"{clause.name}: {what} must be finite", expression=clause.name)
    return float(value)


def parse_near(clause: Clause, raw: str) -> tuple[float, float, float]:
    """(latitude, longitude, distance in km)."""
    parts = raw.split("|")
    if len(parts) < 2 or len(parts) > 4:
        raise InvalidRequest(
            f"{clause.name} takes latitude|longitude[|distance[|units]]", expression=clause.name
        )
    latitude, longitude = (
        _number(clause, parts[0], "latitude"),
        _number(clause, parts[1], "longitude"),
    )
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise InvalidRequest(
            f"{clause.name}: {latitude}|{longitude} is not a position on Earth",
            expression=clause.name,
        )
    distance = _number(clause, parts[2], "distance") if len(parts) > 2 and parts[2] else DEFAULT_KM
    units = parts[3] if len(parts) > 3 and parts[3] else "km"
    if units not in _TO_KM:
        raise InvalidRequest(
            f"{clause.name}: units must be one of {', '.join(_TO_KM)}", expression=clause.name
        )
    return latitude, longitude, distance * _TO_KM[units]


def condition(
    clause: Clause, raw: str, lat: sql.Identifier, lon: sql.Identifier, r: sql.Identifier
) -> sql.Composable:
    latitude, longitude, km = parse_near(clause, raw)
    haversine = sql.SQL(
        "2 * {R} * asin(sqrt(power(sin(radians({la}.value::float8 - {plat}) / 2), 2)"
        " + cos(radians({plat})) * cos(radians({la}.value::float8))"
        " * power(sin(radians({lo}.value::float8 - {plon}) / 2), 2)))"
    ).format(
        R=sql.Literal(EARTH_RADIUS_KM),
        la=lat,
        lo=lon,
        plat=sql.Literal(latitude),
        plon=sql.Literal(longitude),
    )
    return sql.SQL(
        "EXISTS (SELECT 1 FROM search_number {la} JOIN search_number {lo} ON {lo}.res_type = {la}.res_type"
        " AND {lo}.res_id = {la}.res_id AND {lo}.param = {p1} AND {lo}.elem = {la}.elem"
        " WHERE {la}.res_type = 'Location' AND {la}.res_id = {r}.id AND {la}.param = {p0} AND {h} <= {km})"
    ).format(
        la=lat,
        lo=lon,
        r=r,
        p0=sql.Literal(f"{clause.param.code}$0"),
        p1=sql.Literal(f"{clause.param.code}$1"),
        h=haversine,
        km=sql.Literal(km),
    )
