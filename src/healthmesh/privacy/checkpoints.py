"""Signed checkpoints of the audit chain head: JWS (RFC 7515) signed Ed25519 (RFC 9864).

A hash chain alone proves order, not authorship: whoever can write the table can recompute
every hash after an edit. A checkpoint signs (seq, hash) of the head with a key of the node,
so rewriting anything up to a checkpoint breaks a signature, and truncating the tail below a
checkpoint leaves it pointing past the end. The chain takes one every
:data:`CHECKPOINT_EVERY` entries on its own, and at every purge (kind ``purge``: where the
chain restarts once retention has removed the entries before it).

The node's own keys (``audit_signing_key``) are used rather than the token-signing keys,
because those are deleted once retired and checkpoints must stay verifiable for the whole
retention period. Export the public keys (``healthmesh audit verify --print-keys``) and pin
them elsewhere: keys kept in the same database can be replaced by whoever can replace rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from healthmesh.store import audit_store
from healthmesh.store.audit_store import Conn
from healthmesh.store.key_sealing import seal, unseal

ALGORITHM = "Ed25519"  # RFC 9864 fully-specified EdDSA
CHECKPOINT_EVERY = 1000
_keys: dict[str, OKPKey] = {}  # kid -> parsed private key, per process


async def signing_key(conn: Conn) -> tuple[str, OKPKey]:
    """The newest checkpoint key, created on first use."""
    found = await audit_store.newest_key(conn)
    if found is None:
        key = OKPKey.generate_key("Ed25519", private=True)
        kid = key.thumbprint()
        public = {**key.as_dict(private=False), "kid": kid, "alg": ALGORITHM, "use": "sig"}
        await audit_store.insert_key(conn, kid, seal(key.as_pem(private=True).decode()), public)
        _keys[kid] = key
        return kid, key
    kid, pem = found
    if kid not in _keys:
        _keys[kid] = OKPKey.import_key(unseal(pem))
    return kid, _keys[kid]


async def sign_head(conn: Conn, seq: int, hash: bytes, kind: str, **claims: Any) -> str:
    """Sign and store a checkpoint of entry ``seq`` (whose chain hash is ``hash``)."""
    kid, key = await signing_key(conn)
    payload = {
        "seq": seq,
        "hash": hash.hex(),
        "kind": kind,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        **claims,
    }
    token = jws.serialize_compact(
        {"alg": ALGORITHM, "kid": kid, "typ": "healthmesh-audit-checkpoint"},
        orjson.dumps(payload),
        key,
        algorithms=[ALGORITHM],
    )
    await audit_store.insert_checkpoint(conn, seq, kind, hash, token)
    return token


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    kind: str
    hash: bytes
    claims: dict[str, Any]
    valid: bool  # signature good, by a known key, and the signed claims match the row
    reason: str = ""


def check(
    seq: int, kind: str, hash: bytes, token: str, public_keys: dict[str, dict[str, Any]]
) -> Checkpoint:
    """A stored checkpoint, its signature verified against ``public_keys`` (kid -> JWK)."""
    try:
        kid = jws.extract_compact(token.encode()).protected.get("kid")
        jwk = public_keys.get(str(kid))
        if jwk is None:
            return Checkpoint(seq, kind, hash, {}, False, f"signed by an unknown key {kid!r}")
        found = jws.deserialize_compact(token, OKPKey.import_key(jwk), algorithms=[ALGORITHM])
        claims = orjson.loads(found.payload)
    except (JoseError, ValueError) as bad:
        return Checkpoint(seq, kind, hash, {}, False, f"bad signature ({type(bad).__name__})")
    if claims.get("seq") != seq or claims.get("kind") != kind or claims.get("hash") != hash.hex():
        return Checkpoint(seq, kind, hash, claims, False, "the row does not match what was signed")
    return Checkpoint(seq, kind, hash, claims, True)
