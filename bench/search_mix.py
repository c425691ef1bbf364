"""The search benchmark's query mix: each query as a FHIR URL and as hand-written SQL.

Every query draws its parameters from the loaded data (``draw``, seeded), so a sample is a
real patient, code, name or identifier. The SQL is what a person who knows the tables
(docs/storage.md, docs/search.md) would write for the same answer: joins on the index tables
instead of the compiler's correlated ``EXISTS``, the sort column joined rather than
aggregated. It returns the same page (ids in order, with content) or the same count, and
the benchmark checks that it does, sample by sample.

Assumptions the hand-written SQL makes and the compiler cannot (a person knows the data):
one ``date`` value per Observation/Encounter (Synthea writes ``effectiveDateTime`` and one
``period``), a code appearing once per resource. Where they do not hold, the check reports
the sample as a mismatch.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg

from healthmesh.fhir.search.normalize import normalize
from healthmesh.store.search.sqlbits import like_prefix

Params = dict[str, Any]
PAGE = 20  # the server's default _count
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
MRN = "http://hospital.smarthealthit.org"  # Synthea's medical record numbers


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    description: str
    shape: str  # "page", "page+include" or "count"
    patient_scoped: bool
    p95_target_ms: float | None
    url: Callable[[Params], str]  # path and query string under the server's base
    sql: str  # psycopg %(name)s placeholders
    sql_params: Callable[[Params], Params] = field(default=lambda p: p)


def _q(path: str, pairs: list[tuple[str, str]]) -> str:
    return f"/fhir/{path}?{urlencode(pairs)}"


def _day(d: datetime) -> str:
    return d.strftime("%Y-%m-%d")


# --- the queries ---------------------------------------------------------------------------

# Observations of one patient, a category or code, in a date range, newest first.
_PATIENT_OBSERVATIONS = """
SELECT r.id, r.content
FROM search_reference p
JOIN resource r ON r.res_type = p.res_type AND r.id = p.res_id
JOIN search_date d ON d.res_type = r.res_type AND d.res_id = r.id AND d.param = 'date'
WHERE p.res_type = 'Observation' AND p.param = 'patient'
  AND p.target_type = 'Patient' AND p.target_id = %(patient)s
  AND NOT r.deleted
  AND EXISTS (SELECT 1 FROM search_token t
              WHERE t.res_type = 'Observation' AND t.res_id = r.id AND t.param = %(tparam)s
                AND t.system = %(system)s AND t.code = %(code)s)
  AND d.low >= %(lo)s AND d.low < %(hi)s
ORDER BY d.high DESC, r.id
LIMIT 20
"""

LAB = Query(
    "lab by patient",
    "Observation?patient=P&category=laboratory&date=geD1&date=ltD2&_sort=-date",
    "page",
    True,
    50.0,
    lambda p: _q(
        "Observation",
        [
            ("patient", p["patient"]),
            ("category", f"{CATEGORY}|laboratory"),
            ("date", f"ge{_day(p['lo'])}"),
            ("date", f"lt{_day(p['hi'])}"),
            ("_sort", "-date"),
        ],
    ),
    _PATIENT_OBSERVATIONS,
    lambda p: p | {"tparam": "category", "system": CATEGORY, "code": "laboratory"},
)

VITALS = Query(
    "vital sign by patient",
    "Observation?patient=P&code=http://loinc.org|C&date=geD1&date=ltD2&_sort=-date",
    "page",
    True,
    50.0,
    lambda p: _q(
        "Observation",
        [
            ("patient", p["patient"]),
            ("code", f"{LOINC}|{p['code']}"),
            ("date", f"ge{_day(p['lo'])}"),
            ("date", f"lt{_day(p['hi'])}"),
            ("_sort", "-date"),
        ],
    ),
    _PATIENT_OBSERVATIONS,
    lambda p: p | {"tparam": "code", "system": LOINC},
)

REVINCLUDE = Query(
    "encounters + Provenance",
    "Encounter?patient=P&_sort=-date&_revinclude=Provenance:target",
    "page+include",
    True,
    50.0,
    lambda p: _q(
        "Encounter",
        [("patient", p["patient"]), ("_sort", "-date"), ("_revinclude", "Provenance:target")],
    ),
    """
WITH page AS MATERIALIZED (
    SELECT r.id, r.content, d.high
    FROM search_reference p
    JOIN resource r ON r.res_type = p.res_type AND r.id = p.res_id
    JOIN search_date d ON d.res_type = r.res_type AND d.res_id = r.id AND d.param = 'date'
    WHERE p.res_type = 'Encounter' AND p.param = 'patient'
      AND p.target_type = 'Patient' AND p.target_id = %(patient)s AND NOT r.deleted
    ORDER BY d.high DESC, r.id
    LIMIT 20
)
(SELECT 'match', id, content FROM page ORDER BY high DESC, id)
UNION ALL
SELECT 'include', v.id, v.content
FROM resource v
WHERE v.res_type = 'Provenance' AND NOT v.deleted
  AND v.id IN (SELECT t.res_id FROM search_reference t
               WHERE t.res_type = 'Provenance' AND t.param = 'target'
                 AND t.target_type = 'Encounter' AND t.target_id IN (SELECT id FROM page))
