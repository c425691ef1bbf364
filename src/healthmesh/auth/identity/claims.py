"""The three IAL2 id_token claim shapes of the ecosystem, read into one IdentityClaims.

SPECS.md §3 ("IAL2 id_token claim shapes ... accept all three"):

- **CSP payload** (flat): ``given_name``, ``family_name`` / ``last_name``, ``middle_name``,
  ``birthdate``, ``email``, ``phone_number``, ``address{street_address, locality, region,
  postal_code, country}``, ``ssn_itin_short``, ``identity_assurance_level: 2``.
- **TEFCA IAS**: the same OpenID Connect standard claims plus ``ssn_last_four_digits``,
  ``historical_address`` (and historical names).
- **OIDC4IDA** (OpenID Connect for Identity Assurance 1.0): ``verified_claims{verification,
  claims}``, one object or a list of them; only claims inside ``verified_claims`` were
  verified, so those win over any flat claim of the same name.

Pure functions, no I/O. A claim of the wrong JSON type is refused, never guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from healthmesh.auth.identity.errors import IdentityRefused

SHAPE_CSP = "csp"
SHAPE_TEFCA = "tefca"
SHAPE_OIDC4IDA = "oidc4ida"

# acr values that state IAL2 or higher (NIST SP 800-63-3 as Login.gov publishes them).
_IAL_ACR = re.compile(r"(?:^|[/:])ial/?([123])$", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostalAddress:
    lines: tuple[str, ...] = ()
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonName:
    given: str | None = None
    middle: str | None = None
    family: str | None = None
    suffix: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityClaims:
    """What a verified IAL2 id_token says: who issued it, about whom, and how sure."""

    issuer: str
    subject: str
    jwt_id: str
    audience: tuple[str, ...]
    expires_at: int
    issued_at: int
    auth_time: int
    assurance_level: int  # 2 for IAL2
    shape: str  # SHAPE_CSP, SHAPE_TEFCA or SHAPE_OIDC4IDA
    names: tuple[PersonName, ...] = ()  # current first, then historical
    birthdate: str | None = None  # YYYY-MM-DD as stated
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    addresses: tuple[PostalAddress, ...] = ()  # current first, then historical
    ssn_last4: str | None = None
    medicare_id: str | None = None  # Medicare Beneficiary Identifier, when the CSP has it
    gender: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # nothing PHI-free is lost

    def __repr__(self) -> str:  # demographics stay out of tracebacks and logs
        return (
            f"IdentityClaims(issuer={self.issuer!r}, shape={self.shape!r}, "
            f"assurance_level={self.assurance_level})"
        )


def _malformed(name: str, what: str) -> IdentityRefused:
    return IdentityRefused(f"id_token claim {name!r} {what}", code="malformed_claim")


def _text(claims: Mapping[str, Any], *names: str) -> str | None:
    """The first of ``names`` present as a non-empty string; a non-string is refused."""
    for name in names:
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _malformed(name, "is not a string")
        text = str(value).strip()
        if text:
            return text
    return None


def _texts(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, str):
            raise _malformed(name, "is not a string or a list of strings")
        if item.strip():
            out.append(item.strip())
    return out


def _address(name: str, value: object) -> PostalAddress:
    if not isinstance(value, Mapping):
        raise _malformed(name, "is not an address object")
    street = _text(value, "street_address")
    lines: list[str] = street.splitlines() if street else []
    line = value.get("line")  # FHIR-style addresses appear in some TEFCA payloads
    if isinstance(line, list):
        lines.extend(x for x in line if isinstance(x, str))
    return PostalAddress(
        lines=tuple(x.strip() for x in lines if x.strip()),
        city=_text(value, "locality", "city"),
        state=_text(value, "region", "state"),
        postal_code=_text(value, "postal_code", "postalCode"),
        country=_text(value, "country"),
    )


def _addresses(name: str, value: object) -> list[PostalAddress]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [_address(name, item) for item in items]


def _name_of(claims: Mapping[str, Any]) -> PersonName | None:
    name = PersonName(
        given=_text(claims, "given_name", "first_name"),
        middle=_text(claims, "middle_name"),
        family=_text(claims, "family_name", "last_name"),
        suffix=_text(claims, "name_suffix", "suffix"),
    )
    return name if (name.given or name.family) else None


def _historical_names(claims: Mapping[str, Any]) -> list[PersonName]:
    value = claims.get("historical_name", claims.get("historical_names"))
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if not isinstance(item, Mapping):
            raise _malformed("historical_name", "is not a name object")
        name = _name_of(item)
        if name is not None:
            names.append(name)
    return names


def _level(value: object) -> int:
    """2 from 2, "2", "IAL2", "ial2", ".../ial/2"; 0 when nothing says."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _IAL_ACR.search(text) or re.fullmatch(r"(?i)(?:ial)?([0-9])", text)
        return int(match.group(1)) if match else 0
    return 0


