"""SMART Health Cards: the spec's example cards verify (03 revoked), tampering and unknown
issuers are refused, numeric QR values match, and our Bundle minimiser reproduces them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from joserfc.jwk import ECKey
from share_support import SHC_DATA, decode_qr_png

from healthmesh.share import qr, shc
from healthmesh.share.verify import CardRejected, CardVerifier, TrustedIssuer, VerifiedCard

EXAMPLES = SHC_DATA / "examples"
SPEC_ISSUER = "https://spec.smarthealth.cards/examples/issuer"
needs_shared = pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason=f"the spec's example cards are not at {EXAMPLES}"
)


def _spec_issuer() -> TrustedIssuer:
    well_known = EXAMPLES / "issuer/.well-known"
    crls = {}
    for path in (well_known / "crl").glob("*.json"):
        crl = json.loads(path.read_text())
        crls[crl["kid"]] = crl
    return TrustedIssuer(
        iss=SPEC_ISSUER, jwks=json.loads((well_known / "jwks.json").read_text()), crls=crls
    )


def _verify(card: str, *trusted: TrustedIssuer) -> VerifiedCard:
    result: VerifiedCard = asyncio.run(CardVerifier(trusted or [_spec_issuer()]).verify(card))
    return result


def _example(n: int, part: str) -> str:
    return (EXAMPLES / f"example-0{n}-{part}").read_text().strip()


@needs_shared
@pytest.mark.parametrize("n", [0, 1, 2])
def test_spec_example_cards_verify_as_valid(n: int) -> None:
    card = _verify(_example(n, "d-jws.txt"))
    assert card.valid
    assert card.iss == SPEC_ISSUER
    assert shc.HEALTH_CARD in card.types
    assert card.bundle == json.loads(_example(n, "a-fhirBundle.json"))


@needs_shared
def test_spec_example_03_is_reported_revoked() -> None:
    card = _verify(_example(3, "d-jws.txt"))
    assert card.revoked
    assert not card.valid
    assert card.rid == "vwAjHdarZuc"


@needs_shared
@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_example_files_and_numeric_qr_values_hold_the_same_card(n: int) -> None:
    jws = _example(n, "d-jws.txt")
    file_body = json.loads(_example(n, "e-file.smart-health-card"))
    verified = asyncio.run(CardVerifier([_spec_issuer()]).verify_file(file_body))
    assert [c.bundle for c in verified] == [_verify(jws).bundle]
    values = [p.read_text().strip() for p in sorted(EXAMPLES.glob(f"example-0{n}-f-*.txt"))]
    assert shc.from_numeric(values) == jws
    assert shc.from_numeric(list(reversed(values))) == jws  # chunks in any order
    if len(values) == 1:
        assert shc.numeric(jws) == values[0]
    assert shc.inflate(shc_payload(jws)) == _example(n, "c-jws-payload-minified.json").encode()


def shc_payload(jws: str) -> bytes:
    from healthmesh.share.jwe import b64url_decode

    return b64url_decode(jws.split(".")[1])


@needs_shared
def test_changing_any_single_byte_of_a_card_is_refused() -> None:
    jws = _example(0, "d-jws.txt")
    header_end, payload_end = jws.index("."), jws.rindex(".")
    for position in (header_end // 2, (header_end + payload_end) // 2, len(jws) - 3):
        original = jws[position]
        changed = jws[:position] + ("A" if original != "A" else "B") + jws[position + 1 :]
        with pytest.raises(CardRejected):
            _verify(changed)


@needs_shared
def test_cards_of_an_issuer_not_trusted_here_are_refused() -> None:
    other = TrustedIssuer(iss="https://other.example/issuer", jwks={"keys": []})
    with pytest.raises(CardRejected, match="not trusted"):
        _verify(_example(0, "d-jws.txt"), other)


@needs_shared
def test_card_qr_codes_are_byte_then_numeric_segments_that_read_back() -> None:
    value = _example(0, "f-qr-code-numeric-value-0.txt")
    assert decode_qr_png(qr.card_qr(value)) == value
    assert b"<svg" in qr.card_qr(value, "svg")


@needs_shared
@pytest.mark.parametrize(("fixture", "n"), [("covid-vaccines", 0), ("revoked", 3)])
def test_our_minimal_bundle_reproduces_the_spec_examples(fixture: str, n: int) -> None:
    source = json.loads((SHC_DATA / f"issuer-private/fixture-{fixture}-bundle.json").read_text())
    minimal = shc.card_bundle([(e["fullUrl"], e["resource"]) for e in source["entry"]])
    assert minimal == json.loads(_example(n, "a-fhirBundle.json"))


@needs_shared
def test_a_card_we_sign_with_the_spec_issuer_key_verifies_against_its_published_jwks() -> None:
    private = json.loads((SHC_DATA / "issuer-private/issuer.jwks.private.json").read_text())
    jwk = next(k for k in private["keys"] if k.get("use") == "sig" and "x5c" not in k)
    key = ECKey.import_key(jwk)
    bundle = json.loads(_example(0, "a-fhirBundle.json"))
    card = shc.sign(shc.card_claims(SPEC_ISSUER, bundle, nbf=int(time.time())), key, jwk["kid"])
    verified = _verify(card)
    assert verified.valid
    assert verified.bundle == bundle


def test_cards_signed_by_a_fresh_key_verify_and_refuse_a_changed_signature() -> None:
    key = ECKey.generate_key("P-256", private=True)
    kid = key.thumbprint()
    jwks: dict[str, Any] = {"keys": [{**key.as_dict(private=False), "kid": kid}]}
    issuer = TrustedIssuer(iss="https://issuer.example", jwks=jwks)
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}]}
    shot = {
        "resourceType": "Immunization",
        "id": "i1",
        "meta": {"versionId": "3"},
        "text": {"status": "generated", "div": "<div>x</div>"},
        "status": "completed",
        "vaccineCode": {
            "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "207", "display": "x"}],
            "text": "COVID-19",
        },
        "patient": {"reference": "Patient/p1"},
        "location": {"reference": "Location/elsewhere"},
        "occurrenceDateTime": "2021-01-01",
    }
    bundle = shc.card_bundle([patient, shot])
    assert bundle["entry"][1]["resource"] == {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "207"}]},
        "patient": {"reference": "resource:0"},
        "occurrenceDateTime": "2021-01-01",
    }
    card = shc.sign(shc.card_claims("https://issuer.example", bundle, nbf=1), key, kid)
    assert _verify(card, issuer).valid
    assert card.split(".")[0] == shc.sign({"x": 1}, key, kid).split(".")[0]  # same header
    signature = card.rsplit(".", 1)[1]
    tampered = card[: -len(signature)] + signature[::-1]
    with pytest.raises(CardRejected, match="signature"):
        _verify(tampered, issuer)
    value = shc.numeric(card)
    assert value.startswith("shc:/")
    assert shc.from_numeric([value]) == card
