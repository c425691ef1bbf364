"""Consent resources flattened into rules, and the Consents refused as unenforceable."""

from __future__ import annotations

from typing import Any

import pytest

from healthmesh.fhir.consent import (
    CATEGORY_SYSTEM,
    CLIENT_ID_SYSTEM,
    PURPOSE_SYSTEM,
    ConsentError,
    consent_rules,
)

SCOPE = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
    ]
}


ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"


def consent(provision: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": SCOPE,
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
    }
    if provision is not None:
        body["provision"] = provision
    body.update(extra)
    return body


def app(client_id: str) -> dict[str, Any]:
    return {"reference": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}}}


def test_an_opt_out_is_one_base_deny_rule() -> None:
    (rule,) = consent_rules(consent({"type": "deny"}))
    assert (rule.effect, rule.depth, rule.is_base) == ("deny", 0, True)
    assert rule.actors is None and rule.purposes is None


def test_nested_provisions_are_deeper_and_inherit_their_parents_actor_and_period() -> None:
    rules = consent_rules(
        consent(
            {
                "type": "permit",
                "actor": [app("app-1")],
                "period": {"start": "2026-01-01", "end": "2026-12-31"},
                "provision": [
                    {
                        "type": "deny",
                        "code": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "labs"}]}],
                    }
                ],
            }
        )
    )
    base, labs = rules
    assert (base.effect, base.depth) == ("permit", 0)
    assert (labs.effect, labs.depth, labs.categories) == ("deny", 1, frozenset({"labs"}))
    assert labs.actors == frozenset({"client:app-1"})
    assert labs.start == base.start and labs.end == base.end


def test_actor_references_become_client_organization_and_person_keys() -> None:
    (rule,) = consent_rules(
        consent(
            {
                "type": "deny",
                "actor": [
                    app("app-9"),
                    {"reference": {"reference": "Organization/org-3"}},
                    {"reference": {"reference": "Practitioner/dr-7"}},
                ],
                "purpose": [{"system": PURPOSE_SYSTEM, "code": "HPAYMT"}],
            }
        )
    )
    assert rule.actors == frozenset({"client:app-9", "organization:org-3", "Practitioner/dr-7"})
    assert rule.purposes == frozenset({"HPAYMT"})


def test_a_provision_about_access_use_or_disclosure_is_enforced_as_any_other() -> None:
    actions = [{"coding": [{"system": ACTION, "code": c}]} for c in ("access", "disclose")]
    with_actions = consent_rules(consent({"type": "deny", "action": actions}))
    without = consent_rules(consent({"type": "deny"}))
    assert with_actions == without


def test_inactive_and_non_privacy_consents_make_no_rules() -> None:
    assert consent_rules(consent({"type": "deny"}, status="inactive")) == []
    other = consent({"type": "deny"})
    other["scope"] = {"coding": [{"system": "x", "code": "research"}]}
    assert consent_rules(other) == []


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (consent({"type": "maybe"}), "Consent.provision.type"),
        (consent(None), "Consent.provision"),
        (consent({"type": "deny"}, patient=None), "Consent.patient"),
        (
            consent({"type": "deny", "period": {"start": "2026-05-01", "end": "2026-04-01"}}),
            "Consent.provision.period",
        ),
        (
            consent(
                {
                    "type": "permit",
                    "purpose": [{"system": PURPOSE_SYSTEM, "code": "HMARKT"}],
                }
            ),
            "Consent.provision.purpose",
        ),
        (
            consent(
                {"type": "deny", "code": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "x"}]}]}
            ),
            "Consent.provision.code[0]",
        ),
        (
            consent({"type": "deny", "class": [{"system": "x", "code": "Observation"}]}),
            "Consent.provision.class[0]",
        ),
        (
            consent({"type": "deny", "actor": [{"reference": {"display": "someone"}}]}),
            "Consent.provision.actor[0].reference",
        ),
        (
            consent(
                {
                    "type": "permit",
                    "period": {"start": "2026-01-01", "end": "2026-02-01"},
                    "provision": [
                        {"type": "deny", "period": {"start": "2026-03-01", "end": "2026-04-01"}}
                    ],
                }
            ),
            "Consent.provision.provision[0].period",
        ),
        (
            consent({"type": "permit", "data": [{"meaning": "instance", "reference": {}}]}),
            "Consent.provision.data",
        ),
        (
            consent({"type": "permit", "dataPeriod": {"end": "2020-01-01"}}),
            "Consent.provision.dataPeriod",
        ),
        (
            consent(
                {"type": "deny", "action": [{"coding": [{"system": ACTION, "code": "collect"}]}]}
            ),
            "Consent.provision.action[0]",
        ),
        (
            consent({"type": "deny", "action": [{"text": "looking at it"}]}),
            "Consent.provision.action[0]",
        ),
    ],
)
def test_unenforceable_consents_are_refused_naming_the_element(
    body: dict[str, Any], where: str
) -> None:
    if body.get("patient") is None:
        body.pop("patient", None)
    with pytest.raises(ConsentError) as refused:
        consent_rules(body)
    assert where in [i.expression for i in refused.value.issues]