def _verified(payload: Mapping[str, Any]) -> tuple[dict[str, Any], int] | None:
    """OIDC4IDA: the union of verified ``claims`` and the lowest stated assurance level."""
    value = payload.get("verified_claims")
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    merged: dict[str, Any] = {}
    levels: list[int] = []
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("claims"), Mapping):
            raise _malformed("verified_claims", "has no claims object")
        verification = item.get("verification")
        if not isinstance(verification, Mapping):
            raise _malformed("verified_claims", "has no verification object")
        levels.append(
            _level(verification.get("assurance_level"))
            or _level(verification.get("identity_assurance_level"))
        )
        for key, claim in item["claims"].items():
            merged.setdefault(key, claim)
    return merged, min(levels) if levels else 0


def assurance_level(payload: Mapping[str, Any]) -> int:
    """The identity assurance level the token states, top-level or in verified_claims."""
    levels = [
        _level(payload.get("identity_assurance_level")),
        _level(payload.get("ial")),
        _level(payload.get("acr")),
    ]
    verified = _verified(payload)
    if verified is not None:
        levels.append(verified[1])
    # Claims that disagree (acr says IAL2, identity_assurance_level says 1): believe the
    # lowest a token states, never the highest.
    stated = [level for level in levels if level]
    return min(stated) if stated else 0


def _shape(payload: Mapping[str, Any]) -> str:
    if "verified_claims" in payload:
        return SHAPE_OIDC4IDA
    tefca = ("ssn_last_four_digits", "historical_address", "historical_name")
    if any(key in payload for key in tefca):
        return SHAPE_TEFCA
    return SHAPE_CSP


def _audience(payload: Mapping[str, Any]) -> tuple[str, ...]:
    aud = payload.get("aud")
    items = aud if isinstance(aud, list) else [aud]
    if not items or not all(isinstance(a, str) and a for a in items):
        raise _malformed("aud", "is not a string or a list of strings")
    return tuple(items)


def _number(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(name, "is not a number (NumericDate, RFC 7519 §2)")
    return int(value)


def _ssn4(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    digits = re.sub(r"\D", "", value)
    if len(digits) < 4:
        raise _malformed(name, "does not hold four digits")
    return digits[-4:]


def read_claims(payload: Mapping[str, Any]) -> IdentityClaims:
    """Normalise a verified id_token payload (any of the three shapes) into IdentityClaims."""
    shape = _shape(payload)
    person: Mapping[str, Any] = payload
    if shape == SHAPE_OIDC4IDA:
        verified = _verified(payload)
        assert verified is not None
        # Verified claims first; flat claims fill only what verification did not cover.
        person = {**payload, **verified[0]}
    names: list[PersonName] = []
    current = _name_of(person)
    if current is not None:
        names.append(current)
    names.extend(_historical_names(person))
    addresses = _addresses("address", person.get("address"))
    addresses += _addresses("historical_address", person.get("historical_address"))
    ssn = _ssn4(_text(person, "ssn_itin_short"), "ssn_itin_short") or _ssn4(
        _text(person, "ssn_last_four_digits", "ssn_last4"), "ssn_last_four_digits"
    )
    phones = _texts(person, "phone_number") + _texts(person, "historical_phone_number")
    return IdentityClaims(
        issuer=str(payload["iss"]),
        subject=str(payload["sub"]),
        jwt_id=str(payload["jti"]),
        audience=_audience(payload),
        expires_at=_number(payload, "exp"),
        issued_at=_number(payload, "iat"),
        auth_time=_number(payload, "auth_time"),
        assurance_level=assurance_level(payload),
        shape=shape,
        names=tuple(names),
        birthdate=_text(person, "birthdate", "birth_date"),
        emails=tuple(_texts(person, "email")),
        phones=tuple(phones),
        addresses=tuple(addresses),
        ssn_last4=ssn,
        medicare_id=_text(person, "medicare_beneficiary_identifier", "mbi"),
        gender=_text(person, "gender", "sex"),
        extra={k: v for k, v in payload.items() if k in ("acr", "amr", "nonce", "sid")},
    )
