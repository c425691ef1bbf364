"""Private keys at rest are sealed with the node's key-encryption key (store/key_sealing.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import ECKey, OKPKey, RSAKey
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.keys import SigningKeys
from healthmesh.privacy import checkpoints
from healthmesh.share.issuer import IssuerKeys
from healthmesh.store import key_sealing
from healthmesh.store.key_sealing import ENV, ENV_FILE, KeySealingError

from conftest import scratch_database

SECRET = "correct horse battery staple 42"
PEMS = {
    "RSA": RSAKey.generate_key(2048, private=True).as_pem(private=True).decode(),
    "EC P-256": ECKey.generate_key("P-256", private=True).as_pem(private=True).decode(),
    "Ed25519": OKPKey.generate_key("Ed25519", private=True).as_pem(private=True).decode(),
}


@pytest.fixture
def sealing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)


@pytest.mark.parametrize("kind", sorted(PEMS))
def test_a_sealed_key_opens_only_with_the_key_encryption_key(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, SECRET)
    plain = PEMS[kind]
    sealed = key_sealing.seal(plain)
    assert key_sealing.is_sealed(sealed) and sealed != plain
    with pytest.raises(TypeError):  # no key material without the passphrase
        serialization.load_pem_private_key(sealed.encode(), password=None)
    opened = key_sealing.unseal(sealed)
    original = serialization.load_pem_private_key(plain.encode(), password=None)
    again = serialization.load_pem_private_key(opened.encode(), password=None)
    assert again.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == original.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_sealing.seal(sealed) == sealed  # sealing twice changes nothing


def test_a_sealed_key_without_or_with_the_wrong_passphrase_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, SECRET)
    sealed = key_sealing.seal(PEMS["Ed25519"])
    monkeypatch.setenv(ENV, "another secret, long enough")
    with pytest.raises(KeySealingError, match="does not open"):
        key_sealing.unseal(sealed)
    monkeypatch.delenv(ENV)
    with pytest.raises(KeySealingError, match=ENV):
        key_sealing.unseal(sealed)


def test_without_a_passphrase_keys_stay_plain_and_plain_keys_always_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(ENV_FILE, raising=False)
    assert key_sealing.seal(PEMS["RSA"]) == PEMS["RSA"]
    monkeypatch.setenv(ENV, SECRET)
    assert key_sealing.unseal(PEMS["RSA"]) == PEMS["RSA"]  # written before it was set


def test_the_passphrase_can_come_from_a_file_and_must_not_be_short(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    secret_file = tmp_path / "kek"
    secret_file.write_text(SECRET + "\n")
    monkeypatch.setenv(ENV_FILE, str(secret_file))
    assert key_sealing.passphrase() == SECRET.encode()
    monkeypatch.setenv(ENV_FILE, str(tmp_path / "missing"))
    with pytest.raises(KeySealingError, match=ENV_FILE):
        key_sealing.passphrase()
    monkeypatch.setenv(ENV, "short")
    with pytest.raises(KeySealingError, match="at least"):
        key_sealing.passphrase()


@pytest.fixture
def own_database(admin_url: str) -> Iterator[str]:
    with scratch_database(admin_url, "hm_keys") as url:
        yield url


def _stored_pems(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        return {
            table: [str(r[0]) for r in conn.execute(f"SELECT private_pem FROM {table}")]
            for table in key_sealing.KEY_TABLES
        }


def test_every_kind_of_node_key_is_stored_sealed_and_still_signs(
    own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys written before the passphrase was set: plain in the database…
    monkeypatch.delenv(ENV, raising=False)

    async def make_keys() -> None:
        async with AsyncConnectionPool(own_database, open=False) as pool:
            await SigningKeys(pool).ensure_active()
            await IssuerKeys(pool).ensure_active()
            async with pool.connection() as conn, conn.transaction():
                await checkpoints.signing_key(conn)

    asyncio.run(make_keys())
    assert all(
        not key_sealing.is_sealed(p) for pems in _stored_pems(own_database).values() for p in pems
    )

    # …sealed at the next start-up with it, and a fresh process signs with them all.
    monkeypatch.setenv(ENV, SECRET)
    checkpoints._keys.clear()

    async def reseal_and_sign() -> int:
        async with AsyncConnectionPool(own_database, open=False) as pool:
            async with pool.connection() as conn, conn.transaction():
                sealed = await key_sealing.reseal_all(conn)
            await SigningKeys(pool).signing_key()
            await IssuerKeys(pool).signing_key()
            async with pool.connection() as conn, conn.transaction():
                await checkpoints.sign_head(conn, 1, bytes(32), "periodic")
            # A key made now is sealed from the start.
            await SigningKeys(pool).rotate()
            return sealed

    assert asyncio.run(reseal_and_sign()) == 3
    stored = _stored_pems(own_database)
    assert len(stored["auth_signing_key"]) == 2
    assert all(key_sealing.is_sealed(p) for pems in stored.values() for p in pems)


def _healthmesh(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A ``healthmesh`` command with ``env`` and no key-encryption key but what it gives."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV)}
    return subprocess.run(
        [sys.executable, "-m", "healthmesh", *command],
        capture_output=True,
        text=True,
        env={**inherited, "COLUMNS": "200", **env},
        timeout=120,
        check=False,
    )


def _serve(env: dict[str, str], url: str) -> subprocess.CompletedProcess[str]:
    """``serve`` on a port nobody listens to: what it says before it would serve."""
    return _healthmesh(["serve", "--port", "9", "--database-url", url], env)


def test_a_production_node_will_not_start_with_its_keys_unsealed(database_url: str) -> None:
    refused = _serve({"HEALTHMESH_ENV": "production"}, database_url)
    assert refused.returncode == 2 and ENV in refused.stdout + refused.stderr
    short = _serve({"HEALTHMESH_ENV": "production", ENV: "short"}, database_url)
    assert short.returncode == 2 and "at least" in short.stdout + short.stderr


def _reseal(env: dict[str, str], url: str) -> subprocess.CompletedProcess[str]:
    return _healthmesh(["keys", "reseal", "--database-url", url], env)


def test_the_key_encryption_key_can_be_changed_and_a_wrong_old_one_changes_nothing(
    own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = SECRET, "a brand new key-encryption key"
    monkeypatch.setenv(ENV, old)

    async def make_keys() -> None:
        async with AsyncConnectionPool(own_database, open=False) as pool:
            await SigningKeys(pool).ensure_active()
            await IssuerKeys(pool).ensure_active()

    asyncio.run(make_keys())
    before = _stored_pems(own_database)

    wrong = _reseal(
        {ENV: new, key_sealing.OLD_ENV: "not the one they are sealed with"}, own_database
    )
    assert wrong.returncode == 2 and "does not open" in wrong.stdout + wrong.stderr
    assert _stored_pems(own_database) == before

    done = _reseal({ENV: new, key_sealing.OLD_ENV: old}, own_database)
    assert done.returncode == 0, done.stdout + done.stderr
    after = _stored_pems(own_database)
    assert after != before and all(key_sealing.is_sealed(p) for v in after.values() for p in v)
    monkeypatch.setenv(ENV, new)

    async def sign() -> None:
        async with AsyncConnectionPool(own_database, open=False) as pool:
            await SigningKeys(pool).signing_key()
            await IssuerKeys(pool).signing_key()

    asyncio.run(sign())
    monkeypatch.setenv(ENV, old)
    with pytest.raises(KeySealingError, match="does not open"):
        key_sealing.unseal(after["auth_signing_key"][0])


def test_an_embedded_node_keeps_a_key_encryption_key_of_its_own_beside_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(ENV_FILE, raising=False)
    key_sealing.use_local_file(tmp_path / "hm")
    made = tmp_path / "hm" / key_sealing.LOCAL_FILE
    assert made.stat().st_mode & 0o777 == 0o600
    first = key_sealing.passphrase()
    assert first is not None and len(first) >= key_sealing.MIN_LENGTH
    monkeypatch.delenv(ENV_FILE)
    key_sealing.use_local_file(tmp_path / "hm")  # the next command: the same key
    assert key_sealing.passphrase() == first
    # A configured key wins: nothing is made.
    monkeypatch.delenv(ENV_FILE)
    monkeypatch.setenv(ENV, SECRET)
    key_sealing.use_local_file(tmp_path / "other")
    assert not (tmp_path / "other").exists() and key_sealing.passphrase() == SECRET.encode()