""",
)

NAME = Query(
    "Patient by name",
    "Patient?name=FAMILY",
    "page",
    False,
    None,
    lambda p: _q("Patient", [("name", p["name"])]),
    """
SELECT r.id, r.content
FROM resource r
WHERE r.res_type = 'Patient' AND NOT r.deleted
  AND r.id IN (SELECT s.res_id FROM search_string s
               WHERE s.res_type = 'Patient' AND s.param = 'name' AND s.norm LIKE %(pattern)s)
ORDER BY r.id
LIMIT 20
""",
    # norm is lower-cased and unaccented (docs/search.md): the same normalisation, in Python.
    lambda p: p | {"pattern": like_prefix(normalize(p["name"]))},
)

IDENTIFIER = Query(
    "Patient by identifier",
    "Patient?identifier=http://hospital.smarthealthit.org|MRN",
    "page",
    False,
    None,
    lambda p: _q("Patient", [("identifier", f"{MRN}|{p['mrn']}")]),
    """
SELECT r.id, r.content
FROM search_token t
JOIN resource r ON r.res_type = t.res_type AND r.id = t.res_id
WHERE t.res_type = 'Patient' AND t.param = 'identifier'
  AND t.system = %(system)s AND t.code = %(mrn)s AND NOT r.deleted
ORDER BY r.id
LIMIT 20
""",
    lambda p: p | {"system": MRN},
)

CHAIN = Query(
    "two-level chain",
    "Observation?encounter.patient.identifier=http://hospital.smarthealthit.org|MRN",
    "page",
    False,
    None,
    lambda p: _q("Observation", [("encounter.patient.identifier", f"{MRN}|{p['mrn']}")]),
    """
SELECT o.id, o.content
FROM search_token t
JOIN resource pt ON pt.res_type = 'Patient' AND pt.id = t.res_id AND NOT pt.deleted
JOIN search_reference ep ON ep.res_type = 'Encounter' AND ep.param = 'patient'
                        AND ep.target_type = 'Patient' AND ep.target_id = t.res_id
JOIN resource e ON e.res_type = 'Encounter' AND e.id = ep.res_id AND NOT e.deleted
JOIN search_reference oe ON oe.res_type = 'Observation' AND oe.param = 'encounter'
                        AND oe.target_type = 'Encounter' AND oe.target_id = ep.res_id
JOIN resource o ON o.res_type = 'Observation' AND o.id = oe.res_id AND NOT o.deleted
WHERE t.res_type = 'Patient' AND t.param = 'identifier'
  AND t.system = %(system)s AND t.code = %(mrn)s
ORDER BY o.id
LIMIT 20
""",
    lambda p: p | {"system": MRN},
)

COUNT = Query(
    "_summary=count, common code",
    "Observation?code=http://loinc.org|C&_summary=count",
    "count",
    False,
    200.0,
    lambda p: _q("Observation", [("code", f"{LOINC}|{p['code']}"), ("_summary", "count")]),
    """
SELECT count(*)
FROM search_token t
JOIN resource r ON r.res_type = t.res_type AND r.id = t.res_id
WHERE t.res_type = 'Observation' AND t.param = 'code'
  AND t.system = %(system)s AND t.code = %(code)s AND NOT r.deleted
""",
    lambda p: p | {"system": LOINC},
)

HAS = Query(
    "_has (Patients with a Condition)",
    "Patient?_has:Condition:patient:code=http://snomed.info/sct|C",
    "page",
    False,
    None,
    lambda p: _q("Patient", [("_has:Condition:patient:code", f"{SNOMED}|{p['code']}")]),
    """
SELECT r.id, r.content
FROM resource r
WHERE r.res_type = 'Patient' AND NOT r.deleted
  AND r.id IN (SELECT ref.target_id
               FROM search_token c
               JOIN resource cr ON cr.res_type = 'Condition' AND cr.id = c.res_id AND NOT cr.deleted
               JOIN search_reference ref ON ref.res_type = 'Condition' AND ref.res_id = c.res_id
                                        AND ref.param = 'patient' AND ref.target_type = 'Patient'
               WHERE c.res_type = 'Condition' AND c.param = 'code'
                 AND c.system = %(system)s AND c.code = %(code)s)
