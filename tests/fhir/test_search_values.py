"""Search value syntax: escaping, token forms, dates with prefixes (R4 search.html#escaping, #token, #date)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.fhir.search_values import parse_date, parse_token, split_escaped, split_or
from healthmesh.store.search.compiler import split_composite


def test_comma_separates_or_values_unless_escaped() -> None:
    assert split_or("a,b\\,c") == ["a", "b,c"]


def test_an_escaped_dollar_survives_the_comma_split_for_the_composite_split() -> None:
    (value,) = split_or("code\\$x$5")
    assert split_composite(value) == ["code$x", "5"]


def test_other_backslashes_are_kept() -> None:
    assert split_escaped("a\\b,c", ",") == ["a\\b", "c"]


@pytest.mark.parametrize(
    ("raw", "system", "code"),
    [("c", None, "c"), ("s|c", "s", "c"), ("|c", "", "c"), ("s|", "s", None)],
)
def test_token_forms(raw: str, system: str | None, code: str | None) -> None:
    token = parse_token("code", raw)
    assert (token.system, token.code) == (system, code)


def test_empty_token_parts_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_token("code", "|")


def test_date_prefix_and_precision() -> None:
    value = parse_date("date", "ge2020-02")
    assert value.prefix == "ge"
    assert value.interval.low == datetime(2020, 2, 1, tzinfo=UTC)
    assert value.interval.high == datetime(2020, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("raw", ["xx2020", "2020-13", "yesterday"])
def test_bad_dates_are_refused_naming_the_parameter(raw: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_date("birthdate", raw)
    assert caught.value.issues[0].expression == "birthdate"
