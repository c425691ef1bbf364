"""Finding and rewriting literal references anywhere in a resource."""

from __future__ import annotations

from typing import Any

from healthmesh.fhir.references import iter_references, rewrite_references


def _resource() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "subject": {"reference": "urn:uuid:p"},
        "performer": [{"reference": "urn:uuid:d"}, {"display": "reference"}],
        "note": [{"text": "reference"}],
        "component": [
            {
                "valueString": "urn:uuid:p",
                "extension": [{"valueReference": {"reference": "urn:uuid:d"}}],
            }
        ],
        "contained": [
            {"resourceType": "Patient", "link": [{"other": {"reference": "urn:uuid:p"}}]}
        ],
        "reference": 7,  # not a string: not a reference
    }


def test_every_reference_string_is_rewritten_and_counted_and_nothing_else() -> None:
    resource = _resource()
    new = {"urn:uuid:p": "Patient/1", "urn:uuid:d": "Practitioner/2"}
    assert rewrite_references(resource, new.get) == 4
    assert sorted(iter_references(resource)) == [
        "Patient/1",
        "Patient/1",
        "Practitioner/2",
        "Practitioner/2",
    ]
    assert resource["component"][0]["valueString"] == "urn:uuid:p"
    assert resource["performer"][1] == {"display": "reference"}
    assert resource["reference"] == 7


def test_references_the_rewrite_leaves_alone_stay_and_are_not_counted() -> None:
    resource = _resource()
    assert rewrite_references(resource, lambda r: r if r.endswith("p") else None) == 0
    assert resource == _resource()
