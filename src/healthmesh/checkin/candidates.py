"""Which of the clinic's own Patients is the person checking in? Candidates, never a guess.

Candidates come from two searches run with the front desk's access (so scopes and Consents
are compiled into their SQL like any search): the shared Patient's identifiers, and its birth
date. Each candidate is graded:

- ``certain``: the same identifier (system and value), or a CMS Patient Matching rule
  (SPECS.md §4, auth/identity/matching.py) satisfied exactly;
- ``probable``: a CMS rule satisfied with its one allowed fuzzy field;
- ``possible``: same first and last name, birth date and gender — not enough for the rules,
  shown so that a person can decide.

Only a single ``certain`` candidate is suggested; with several, or none, the front desk
chooses (or picks "new patient"): matching never guesses between people.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from healthmesh.auth.identity import normalize
from healthmesh.auth.identity.matching import MATCHED, decide, demographics_of_patient
from healthmesh.checkin.summary import human_name
from healthmesh.interactions.context import FhirRequest, FhirResult
from healthmesh.interactions.dispatch import dispatch
from healthmesh.store.repository import Session

CHECKIN_SYSTEM = "https://healthmesh.example/fhir/sid/checkin-import"
MAX_CANDIDATES = 50
GRADES = ("certain", "probable", "possible")


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    id: str
    grade: str
    why: str
    name: str | None
    birth_date: str | None
    gender: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reference": f"Patient/{self.id}",
            "grade": self.grade,
            "why": self.why,
            "name": self.name,
            "birthDate": self.birth_date,
            "gender": self.gender,
        }


ReadHook = Callable[[FhirRequest, FhirResult], Awaitable[None]]


async def _search(
    session: Session, params: list[tuple[str, str]], base: str, on_read: ReadHook | None
) -> list[dict[str, Any]]:
    request = FhirRequest(
        method="GET",
        path=("Patient",),
        params=[*params, ("_count", str(MAX_CANDIDATES))],
        base=base,
        visibility=session.visibility,
    )
    result = await dispatch(session, request)
    if on_read is not None:  # the front desk's searches are accesses too: audited
        await on_read(request, result)
    # Stored content comes spliced in as orjson.Fragment (interactions/bundles.py): one
    # round trip through orjson gives plain dicts.
    body = orjson.loads(orjson.dumps(result.body or {}))
    return [
        e["resource"]
        for e in body.get("entry") or []
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e.get("search", {}).get("mode", "match") == "match"
    ]


def _identifiers(patient: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (str(i["system"]), str(i["value"]))
        for i in patient.get("identifier") or []
        if isinstance(i, dict)
        and isinstance(i.get("system"), str)
        and isinstance(i.get("value"), str)
        and i["system"] != CHECKIN_SYSTEM
    ]


def _possible(shared: dict[str, Any], theirs: dict[str, Any]) -> bool:
    a, b = demographics_of_patient(shared), demographics_of_patient(theirs)
    return bool(
        a.dob is not None
        and a.dob == b.dob
        and a.first & b.first
        and a.last & b.last
        and shared.get("gender")
        and shared.get("gender") == theirs.get("gender")
    )


def grade(shared: dict[str, Any], theirs: dict[str, Any]) -> tuple[str, str] | None:
    """(grade, why) for one of our Patients against the shared one, or None."""
    ours = set(_identifiers(theirs))
    same = [f"{s}|{v}" for s, v in _identifiers(shared) if (s, v) in ours]
    if same:
        return "certain", f"same identifier {same[0]}"
    decision = decide(demographics_of_patient(shared), [(str(theirs.get("id")), theirs)])
    if decision.outcome == MATCHED and decision.rule is not None:
        if decision.exact:
            return "certain", f"matching rule {decision.rule}"
        return (
            "probable",
            f"matching rule {decision.rule} (fuzzy {', '.join(decision.fuzzy_fields)})",
        )
    if _possible(shared, theirs):
        return "possible", "same name, birth date and gender"
    return None


async def find_candidates(
    session: Session, shared: dict[str, Any], base: str, *, on_read: ReadHook | None = None
) -> list[Candidate]:
    found: dict[str, dict[str, Any]] = {}
    for system, value in _identifiers(shared)[:5]:
        for p in await _search(session, [("identifier", f"{system}|{value}")], base, on_read):
            found[str(p["id"])] = p
    birth = shared.get("birthDate")
    if isinstance(birth, str) and normalize.birthdate(birth) is not None:
        for p in await _search(session, [("birthdate", birth)], base, on_read):
            found[str(p["id"])] = p
    graded = []
    for pid, theirs in found.items():
        verdict = grade(shared, theirs)
        if verdict is not None:
            graded.append(
                Candidate(
                    id=pid,
                    grade=verdict[0],
                    why=verdict[1],
                    name=human_name(theirs.get("name")),
                    birth_date=theirs.get("birthDate"),
                    gender=theirs.get("gender"),
                )
            )
    graded.sort(key=lambda c: (GRADES.index(c.grade), c.id))
    return graded


def suggestion(candidates: list[Candidate]) -> str | None:
    """The one candidate to preselect: only when exactly one is certain."""
    certain = [c for c in candidates if c.grade == "certain"]
    return certain[0].id if len(certain) == 1 else None