ORDER BY r.id
LIMIT 20
""",
    lambda p: p | {"system": SNOMED},
)

MIX: tuple[Query, ...] = (LAB, VITALS, REVINCLUDE, NAME, IDENTIFIER, CHAIN, COUNT, HAS)


# --- drawing parameters from the data ------------------------------------------------------


def _patient_observations(
    conn: psycopg.Connection[Any], patient: str, tparam: str, system: str, code: str | None
) -> list[tuple[str, datetime]]:
    """(code, date) of a patient's Observations with a category or code."""
    # The patient's Observations first (the reference index), then their rows by resource:
    # a plan that stays small whatever the planner's statistics say.
    rows = conn.execute(
        """
        WITH own AS MATERIALIZED (
            SELECT p.res_id FROM search_reference p
            WHERE p.res_type = 'Observation' AND p.param = 'patient'
              AND p.target_type = 'Patient' AND p.target_id = %(patient)s
        ), picked AS MATERIALIZED (
            SELECT own.res_id FROM own JOIN search_token t
              ON t.res_type = 'Observation' AND t.res_id = own.res_id
            WHERE t.param = %(tparam)s AND t.system = %(system)s AND t.code = %(code)s
        )
        SELECT c.code, d.low FROM picked
        JOIN search_token c ON c.res_type = 'Observation' AND c.res_id = picked.res_id
                           AND c.param = 'code' AND c.system = %(loinc)s
        JOIN search_date d ON d.res_type = 'Observation' AND d.res_id = picked.res_id
                          AND d.param = 'date'
        ORDER BY c.code, d.low
        """,
        {"patient": patient, "tparam": tparam, "system": system, "code": code, "loinc": LOINC},
    ).fetchall()
    return [(str(c), low) for c, low in rows]


def _window(rng: random.Random, around: datetime) -> tuple[datetime, datetime]:
    """A date range of 1-5 years that holds ``around``."""
    span = timedelta(days=rng.randint(365, 5 * 365))
    start = around - span * rng.random()
    # Whole UTC days: the URL says ge/lt YYYY-MM-DD, the SQL compares with their midnights.
    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    return lo, lo + timedelta(days=span.days + 1)


def draw(conn: psycopg.Connection[Any], samples: int, seed: int) -> dict[str, list[Params]]:
    """``samples`` parameter sets per query, drawn from the data with ``rng(seed)``."""
    rng = random.Random(seed)
    patients = [
        str(r[0])
        for r in conn.execute(
            "SELECT id FROM resource WHERE res_type = 'Patient' AND NOT deleted ORDER BY id"
        )
    ]
    if not patients:
        raise ValueError("the database holds no Patients")
    out: dict[str, list[Params]] = {q.name: [] for q in MIX}

    labs: list[Params] = []
    vitals: list[Params] = []
    attempts = 0
    while (len(labs) < samples or len(vitals) < samples) and attempts < 50 * samples:
        attempts += 1
        patient = rng.choice(patients)
        if len(labs) < samples:
            found = _patient_observations(conn, patient, "category", CATEGORY, "laboratory")
            if found:
                lo, hi = _window(rng, rng.choice(found)[1])
                labs.append({"patient": patient, "lo": lo, "hi": hi})
        if len(vitals) < samples:
            found = _patient_observations(conn, patient, "category", CATEGORY, "vital-signs")
            if found:
                code, when = rng.choice(found)
                lo, hi = _window(rng, when)
                vitals.append({"patient": patient, "code": code, "lo": lo, "hi": hi})
    out[LAB.name], out[VITALS.name] = labs, vitals
    out[REVINCLUDE.name] = [{"patient": rng.choice(patients)} for _ in range(samples)]

    families = [
        str(r[0])
        for r in conn.execute(
            "SELECT DISTINCT exact FROM search_string"
            " WHERE res_type = 'Patient' AND param = 'family' ORDER BY 1"
        )
    ]
    out[NAME.name] = [{"name": rng.choice(families)} for _ in range(samples)]
    mrns = [
        str(r[0])
        for r in conn.execute(
            "SELECT code FROM search_token WHERE res_type = 'Patient' AND param = 'identifier'"
            " AND system = %s ORDER BY code",
            (MRN,),
        )
    ]
    out[IDENTIFIER.name] = [{"mrn": rng.choice(mrns)} for _ in range(samples)]
    out[CHAIN.name] = [{"mrn": rng.choice(mrns)} for _ in range(samples)]
    common = [
        str(r[0])
        for r in conn.execute(
            "SELECT code FROM search_token WHERE res_type = 'Observation' AND param = 'code'"
            " AND system = %s GROUP BY code ORDER BY count(*) DESC, code LIMIT 10",
            (LOINC,),
        )
    ]
    out[COUNT.name] = [{"code": rng.choice(common)} for _ in range(samples)]
    conditions = [
        str(r[0])
        for r in conn.execute(
            "SELECT code FROM search_token WHERE res_type = 'Condition' AND param = 'code'"
            " AND system = %s GROUP BY code HAVING count(*) >= 10 ORDER BY code",
            (SNOMED,),
        )
    ]
    out[HAS.name] = [{"code": rng.choice(conditions)} for _ in range(samples)]
    return out
