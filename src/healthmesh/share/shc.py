"""SMART Health Cards: the card format, no I/O (SMART Health Cards spec; SPECS.md §7).

A card is a JWS compact ``{alg: ES256, zip: DEF, kid}`` whose payload is minified JSON, raw
DEFLATEd, with claims ``iss``, ``nbf`` and ``vc`` = ``{type: [..#health-card],
credentialSubject: {fhirVersion, fhirBundle}}``. The Bundle is ``collection`` with
``resource:N`` fullUrls and references and without ``id``, ``meta``, ``text``,
``CodeableConcept.text`` or ``Coding.display`` ("Health Cards are small"). In a QR code a card
is ``shc:/`` + two digits per JWS character (``ord(c) - 45``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import Any

import orjson
from joserfc import jws
from joserfc.jwk import ECKey
from joserfc.registry import HeaderParameter, is_str

HEALTH_CARD = "https://smarthealth.cards#health-card"
FHIR_VERSION = "4.0.1"
MAX_SINGLE_QR = 1195  # characters of JWS that fit one version-22 QR at error correction L
MAX_PAYLOAD = 4 * 1024 * 1024  # decompressed bytes a verifier accepts
# `zip` is not a registered JWS header parameter (SPECS.md §7): register it.
REGISTRY = jws.JWSRegistry(
    header_registry={"zip": HeaderParameter("Compression", is_str)}, algorithms=["ES256"]
)
_CHUNK = re.compile(r"shc:/(?:(\d+)/(\d+)/)?(\d+)")


class MalformedCard(ValueError):
    """Not a card: bad compact form, bad compression, bad JSON, bad numeric QR value."""


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def inflate(data: bytes) -> bytes:
    unpacker = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        value = unpacker.decompress(data, MAX_PAYLOAD)
    except zlib.error:
        raise MalformedCard("the payload is not raw DEFLATE") from None
    if unpacker.unconsumed_tail or not unpacker.eof:
        raise MalformedCard("the payload is truncated or too large")
    return value


# --- the Bundle ---------------------------------------------------------------------------

_STRIP_RESOURCE = ("id", "meta", "text")


def _minimise(value: Any, refs: dict[str, str], in_resource_root: bool = False) -> Any:
    if isinstance(value, list):
        items = [_minimise(v, refs) for v in value]
        return [v for v in items if v is not None]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for name, item in value.items():
        if in_resource_root and name in _STRIP_RESOURCE:
            continue
        if name == "display" and "code" in value and ("system" in value or "version" in value):
            continue  # Coding.display
        if name == "text" and "coding" in value:
            continue  # CodeableConcept.text
        if name == "contained":
            continue
        if name == "reference" and isinstance(item, str):
            if item in refs:
                out[name] = refs[item]
            continue  # a reference outside the card: keep only its display, if any
        minimal = _minimise(item, refs)
        if minimal not in (None, {}, []):
            out[name] = minimal
    if set(value) & {"reference", "display"} and not out:
        return None  # a Reference left empty
    return out


def card_bundle(resources: Iterable[dict[str, Any] | tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A minimal ``collection`` Bundle of ``resources`` (the Patient first) for a card.

    Items are resources or ``(fullUrl, resource)`` pairs; references to ``Type/id`` or to a
    given fullUrl become ``resource:N``, others keep only their display.
    """
    items = [item if isinstance(item, tuple) else ("", item) for item in resources]
    refs: dict[str, str] = {}
    for n, (full_url, resource) in enumerate(items):
        short = f"resource:{n}"
        if "id" in resource:
            refs[f"{resource['resourceType']}/{resource['id']}"] = short
        if full_url:
            refs[full_url] = short
    entries = [
        {"fullUrl": f"resource:{n}", "resource": _minimise(r, refs, in_resource_root=True)}
        for n, (_, r) in enumerate(items)
    ]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def card_claims(
    iss: str, bundle: dict[str, Any], *, nbf: int, rid: str | None = None
) -> dict[str, Any]:
    vc: dict[str, Any] = {
        "type": [HEALTH_CARD],
        "credentialSubject": {"fhirVersion": FHIR_VERSION, "fhirBundle": bundle},
    }
    if rid is not None:
        vc["rid"] = rid
    return {"iss": iss, "nbf": nbf, "vc": vc}


def sign(claims: dict[str, Any], key: ECKey, kid: str) -> str:
    """The card: JWS compact over raw-DEFLATEd minified claims (orjson is minified)."""
    header = {"zip": "DEF", "alg": "ES256", "kid": kid}
    return jws.serialize_compact(header, deflate(orjson.dumps(claims)), key, registry=REGISTRY)


def health_card_file(cards: Iterable[str]) -> dict[str, list[str]]:
    """The ``.smart-health-card`` file body (application/smart-health-card)."""
    return {"verifiableCredential": list(cards)}


# --- numeric QR values ---------------------------------------------------------------------


def numeric(card: str) -> str:
    """``shc:/`` + two digits per character, ``ord(c) - 45`` (the JWS alphabet is 45..122)."""
    digits = []
    for c in card:
        code = ord(c) - 45
        if not 0 <= code <= 77:
            raise MalformedCard(f"character {c!r} cannot be in a numeric QR value")
        digits.append(f"{code:02d}")
    return "shc:/" + "".join(digits)


def from_numeric(values: Iterable[str]) -> str:
    """The JWS from one QR value, or from every chunk (``shc:/i/n/…``) in any order."""
    chunks: dict[int, str] = {}
    total = 1
    for value in values:
        match = _CHUNK.fullmatch(value.strip())
        if match is None:
            raise MalformedCard("a card QR value is shc:/[i/n/]digits")
        index, count, digits = match.groups()
        if len(digits) % 2:
            raise MalformedCard("a card QR value has an even number of digits")
        i, total = (int(index), int(count)) if index else (1, 1)
        chunks[i] = "".join(chr(int(digits[k : k + 2]) + 45) for k in range(0, len(digits), 2))
    if sorted(chunks) != list(range(1, total + 1)):
        raise MalformedCard(f"expected chunks 1..{total}, got {sorted(chunks)}")
    return "".join(chunks[i] for i in range(1, total + 1))
