"""Matching an identity to exactly one local Patient (SPECS.md §4)."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from healthmesh.auth.identity import IdentityRefused, PatientMatcher, read_claims
from healthmesh.auth.identity import normalize as n
from healthmesh.auth.identity.matching import MatchDecision
from healthmesh.store.repository import Repository
from identity_support import ial2_claims

from support import FHIR_JSON


def test_normalisation_folds_case_whitespace_punctuation_and_diacritics() -> None:
    assert n.name("  José-María ") == n.name("jose maria") == "josemaria"
    assert n.name("O'Brien") == "obrien"
    assert n.name("UNKNOWN") is None and n.name("  ") is None


def test_phones_become_e164() -> None:
    assert n.phone("(555) 010-1815") == "+15550101815"
    assert n.phone("1-555-010-1815 ext 12") == "+15550101815"
    assert n.phone("+44 20 7946 0958") == "+442079460958"
    assert n.phone("555-1234") is None and n.phone("000-000-0000") is None


def test_addresses_are_standardised() -> None:
    assert n.street("123 North Main Street, Apt. 4") == n.street("123 N Main St Apt 4")
    assert n.street("12 Elm Avenue #3") == n.street("12 ELM AVE 3")


def test_placeholder_dates_and_ssns_are_absent() -> None:
    assert n.birthdate("1900-01-01") is None and n.birthdate("1970") is None
    assert n.birthdate("1970-05-12") == date(1970, 5, 12)
    assert n.ssn_last4("000-00-0000") is None and n.ssn_last4("123-45-0000") is None
    assert n.ssn_last4("999-12-3456") == "3456"


def test_damerau_levenshtein_counts_a_transposition_as_one() -> None:
    assert n.damerau_levenshtein("martha", "mratha") == 1
    assert n.damerau_levenshtein("martha", "marta") == 1
    assert n.damerau_levenshtein("martha", "mrtaha") == 2


# --- against the store -------------------------------------------------------------------


def _dob() -> str:
    """A birth date no other test uses, so each test sees only its own candidates."""
    day = date(1901, 1, 1) + timedelta(days=random.randrange(40_000))
    return day.isoformat()


def _patient(
    client: httpx.Client,
    *,
    given: str,
    family: str,
    dob: str,
    line: str = "12 Elm Street",
    ssn: str | None = "999-12-1815",
    suffix: str | None = None,
    old_family: str | None = None,
) -> str:
    names: list[dict[str, Any]] = [{"use": "official", "family": family, "given": [given]}]
    if suffix:
        names[0]["suffix"] = [suffix]
    if old_family:
        names.append({"use": "maiden", "family": old_family, "given": [given]})
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": names,
        "birthDate": dob,
        "address": [{"line": [line], "city": "Boston", "postalCode": "02139"}],
        "telecom": [{"system": "phone", "value": "555-010-1815"}],
    }
    if ssn:
        body["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn}]
    response = client.post("/Patient", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _decide(database_url: str, **claims: Any) -> MatchDecision:
    async def body() -> MatchDecision:
        repository = Repository(database_url, min_size=1, max_size=2)
        await repository.open()
        try:
            return await PatientMatcher(repository).decide(read_claims(ial2_claims(**claims)))
        finally:
            await repository.close()

    return asyncio.run(body())


def _identity(dob: str, **extra: Any) -> dict[str, Any]:
    return {
        "given_name": "Martha",
        "family_name": "Jones",
        "birthdate": dob,
        "address": {"street_address": "12 Elm St", "postal_code": "02139"},
        "ssn_itin_short": "1815",
        "phone_number": None,
        **extra,
    }


def test_an_exact_match_names_the_one_patient_and_its_rule(
    client: httpx.Client, database_url: str
) -> None:
    dob = _dob()
    pid = _patient(client, given="Martha", family="Jones", dob=dob)
    _patient(client, given="Rose", family="Tyler", dob=dob)
    decision = _decide(database_url, **_identity(dob))
    assert (decision.outcome, decision.patient_id) == ("matched", pid)
    assert decision.rule == "first+last+dob+ssn4" and decision.exact
    assert decision.candidate_count == 2


def test_one_fuzzy_field_within_the_rules_still_matches(
    client: httpx.Client, database_url: str
) -> None:
    dob = _dob()
    pid = _patient(client, given="Martha", family="Jones", dob=dob, ssn=None)
    decision = _decide(database_url, **_identity(dob, given_name="Mratha", ssn_itin_short=None))
    assert (decision.outcome, decision.patient_id) == ("matched", pid)
    assert decision.fuzzy_fields == ("first",) and not decision.exact


def test_two_fuzzy_fields_in_one_rule_do_not_match(client: httpx.Client, database_url: str) -> None:
    dob = _dob()
    _patient(client, given="Martha", family="Joness", dob=dob, ssn=None)
    decision = _decide(
        database_url,
        **_identity(dob, given_name="Marta", family_name="Jonesy", ssn_itin_short=None),
    )
    assert decision.outcome == "no_match"


def test_short_names_are_never_fuzzy(client: httpx.Client, database_url: str) -> None:
    dob = _dob()
    _patient(client, given="Ann", family="Lee", dob=dob, ssn=None)
    decision = _decide(
        database_url, **_identity(dob, given_name="Anne", family_name="Lee", ssn_itin_short=None)
    )
    assert decision.outcome == "no_match"


def test_twins_make_the_match_ambiguous_and_it_is_refused(
    client: httpx.Client, database_url: str
) -> None:
    dob = _dob()
    # Same surname, birth date, address and phone; first names one letter apart.
    _patient(client, given="Jaden", family="Smith", dob=dob, ssn=None)
    _patient(client, given="Jadon", family="Smith", dob=dob, ssn=None)
    identity = _identity(dob, given_name="Jaden", family_name="Smith", ssn_itin_short=None)
    decision = _decide(database_url, **identity)
    assert decision.outcome == "ambiguous" and len(decision.matched_ids) == 2
    assert decision.patient_id is None


def test_placeholder_values_count_as_absent(client: httpx.Client, database_url: str) -> None:
    _patient(client, given="Unknown", family="Unknown", dob="1900-01-01", ssn="000-00-0000")
    decision = _decide(
        database_url,
        given_name="UNKNOWN",
        family_name="unknown",
        birthdate="1900-01-01",
        ssn_itin_short="0000",
    )
    assert decision.outcome == "insufficient_demographics" and decision.candidate_count == 0


def test_a_suffix_mismatch_vetoes(client: httpx.Client, database_url: str) -> None:
    dob = _dob()
    _patient(client, given="Martha", family="Jones", dob=dob, suffix="Sr.")
    decision = _decide(database_url, **_identity(dob, name_suffix="Jr"))
    assert decision.outcome == "no_match" and decision.vetoed_count == 1


def test_a_historical_name_counts(client: httpx.Client, database_url: str) -> None:
    dob = _dob()
    pid = _patient(client, given="Martha", family="Smith", dob=dob, old_family="Jones")
    assert _decide(database_url, **_identity(dob)).patient_id == pid


def test_dob_one_day_off_matches_only_under_the_rule_that_allows_it(
    client: httpx.Client, database_url: str
) -> None:
    dob = _dob()
    pid = _patient(client, given="Martha", family="Jones", dob=dob)
    next_day = (date.fromisoformat(dob) + timedelta(days=1)).isoformat()
    decision = _decide(database_url, **_identity(next_day))
    assert (decision.outcome, decision.patient_id) == ("matched", pid)
    assert decision.rule == "first+last+street+ssn4+dob±1"
    without_street = _decide(database_url, **_identity(next_day, address=None))
    assert without_street.outcome == "no_match"


def test_nobody_matching_is_a_refusal_with_the_decision(
    client: httpx.Client, database_url: str
) -> None:
    dob = _dob()
    _patient(client, given="Rose", family="Tyler", dob=dob)

    async def body() -> IdentityRefused:
        repository = Repository(database_url, min_size=1, max_size=2)
        await repository.open()
        try:
            with pytest.raises(IdentityRefused) as caught:
                await PatientMatcher(repository).match(read_claims(ial2_claims(**_identity(dob))))
            return caught.value
        finally:
            await repository.close()

    refused = asyncio.run(body())
    assert refused.code == "no_match" and refused.decision is not None
    assert refused.decision.candidate_count == 1


def test_the_decision_log_line_carries_no_phi(
    client: httpx.Client, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dob = _dob()
    pid = _patient(client, given="Martha", family="Jones", dob=dob)
    with caplog.at_level(logging.INFO, logger="healthmesh.identity.matching"):
        decision = _decide(database_url, **_identity(dob))
    assert decision.patient_id == pid
    lines = [r.getMessage() for r in caplog.records if "patient match" in r.getMessage()]
    assert lines and '"outcome": "matched"' in lines[-1] and "first+last+dob+ssn4" in lines[-1]
    for secret in ("Martha", "martha", "Jones", dob, "1815", pid):
        assert secret not in lines[-1]
