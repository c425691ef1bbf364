"""The three IAL2 claim shapes (SPECS.md §3) read into one IdentityClaims."""

from __future__ import annotations

import pytest

from healthmesh.auth.identity import IdentityRefused, read_claims
from healthmesh.auth.identity.claims import assurance_level
from identity_support import ial2_claims


def test_the_flat_csp_payload_is_read() -> None:
    claims = read_claims(ial2_claims(middle_name="Augusta", last_name=None))
    assert claims.shape == "csp"
    name = claims.names[0]
    assert (name.given, name.middle, name.family) == ("Ada", "Augusta", "Lovelace")
    assert claims.birthdate == "1815-12-10"
    assert claims.emails == ("ada@example.org",) and claims.phones == ("+1 (555) 010-1815",)
    address = claims.addresses[0]
    assert address.lines == ("12 St James's Square",) and address.postal_code == "02139"
    assert claims.ssn_last4 == "1815"


def test_last_name_stands_for_family_name() -> None:
    payload = ial2_claims(family_name=None, last_name="Byron")
    assert read_claims(payload).names[0].family == "Byron"


def test_the_tefca_ias_shape_with_history_is_read() -> None:
    payload = ial2_claims(
        ssn_itin_short=None,
        ssn_last_four_digits="4321",
        historical_address=[
            {"street_address": "1 Old Road\nFlat 2", "locality": "Bath", "postal_code": "01010"}
        ],
        historical_name=[{"given_name": "Ada", "family_name": "Byron"}],
    )
    claims = read_claims(payload)
    assert claims.shape == "tefca" and claims.ssn_last4 == "4321"
    assert [a.lines for a in claims.addresses] == [
        ("12 St James's Square",),
        ("1 Old Road", "Flat 2"),
    ]
    assert [n.family for n in claims.names] == ["Lovelace", "Byron"]


def test_the_oidc4ida_verified_claims_shape_is_read_and_verified_values_win() -> None:
    payload = ial2_claims(
        identity_assurance_level=None,
        given_name="Unverified",
        verified_claims={
            "verification": {"trust_framework": "nist_800_63A", "assurance_level": "ial2"},
            "claims": {
                "given_name": "Grace",
                "family_name": "Hopper",
                "birthdate": "1906-12-09",
                "address": {"street_address": "1 Navy Way", "postal_code": "10001"},
            },
        },
    )
    claims = read_claims(payload)
    assert claims.shape == "oidc4ida" and claims.assurance_level == 2
    assert (claims.names[0].given, claims.names[0].family) == ("Grace", "Hopper")
    assert claims.birthdate == "1906-12-09" and claims.addresses[0].lines == ("1 Navy Way",)


def test_verified_claims_as_a_list_take_the_lowest_assurance() -> None:
    payload = {
        "verified_claims": [
            {"verification": {"assurance_level": "ial2"}, "claims": {"given_name": "A"}},
            {"verification": {"assurance_level": "ial1"}, "claims": {"family_name": "B"}},
        ]
    }
    assert assurance_level(payload) == 1


@pytest.mark.parametrize(
    ("payload", "level"),
    [
        ({"identity_assurance_level": 2}, 2),
        ({"identity_assurance_level": "2"}, 2),
        ({"identity_assurance_level": "IAL2"}, 2),
        ({"acr": "http://idmanagement.gov/ns/assurance/ial/2"}, 2),
        ({"acr": "http://idmanagement.gov/ns/assurance/ial/1"}, 1),
        ({"identity_assurance_level": True}, 0),
        ({}, 0),
    ],
)
def test_assurance_levels_are_read_from_each_way_of_saying_them(
    payload: dict[str, object], level: int
) -> None:
    assert assurance_level(payload) == level


def test_an_address_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(IdentityRefused) as caught:
        read_claims(ial2_claims(address="12 Main St"))
    assert caught.value.code == "malformed_claim" and "12 Main" not in caught.value.reason


def test_claims_repr_carries_no_demographics() -> None:
    text = repr(read_claims(ial2_claims()))
    assert "Ada" not in text and "1815" not in text
