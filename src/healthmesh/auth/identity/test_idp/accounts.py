"""Test IdP accounts: one per synthetic Patient in the store, with a deterministic demo
password and TOTP secret (derived from the installation seed, so the same database always
prints the same ones), the password stored as an scrypt hash (RFC 7914).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyotp

from healthmesh.auth.identity import normalize
from healthmesh.auth.identity.matching import MBI_SYSTEM, SSN_SYSTEM
from healthmesh.store.identity_provider import AccountRow, IdpStore
from healthmesh.store.repository import Repository

# scrypt cost: N=2^14, r=8, p=1 (~0.1 s here). Enough for synthetic people; a real IdP
# would use more (OWASP: N=2^17).
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            dklen=32,
            n=int(n),
            r=int(r),
            p=int(p),
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def _derive(seed: bytes, purpose: str, patient_id: str) -> bytes:
    return hmac.new(seed, f"{purpose}:{patient_id}".encode(), hashlib.sha256).digest()


def demo_password(seed: bytes, patient_id: str) -> str:
    raw = base64.b32encode(_derive(seed, "password", patient_id)).decode().lower()
    return f"demo-{raw[:4]}-{raw[4:8]}-{raw[8:12]}"


def totp_secret(seed: bytes, patient_id: str) -> str:
    return base64.b32encode(_derive(seed, "totp", patient_id)[:20]).decode()


def subject(seed: bytes, patient_id: str) -> str:
    return _derive(seed, "sub", patient_id).hex()[:32]


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return re.sub(r"[^a-z]", "", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _first(values: object) -> str | None:
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    return values if isinstance(values, str) else None


def _official_name(patient: Mapping[str, Any]) -> Mapping[str, Any]:
    names = [n for n in patient.get("name", []) if isinstance(n, Mapping)]
    for name in names:
        if name.get("use") in ("official", "usual"):
            return name
    return names[0] if names else {}


def claims_of_patient(patient: Mapping[str, Any]) -> dict[str, Any]:
    """The person's demographics in the CMS flat "CSP payload" claim shape (SPECS.md §3)."""
    name = _official_name(patient)
    given = [g for g in name.get("given", []) if isinstance(g, str)]
    claims: dict[str, Any] = {
        "given_name": given[0] if given else None,
        "middle_name": " ".join(given[1:]) or None,
        "family_name": name.get("family"),
        "name_suffix": _first(name.get("suffix")),
        "birthdate": patient.get("birthDate"),
        "gender": patient.get("gender"),
    }
    for telecom in patient.get("telecom", []):
        if not isinstance(telecom, Mapping) or not isinstance(telecom.get("value"), str):
            continue
        if telecom.get("system") == "phone" and "phone_number" not in claims:
            claims["phone_number"] = normalize.phone(telecom["value"]) or telecom["value"]
        if telecom.get("system") == "email" and "email" not in claims:
            claims["email"] = telecom["value"]
    addresses = [a for a in patient.get("address", []) if isinstance(a, Mapping)]
    if addresses:
        a = addresses[0]
        lines = [x for x in a.get("line", []) if isinstance(x, str)]
        claims["address"] = {
            k: v
            for k, v in {
                "street_address": "\n".join(lines) or None,
                "locality": a.get("city"),
                "region": a.get("state"),
                "postal_code": a.get("postalCode"),
                "country": a.get("country"),
            }.items()
            if v
        }
    for ident in patient.get("identifier", []):
        if not isinstance(ident, Mapping) or not isinstance(ident.get("value"), str):
            continue
        if ident.get("system") == SSN_SYSTEM:
            last4 = normalize.ssn_last4(ident["value"])
            if last4:
                claims["ssn_itin_short"] = last4
        elif ident.get("system") == MBI_SYSTEM:
            claims["medicare_beneficiary_identifier"] = ident["value"]
    return {k: v for k, v in claims.items() if v not in (None, "", {})}


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoAccount:
    """A test IdP login for one synthetic person: what `healthmesh idp accounts` prints."""

    username: str
    password: str
    totp_secret: str
    patient_id: str
    display_name: str
    birthdate: str | None

    def current_code(self) -> str:
        return pyotp.TOTP(self.totp_secret).now()

    def otpauth_uri(self, issuer_name: str = "HealthMesh TEST IdP") -> str:
        return pyotp.TOTP(self.totp_secret).provisioning_uri(
            name=self.username, issuer_name=issuer_name
        )


def _display(claims: Mapping[str, Any]) -> str:
    return " ".join(str(claims[k]) for k in ("given_name", "family_name") if claims.get(k))


def _username_base(claims: Mapping[str, Any], patient_id: str) -> str:
    parts = [_ascii(str(claims.get(k, ""))) for k in ("given_name", "family_name")]
    base = ".".join(p for p in parts if p)
    return base or f"person.{_ascii(patient_id)[:8] or 'x'}"


def _demo(seed: bytes, row: AccountRow) -> DemoAccount:
    claims = json.loads(row.claims)
    return DemoAccount(
        username=row.username,
        password=demo_password(seed, row.patient_id),
        totp_secret=row.totp_secret,
        patient_id=row.patient_id,
        display_name=_display(claims),
        birthdate=claims.get("birthdate"),
    )


async def _patients(
    repository: Repository, patient_ids: Sequence[str] | None
) -> AsyncIterator[tuple[str, str]]:
    if patient_ids is not None:
        for patient_id in patient_ids:
            version = await repository.read_current("Patient", patient_id)
            if version is not None and version.content is not None and not version.deleted:
                yield patient_id, version.content
        return
    after = ""
    while True:
        async with repository.session(write=False) as session:
            rows = await session.patients_after(after, 200)
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1][0]


async def provision_accounts(
    repository: Repository,
    store: IdpStore,
    *,
    patient_ids: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[DemoAccount]:
    """An account for each live Patient (or each of ``patient_ids``), at most ``limit`` new
    ones. Idempotent: existing accounts keep username, password and TOTP secret, and their
    claims follow the Patient. Returns the accounts provisioned or refreshed, by username."""
    seed = await store.seed()
    taken = await store.usernames()
    created = 0
    touched: list[AccountRow] = []
    async for patient_id, content in _patients(repository, patient_ids):
        claims = claims_of_patient(orjson.loads(content))
        existing = await store.account_of_patient(patient_id)
        if existing is None:
            if limit is not None and created >= limit:
                continue
            created += 1
            base = _username_base(claims, patient_id)
            username, n = base, 1
            while username in taken:
                n += 1
                username = f"{base}{n}"
            taken.add(username)
        row = AccountRow(
            username=existing.username if existing else username,
            patient_id=patient_id,
            subject=subject(seed, patient_id),
            password_hash=(
                existing.password_hash
                if existing is not None
                else hash_password(demo_password(seed, patient_id))
            ),
            totp_secret=totp_secret(seed, patient_id),
            last_totp_step=0,
            claims=json.dumps(claims, sort_keys=True),
        )
        await store.upsert_account(row)
        touched.append(row)
    return sorted((_demo(seed, row) for row in touched), key=lambda a: a.username)


async def demo_accounts(store: IdpStore, *, limit: int | None = 5) -> list[DemoAccount]:
    """Provisioned accounts with their demo credentials (for `healthmesh demo` to print)."""
    seed = await store.seed()
    rows = await store.accounts(limit if limit is not None else 1_000_000)
    return [_demo(seed, row) for row in rows]
