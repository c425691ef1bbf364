"""The node as a SMART Health Card issuer: its ES256 keys, issued cards and revocations.

Keys live in PostgreSQL (``shc_issuer_key``; kid = RFC 7638 thumbprint of the P-256 key),
created on first start under an advisory lock, so every server process signs with the same
key. Each card gets a random 64-bit revocation id (``rid``) recorded in ``shc_card``;
revoking it lists the rid in ``/.well-known/crl/<kid>.json`` and raises the key's
``crlVersion`` in the JWKS (the number of revoked rids, so it only grows).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc.jwk import ECKey
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from healthmesh.share import shc
from healthmesh.share.errors import InvalidRequest, LinkNotFound
from healthmesh.share.jwe import b64url
from healthmesh.store.key_sealing import active_private_key, seal

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]
_LOCK = 0x5348_435F_4B45  # advisory lock "SHC_KE": one process creates the first key
KINDS = ("immunization", "laboratory")


def public_jwk(kid: str, key: ECKey) -> dict[str, Any]:
    return {**key.as_dict(private=False), "kid": kid, "use": "sig", "alg": "ES256"}


class IssuerKeys:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._private: dict[str, ECKey] = {}

    async def ensure_active(self) -> str:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            cur = await conn.execute(
                "SELECT kid FROM shc_issuer_key WHERE retired_at IS NULL"
                " ORDER BY created_at DESC LIMIT 1"
            )
            row = await cur.fetchone()
            if row is not None:
                return str(row[0])
            key = ECKey.generate_key("P-256", private=True)
            kid = key.thumbprint()
            await conn.execute(
                "INSERT INTO shc_issuer_key (kid, private_pem, public_jwk) VALUES (%s, %s, %s)",
                (kid, seal(key.as_pem(private=True).decode()), Jsonb(public_jwk(kid, key))),
            )
            self._private[kid] = key
            return kid

    async def signing_key(self) -> tuple[str, ECKey]:
        async with self.pool.connection() as conn:
            found = await active_private_key(
                conn, "shc_issuer_key", self._private, ECKey.import_key
            )
        if found is None:
            raise RuntimeError("no SHC issuer key: IssuerKeys.ensure_active() was not run")
        return found

    async def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """Every key (cards outlive key rotation), with ``crlVersion`` once it revoked any."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT k.public_jwk, (SELECT count(*) FROM shc_card c WHERE c.kid = k.kid"
                " AND c.revoked_at IS NOT NULL) FROM shc_issuer_key k ORDER BY k.created_at DESC"
            )
            rows = await cur.fetchall()
        keys = []
        for jwk, revoked in rows:
            entry = dict(jwk)
            if revoked:
                entry["crlVersion"] = int(revoked)
            keys.append(entry)
        return {"keys": keys}

    async def crl(self, kid: str) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM shc_issuer_key WHERE kid = %s", (kid,))
            if await cur.fetchone() is None:
                return None
            cur = await conn.execute(
                "SELECT rid FROM shc_card WHERE kid = %s AND revoked_at IS NOT NULL"
                " ORDER BY revoked_at, rid",
                (kid,),
            )
            rids = [str(r[0]) for r in await cur.fetchall()]
        return {"kid": kid, "method": "rid", "ctr": len(rids), "rids": rids}


class CardIssuer:
    """Issues cards from what this node holds about the patient: never from what a caller
    sends, since a signature is the issuer's word that the data is its own."""

    def __init__(self, pool: Pool, keys: IssuerKeys) -> None:
        self.pool = pool
        self.keys = keys

    async def _resources(self, patient: str, kind: str) -> list[dict[str, Any]]:
        res_type = "Immunization" if kind == "immunization" else "Observation"
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT content FROM resource WHERE res_type = 'Patient' AND id = %s"
                " AND NOT deleted",
                (patient,),
            )
            row = await cur.fetchone()
            if row is None:
                raise InvalidRequest("this node holds no Patient record for you")
            found = [_json(row[0])]
            cur = await conn.execute(
                "SELECT content FROM resource WHERE patient_id = %s AND res_type = %s"
                " AND NOT deleted ORDER BY last_updated, id",
                (patient, res_type),
            )
            items = [_json(r[0]) for r in await cur.fetchall()]
        if kind == "laboratory":
            items = [r for r in items if _is_lab(r)]
        else:
            items = [r for r in items if r.get("status") == "completed"]
        if not items:
            raise InvalidRequest(f"this node holds no {kind} records for you")
        patient_resource = found[0]
        minimal_patient: dict[str, Any] = {
            k: patient_resource[k]
            for k in ("resourceType", "id", "name", "birthDate")
            if k in patient_resource
        }
        return [minimal_patient, *items]

    async def issue(self, patient: str, kind: str, *, iss: str) -> dict[str, Any]:
        """A new card of ``kind`` (immunization | laboratory) for the patient."""
        if kind not in KINDS:
            raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}")
        resources = await self._resources(patient, kind)
        kid, key = await self.keys.signing_key()
        rid = b64url(secrets.token_bytes(8))
        claims = shc.card_claims(iss, shc.card_bundle(resources), nbf=int(time.time()), rid=rid)
        card = shc.sign(claims, key, kid)
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO shc_card (rid, kid, patient_id, kind) VALUES (%s, %s, %s, %s)",
                (rid, kid, patient, kind),
            )
        body: dict[str, Any] = {
            "rid": rid,
            "kind": kind,
            "jws": card,
            "file": shc.health_card_file([card]),
        }
        body["qr"] = shc.numeric(card) if len(card) <= shc.MAX_SINGLE_QR else None
        return body

    async def cards(self, patient: str) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT rid, kind, issued_at, revoked_at FROM shc_card WHERE patient_id = %s"
                " ORDER BY issued_at DESC",
                (patient,),
            )
            rows = await cur.fetchall()
        return [
            {
                "rid": r[0],
                "kind": r[1],
                "issued": r[2].isoformat(),
                **({"revoked": r[3].isoformat()} if r[3] else {}),
            }
            for r in rows
        ]

    async def revoke(self, patient: str, rid: str) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE shc_card SET revoked_at = coalesce(revoked_at, now())"
                " WHERE rid = %s AND patient_id = %s RETURNING rid",
                (rid, patient),
            )
            if await cur.fetchone() is None:
                raise LinkNotFound("you have no card with this rid")


def _json(content: str) -> dict[str, Any]:
    import orjson

    value: dict[str, Any] = orjson.loads(content)
    return value


def _is_lab(resource: dict[str, Any]) -> bool:
    return any(
        c.get("code") == "laboratory"
        for cat in resource.get("category", [])
        for c in cat.get("coding", [])
    )
