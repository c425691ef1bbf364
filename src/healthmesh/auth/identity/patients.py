"""id_token → one local Patient id: verification, then matching against the FHIR store.

``Ial2PatientIdentifier.patient_for`` is the port the token endpoint (cms_smart
client_credentials, SPECS.md §3) and the authorization-code flow call. Every decision, match
or refusal, is handed to ``on_decision`` (audit stores it) and logged without PHI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from healthmesh.auth.identity.claims import IdentityClaims
from healthmesh.auth.identity.errors import IdentityRefused
from healthmesh.auth.identity.id_tokens import IdTokenPolicy, OneTimeIds, verify_ial2_id_token
from healthmesh.auth.identity.matching import (
    MATCHED,
    RULES,
    MatchDecision,
    Rule,
    birthdate_window,
    decide,
    demographics_of_claims,
)
from healthmesh.auth.identity.providers import IdentityProviders
from healthmesh.store.repository import Repository

DecisionSink = Callable[[IdentityClaims, MatchDecision], Awaitable[None]]

_REFUSALS = {
    "no_match": "no local patient matches the identity",
    "ambiguous": "more than one local patient matches the identity",
    "insufficient_demographics": "the identity lacks the fields any matching rule needs",
    "too_many_candidates": "too many local patients share the identity's birth date to decide",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Identification:
    patient_id: str
    claims: IdentityClaims
    decision: MatchDecision


class PatientMatcher:
    """Finds candidates in the store (blocked by birth date) and decides (matching.py)."""

    def __init__(
        self,
        repository: Repository,
        *,
        rules: tuple[Rule, ...] = RULES,
        max_candidates: int = 500,
    ) -> None:
        self.repository = repository
        self.rules = rules
        self.max_candidates = max_candidates

    async def decide(self, claims: IdentityClaims) -> MatchDecision:
        query = demographics_of_claims(claims)
        window = birthdate_window(query, self.rules)
        rows: list[tuple[str, str]] = []
        if window is not None:
            async with self.repository.session(write=False) as session:
                rows = await session.patients_born_between(*window, self.max_candidates + 1)
        truncated = len(rows) > self.max_candidates
        candidates = [(pid, orjson.loads(content)) for pid, content in rows[: self.max_candidates]]
        return decide(
            query, candidates, rules=self.rules, issuer=claims.issuer, truncated=truncated
        )

    async def match(self, claims: IdentityClaims) -> Identification:
        """Exactly one Patient, or IdentityRefused carrying the decision."""
        decision = await self.decide(claims)
        if decision.outcome != MATCHED or decision.patient_id is None:
            raise IdentityRefused(
                _REFUSALS.get(decision.outcome, decision.outcome),
                code=decision.outcome,
                decision=decision,
            )
        return Identification(patient_id=decision.patient_id, claims=claims, decision=decision)


class Ial2PatientIdentifier:
    """The ``PatientIdentifier`` port: ``await patient_for(id_token) -> Patient id``."""

    def __init__(
        self,
        repository: Repository,
        providers: IdentityProviders,
        replay: OneTimeIds,
        *,
        policy: IdTokenPolicy | None = None,
        matcher: PatientMatcher | None = None,
        on_decision: DecisionSink | None = None,
    ) -> None:
        self.providers = providers
        self.replay = replay
        self.policy = policy or IdTokenPolicy()
        self.matcher = matcher or PatientMatcher(repository)
        self.on_decision = on_decision

    async def identify(
        self,
        id_token: str,
        *,
        audiences: tuple[str, ...] | None = None,
        nonce: str | None = None,
    ) -> Identification:
        """Verify, then match; the full record for callers that keep it (audit, consent)."""
        claims = await verify_ial2_id_token(
            id_token,
            providers=self.providers,
            replay=self.replay,
            policy=self.policy,
            audiences=audiences,
            nonce=nonce,
        )
        try:
            found = await self.matcher.match(claims)
        except IdentityRefused as refused:
            if self.on_decision is not None and refused.decision is not None:
                await self.on_decision(claims, refused.decision)
            raise
        if self.on_decision is not None:
            await self.on_decision(claims, found.decision)
        return found

    async def patient_for(self, id_token: str, *, audiences: tuple[str, ...] | None = None) -> str:
        """The local Patient id the IAL2 ``id_token`` identifies, or IdentityRefused(reason).

        ``audiences``: accept these ``aud`` values instead of the provider's configured ones
        (cms_smart: the id_token was issued to the app, e.g. its client id at the provider).
        """
        return (await self.identify(id_token, audiences=audiences)).patient_id
