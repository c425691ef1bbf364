"""SMART scopes in plain words, for the consent page (SMART App Launch 2.2 §scopes-and-launch-context).

A person deciding what an app may see should not have to read ``patient/Observation.rs``.
Each requested scope becomes one sentence; anything not understood is shown verbatim rather
than guessed at, so nothing is hidden from the person deciding.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

# Scope grammar, v2 (``.cruds`` subsets in that order) and v1 (``.read``/``.write``/``.*``).
_RESOURCE_SCOPE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)"
    r"\.(?P<perms>c?r?u?d?s?|read|write|\*)(?:\?(?P<query>.+))?"
)

_SPECIAL = {
    "openid": "Confirm who you are, using the identity you signed in with",
    "fhirUser": "Know which patient record is yours",
    "profile": "Know which patient record is yours",
    "launch": "Open with the record already chosen in your health portal",
    "launch/patient": "Know which patient record it is working with",
    "launch/encounter": "Know which visit it is working with",
    "offline_access": "Keep access when you are not using it, until you revoke it",
    "online_access": "Keep access while you are using it",
}

_TYPE_WORDS = {
    "*": "health records",
    "AllergyIntolerance": "allergies",
    "CarePlan": "care plans",
    "CareTeam": "care team",
    "Condition": "conditions (problems and diagnoses)",
    "Coverage": "insurance coverage",
    "Device": "implanted and medical devices",
    "DiagnosticReport": "test and imaging reports",
    "DocumentReference": "documents and clinical notes",
    "Encounter": "visits and stays",
    "ExplanationOfBenefit": "claims and explanations of benefit",
    "Goal": "health goals",
    "Immunization": "immunizations",
    "Location": "care locations",
    "Medication": "medications",
    "MedicationDispense": "dispensed medications",
    "MedicationRequest": "medication prescriptions",
    "Observation": "observations (lab results, vital signs, social history)",
    "Organization": "care organizations",
    "Patient": "demographics (name, birth date, contact details)",
    "Practitioner": "clinicians",
    "PractitionerRole": "clinicians' roles",
    "Procedure": "procedures",
    "Provenance": "where records came from",
    "QuestionnaireResponse": "questionnaire answers",
    "RelatedPerson": "related people",
    "ServiceRequest": "orders and referrals",
    "Specimen": "specimens",
}

_ACTIONS = {"c": "add", "r": "see", "u": "change", "d": "delete", "s": "search"}


@dataclass(frozen=True, slots=True)
class ScopeWords:
    scope: str
    text: str
    known: bool  # False: shown verbatim, the server did not recognise it


def _type_words(res_type: str) -> str:
    if res_type in _TYPE_WORDS:
        return _TYPE_WORDS[res_type]
    return re.sub(r"(?<!^)(?=[A-Z])", " ", res_type).lower() + " records"


def _actions(perms: str) -> list[str]:
    if perms in ("read", "*"):
        perms = "rs" if perms == "read" else "cruds"
    if perms == "write":
        perms = "cud"
    words: list[str] = []
    for letter in perms:
        word = _ACTIONS[letter]
        # "see" and "search" read the same to a person: one word for both.
        if word == "search" and "see" in words:
            continue
        words.append("see" if word == "search" else word)
    return words


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _query_words(query: str) -> str:
    parts = []
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        shown = value.rsplit("|", 1)[-1] if "|" in value else value
        parts.append(f"{name.replace('-', ' ')} is {shown}")
    return " (only where " + " and ".join(parts) + ")" if parts else ""


def describe(scope: str) -> ScopeWords:
    if scope in _SPECIAL:
        return ScopeWords(scope, _SPECIAL[scope], True)
    match = _RESOURCE_SCOPE.fullmatch(scope)
    if match is None or not match["perms"]:
        return ScopeWords(scope, f"A permission this server does not describe: {scope}", False)
    actions = _join(_actions(match["perms"])).capitalize()
    whose = {
        "patient": "your",
        "user": "the",
        "system": "everyone's",
    }[match["context"]]
    what = _type_words(match["type"])
    if match["type"] == "*":
        whose = "all " + whose  # "See all your health records"
    text = f"{actions} {whose} {what}{_query_words(match['query'] or '')}"
    return ScopeWords(scope, text, True)


def is_resource_scope(scope: str) -> bool:
    return _RESOURCE_SCOPE.fullmatch(scope) is not None


def context_of(scope: str) -> str | None:
    """``patient``, ``user`` or ``system`` for a resource scope; None otherwise."""
    match = _RESOURCE_SCOPE.fullmatch(scope)
    return None if match is None else match["context"]
