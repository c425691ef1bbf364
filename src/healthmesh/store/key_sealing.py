"""The node's private keys at rest: sealed with its key-encryption key, when it has one.

Three kinds of private key live in PostgreSQL — the token signing keys (auth_signing_key),
the SMART Health Card issuer keys (shc_issuer_key) and the audit checkpoint keys
(audit_signing_key) — so that every process of a node signs with the same ones. A database
dump or backup would carry them, and with them the power to mint tokens, cards and
checkpoints. With ``HEALTHMESH_KEY_ENCRYPTION_KEY`` (or ``…_FILE``, a file holding it) set,
each is stored as an encrypted PKCS #8 PEM (RFC 5958 EncryptedPrivateKeyInfo; the
``cryptography`` library's best available scheme, PBES2 with AES-256) under that secret,
which lives outside the database (an environment secret, a mounted file, a KMS-fed
variable); :func:`reseal_all` encrypts keys written before it was set, at start-up.
Without it keys stay plain, and ``serve`` says so at start-up (docs/security.md) — but for
the embedded database, whose node keeps a generated key-encryption key beside its data
directory's database (:func:`use_local_file`).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

K = TypeVar("K")

ENV = "HEALTHMESH_KEY_ENCRYPTION_KEY"
ENV_FILE = "HEALTHMESH_KEY_ENCRYPTION_KEY_FILE"
KEY_TABLES = ("auth_signing_key", "shc_issuer_key", "audit_signing_key")
_ROTATED = ("auth_signing_key", "shc_issuer_key")  # the ones with retired_at
_SEALED = "-----BEGIN ENCRYPTED PRIVATE KEY-----"
MIN_LENGTH = 16

UNSEALED_WARNING = (
    "private signing keys are stored UNENCRYPTED in the database (a dump or backup carries"
    f" them): set {ENV} or {ENV_FILE} to seal them (docs/security.md)"
)


LOCAL_FILE = "key-encryption-key"


def use_local_file(data_dir: Path) -> None:
    """For a node on the embedded database of ``data_dir`` with no key-encryption key
    configured: one of its own, generated once into ``data_dir``/key-encryption-key (mode
    0600, outside the database files), so that its keys are sealed in the database and in
    any copy of it. Every command on that data directory finds the same file."""
    if os.environ.get(ENV) or os.environ.get(ENV_FILE):
        return
    path = data_dir / LOCAL_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another command made it at the same moment
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
    os.environ[ENV_FILE] = str(path)


class KeySealingError(Exception):
    """A sealed key that cannot be opened, or an unusable key-encryption key."""


def passphrase(env: str = ENV) -> bytes | None:
    """The key-encryption key, from the environment (``env``, or the file ``env``_FILE
    names); None when not set."""
    value = os.environ.get(env)
    file_env = f"{env}_FILE"
    if not value and os.environ.get(file_env):
        try:
            value = Path(os.environ[file_env]).read_text().strip()
        except OSError as error:
            raise KeySealingError(f"{file_env}: {error.strerror}") from None
    if not value:
        return None
    if len(value) < MIN_LENGTH:
        raise KeySealingError(f"{env} must be at least {MIN_LENGTH} characters")
    return value.encode()


def is_sealed(pem: str) -> bool:
    return pem.lstrip().startswith(_SEALED)


def seal(pem: str) -> str:
    """A plain private key PEM as it is to be stored: sealed when there is a passphrase."""
    secret = passphrase()
    if secret is None or is_sealed(pem):
        return pem
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret),
    ).decode()


def unseal(pem: str, secret: bytes | None = None) -> str:
    """A stored private key PEM, opened (with ``secret``, else the passphrase): plain
    PKCS #8 for the JOSE libraries."""
    if not is_sealed(pem):
        return pem
    secret = secret or passphrase()
    if secret is None:
        raise KeySealingError(f"the private keys are sealed: {ENV} (or {ENV_FILE}) must be set")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=secret)
    except ValueError:
        raise KeySealingError(f"a sealed private key does not open with this {ENV}") from None
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def active_private_key(
    conn: AsyncConnection[TupleRow], table: str, cache: dict[str, K], load: Callable[[str], K]
) -> tuple[str, K] | None:
    """(kid, key) of the newest unretired key of ``table`` (a :data:`KEY_TABLES` table with
    ``retired_at``), unsealed and made by ``load`` once per kid (kept in ``cache``); None
    when there is none. Read each time it is asked for, so that a rotation another process
    made is followed at once."""
    if table not in _ROTATED:
        raise ValueError(f"{table} holds no rotated private keys")
    cur = await conn.execute(
        sql.SQL(
            "SELECT kid, private_pem FROM {} WHERE retired_at IS NULL"
            " ORDER BY created_at DESC LIMIT 1"
        ).format(sql.Identifier(table))
    )
    row = await cur.fetchone()
    if row is None:
        return None
    kid = str(row[0])
    key = cache.get(kid)
    if key is None:
        key = cache[kid] = load(unseal(str(row[1])))
    return kid, key


async def _rewrite(conn: AsyncConnection[TupleRow], change: Callable[[str], str | None]) -> int:
    """Each key table's rows, locked, their PEM replaced by ``change`` (None: kept); how many
    changed. In the caller's transaction: an error leaves every key as it was."""
    changed = 0
    for table in KEY_TABLES:
        name = sql.Identifier(table)
        cur = await conn.execute(sql.SQL("SELECT kid, private_pem FROM {} FOR UPDATE").format(name))
        for kid, pem in await cur.fetchall():
            new = change(str(pem))
            if new is None:
                continue
            await conn.execute(
                sql.SQL("UPDATE {} SET private_pem = %s WHERE kid = %s").format(name), (new, kid)
            )
            changed += 1
    return changed


async def reseal_all(conn: AsyncConnection[TupleRow]) -> int:
    """Seal every plain private key in the key tables (start-up, with a passphrase set);
    how many were sealed."""
    if passphrase() is None:
        return 0
    sealed = await _rewrite(conn, lambda pem: None if is_sealed(pem) else seal(pem))
    if sealed:
        log.info("sealed %d private keys with the key-encryption key", sealed)
    return sealed


OLD_ENV = "HEALTHMESH_KEY_ENCRYPTION_KEY_OLD"


async def reseal_with_new_passphrase(conn: AsyncConnection[TupleRow]) -> int:
    """Change the key-encryption key: every key sealed with the old one (``OLD_ENV`` or its
    _FILE) opened and sealed again with the current one (``ENV``); plain keys sealed too.
    All in the caller's transaction: a key that opens with neither stops it, unchanged."""
    old, new = passphrase(OLD_ENV), passphrase()
    if new is None:
        raise KeySealingError(f"{ENV} (the new key-encryption key) must be set")
    if old is None:
        raise KeySealingError(
            f"{OLD_ENV} (the key-encryption key the keys are sealed with) must be set"
        )

    def again(pem: str) -> str:
        if is_sealed(pem):
            try:
                pem = unseal(pem, old)
            except KeySealingError:
                pem = unseal(pem, new)  # sealed with the new one already (a rerun)
        return seal(pem)

    return await _rewrite(conn, again)
