"""Fetch, decrypt, verify and validate what a patient shared (SHL IG, SHC spec, SPECS.md §5–7).

``Receiver.receive`` turns a scanned link or card into a :class:`Received`: the patient's
Bundle (a PatientSharedBundle, or a verified card's Bundle), the cards found on the way, and
warnings for the files that could not be used (partial data is shown, never hidden).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from healthmesh.checkin import errors
from healthmesh.checkin.bundle_rules import check_shared_bundle
from healthmesh.checkin.fetch import SafeFetcher
from healthmesh.checkin.scan import Scanned
from healthmesh.checkin.settings import CheckinSettings
from healthmesh.share import jwe
from healthmesh.share.shl import LinkPayload
from healthmesh.share.verify import CardRejected, CardVerifier, VerifiedCard

FHIR_JSON = "application/fhir+json"
HEALTH_CARD = "application/smart-health-card"
API_ACCESS = "application/smart-api-access"
EMBEDDED_MAX = 1_000_000  # ask for files inline up to this size: one round trip fewer


@dataclass(frozen=True, slots=True, kw_only=True)
class CardInfo:
    iss: str
    revoked: bool
    expired: bool
    types: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """Where the data came from, without the capability: the link url is kept as a digest."""

    kind: str  # "shl" or "shc"
    digest: str  # sha256 hex of the link url, or of the card's JWS
    label: str | None = None
    flag: str = ""
    exp: int | None = None
    issuer: str | None = None  # shc: the verified iss

    def as_json(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in {
                "kind": self.kind,
                "digest": self.digest,
                "label": self.label,
                "flag": self.flag or None,
                "exp": self.exp,
                "issuer": self.issuer,
            }.items()
            if v is not None
        }


@dataclass(slots=True, kw_only=True)
class Received:
    source: Source
    bundle: dict[str, Any]
    entries: list[tuple[str, dict[str, Any]]]
    card_bundle: bool = False  # entries use resource:N (a SMART Health Card's Bundle)
    cards: list[CardInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """The content's identity: the same share received twice has the same digest."""
        return hashlib.sha256(orjson.dumps(self.bundle, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _card_problem(error: CardRejected) -> errors.CheckinProblem:
    text = str(error)
    if "not trusted" in text:
        return errors.unknown_issuer(
            "This health card's issuer is not on this clinic's list of trusted issuers;"
            " its data cannot be relied on."
        )
    return errors.invalid_card(f"This health card is not valid: {text}.")


class Receiver:
    def __init__(self, settings: CheckinSettings, fetcher: SafeFetcher) -> None:
        self.settings = settings
        self.fetcher = fetcher

    async def receive(
        self, scanned: Scanned, *, passcode: str | None, verifier: CardVerifier
    ) -> Received:
        if scanned.link is not None:
            return await self._link(scanned.link, passcode, verifier)
        try:
            card = await verifier.verify_qr(list(scanned.card_chunks))
        except CardRejected as error:
            raise _card_problem(error) from None
        if card.revoked or card.expired:
            why = "revoked by its issuer" if card.revoked else "expired"
            raise errors.invalid_card(f"This health card was {why}; it cannot be used.")
        source = Source(kind="shc", digest=_sha256("".join(scanned.card_chunks)), issuer=card.iss)
        entries = await asyncio.to_thread(check_shared_bundle, card.bundle, card=True)
        return Received(
            source=source,
            bundle=card.bundle,
            entries=entries,
            card_bundle=True,
            cards=[_info(card)],
        )

    async def _link(
        self, link: LinkPayload, passcode: str | None, verifier: CardVerifier
    ) -> Received:
        if link.exp is not None and link.exp < time.time():
            raise errors.link_expired()
        if "P" in link.flag and not passcode:
            raise errors.passcode_required()
        recipient = self.settings.recipient
        if "U" in link.flag:
            files: list[dict[str, Any]] = [
                {"embedded": await self.fetcher.direct(link.url, recipient=recipient)}
            ]
        else:
            manifest = await self.fetcher.manifest(
                link.url,
                recipient=recipient,
                passcode=passcode if "P" in link.flag else None,
                embedded_max=EMBEDDED_MAX,
            )
            files = [f for f in manifest["files"] if isinstance(f, dict)]
        source = Source(
            kind="shl", digest=_sha256(link.url), label=link.label, flag=link.flag, exp=link.exp
        )
        return await self._files(source, link.key, files, verifier)

    async def _files(
        self, source: Source, key: str, files: list[dict[str, Any]], verifier: CardVerifier
    ) -> Received:
        warnings: list[str] = []
        if len(files) > self.settings.max_files:
            warnings.append(
                f"Only the first {self.settings.max_files} of {len(files)} files were read."
            )
            files = files[: self.settings.max_files]
        bundles: list[dict[str, Any]] = []
        cards: list[VerifiedCard] = []
        for n, file in enumerate(files, 1):
            try:
                content_type, plain = await self._open(file, key)
                if content_type == HEALTH_CARD:
                    cards += await self._cards(n, plain, verifier, warnings)
                elif content_type == FHIR_JSON:
                    bundles.append(_loads(plain))
                else:
                    warnings.append(
                        f"File {n} ({content_type}) is of a kind check-in does not read."
                    )
            except errors.CheckinProblem as problem:
                warnings.append(f"File {n} could not be used: {problem.message}")
        if bundles:
            # Validating a whole record is CPU work: off the event loop.
            entries = await asyncio.to_thread(check_shared_bundle, bundles[0])
            if len(bundles) > 1:
                warnings.append(f"{len(bundles) - 1} further Bundle(s) were not read.")
            return Received(
                source=source,
                bundle=bundles[0],
                entries=entries,
                cards=[_info(c) for c in cards],
                warnings=warnings,
            )
        if cards:
            entries = await asyncio.to_thread(check_shared_bundle, cards[0].bundle, card=True)
            return Received(
                source=source,
                bundle=cards[0].bundle,
                entries=entries,
                card_bundle=True,
                cards=[_info(c) for c in cards],
                warnings=warnings,
            )
        detail = " ".join(warnings) or "The share holds no files."
        raise errors.nothing_received(f"Nothing usable was received. {detail}")

    @staticmethod
    async def _cards(
        n: int, plain: bytes, verifier: CardVerifier, warnings: list[str]
    ) -> list[VerifiedCard]:
        try:
            found = await verifier.verify_file(_loads(plain))
        except CardRejected as error:
            raise _card_problem(error) from None
        usable = [c for c in found if not (c.revoked or c.expired)]
        if len(usable) < len(found):
            warnings.append(f"File {n}: a health card was revoked or has expired; not used.")
        return usable

    async def _open(self, file: dict[str, Any], key: str) -> tuple[str, bytes]:
        token = file.get("embedded")
        if not isinstance(token, str):
            location = file.get("location")
            if not isinstance(location, str):
                raise errors.unreachable("The file has neither embedded content nor a location.")
            token = await self.fetcher.location(location)
        try:
            plain, header = jwe.decrypt(token, key)
        except jwe.DecryptionFailed:
            raise errors.invalid_bundle("It could not be decrypted with the link's key.") from None
        content_type = file.get("contentType") or header.get("cty") or FHIR_JSON
        return str(content_type), plain


def _loads(plain: bytes) -> Any:
    try:
        return orjson.loads(plain)
    except orjson.JSONDecodeError:
        raise errors.invalid_bundle("The shared file is not JSON.") from None


def _info(card: VerifiedCard) -> CardInfo:
    return CardInfo(iss=card.iss, revoked=card.revoked, expired=card.expired, types=card.types)
