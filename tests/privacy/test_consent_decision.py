"""The edges of the consent condition's one-decision form (store/consent_sql.py and
``consent_decides``, migration 0024): depths compared across two Consents of one patient,
the prefilter of patients some rule may apply to, rows with no category, and aliases of the
caller's query.

The data: Ada and Bob, each with a lab Observation, a PSY-labelled one and their Patient
row. Consents are written over HTTP (so they become ``consent_rule`` rows the way they do in
production) and removed after each case; each case states the rows a backend sees.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from healthmesh.fhir.consent import CATEGORY_SYSTEM, CLIENT_ID_SYSTEM
from healthmesh.store import consent_sql
from healthmesh.store.access import APPLY, ConsentContext, RowRule, Visibility

from conftest import open_node_holding, scratch_database

MIGRATIONS = resources.files("healthmesh.store").joinpath("migrations")
RUN = uuid.uuid4().hex[:8]
ADA, BOB = f"ada-{RUN}", f"bob-{RUN}"
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
SCOPE = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
    ]
}
RECIPIENT = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}
LABS = [{"coding": [{"system": CATEGORY_SYSTEM, "code": "labs"}]}]
LAB_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _obs(id: str, patient: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "category": [{"coding": [{"system": LAB_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }


RECORDS = [
    record
    for who in (ADA, BOB)
    for record in (
        {"resourceType": "Patient", "id": who},
        _obs(f"{who}-lab", who),
        _obs(f"{who}-psy", who, meta={"security": [PSY]}),
    )
]
ROW_IDS = [r["id"] for r in RECORDS]
EVERY_ROW = frozenset(ROW_IDS)
UNLABELLED = EVERY_ROW - {f"{ADA}-psy", f"{BOB}-psy"}


def _consent(patient: str, provision: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": SCOPE,
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "provision": provision,
    }


def _app(client: str) -> list[dict[str, Any]]:
    identifier = {"system": CLIENT_ID_SYSTEM, "value": client}
    return [{"role": RECIPIENT, "reference": {"identifier": identifier}}]


PERMIT_PSY = {"type": "permit", "securityLabel": [PSY]}

# state -> (Consents, rows the backend "client:backend" may see)
CASES: dict[str, tuple[list[dict[str, Any]], frozenset[str]]] = {
    # Two Consents, a deny and a permit of equal depth: deny wins, across Consents too.
    "equal-depth deny and permit of two Consents": (
        [_consent(ADA, {"type": "deny"}), _consent(ADA, {"type": "permit"})],
        UNLABELLED - {ADA, f"{ADA}-lab"},
    ),
    # A permit naming PSY does not outrank a deny of its own depth in another Consent ...
    "labelled permit and a deny of equal depth": (
        [_consent(ADA, PERMIT_PSY), _consent(ADA, {"type": "deny", "code": LABS})],
        UNLABELLED - {f"{ADA}-lab"},
    ),
    # ... but a deeper one does: the PSY row shows, the labs deny still holds elsewhere.
    "labelled permit deeper than the deny": (
        [_consent(ADA, {"type": "deny", "code": LABS, "provision": [PERMIT_PSY]})],
        (UNLABELLED - {f"{ADA}-lab"}) | {f"{ADA}-psy"},
    ),
    # Ada permits everyone but app X: her permit applies to this backend, names no label,
    # so her PSY row stays withheld; the deny for app X does not apply.
    "a permit for all, a deny for another app": (
        [_consent(ADA, {"type": "permit", "provision": [{"type": "deny", "actor": _app("x")}]})],
        UNLABELLED,
    ),
    # Ada's only rule names another app: she is not among the patients some rule may apply
    # to for this backend, and her rows get the defaults (her PSY row withheld).
    "a rule for another app only": (
        [_consent(ADA, {"type": "deny", "actor": _app("x")})],
        UNLABELLED,
    ),
    # A labs deny on rows without that category (a Patient row has none) leaves them be.
    "a category deny and rows without categories": (
        [_consent(BOB, {"type": "permit", "provision": [{"type": "deny", "code": LABS}]})],
        UNLABELLED - {f"{BOB}-lab"},
    ),
}
BACKEND = ConsentContext(actors=("client:backend",), rules=APPLY)


@pytest.fixture(scope="module")
def database_url(admin_url: str) -> Iterator[str]:
    """Own database: the prefilter looks at every Consent in consent_rule."""
    with scratch_database(admin_url, "hm_decision") as url:
        yield url


@pytest.fixture(scope="module")
def open_node(database_url: str) -> Iterator[httpx.Client]:
    with open_node_holding(database_url, RECORDS) as http:
        yield http


def _rows(
    database_url: str, context: ConsentContext, alias: str = "r", named: str | None = None
) -> set[str]:
    """The rows of RECORDS the condition lets through; ``named``: as in a search whose own
    clauses name that patient (``Observation?patient=…``), which still reaches every row
    here, the named patient's and the other's."""
    r = sql.Identifier(alias)
    if named is None:
        visibility = Visibility({"s": (RowRule(),)}, consent=context)
        condition = visibility.condition("s", r, res_type=None)
    else:
        condition = consent_sql.consent_condition(context, r, named)
    query = sql.SQL("SELECT {r}.id FROM resource {r} WHERE {r}.id = ANY({ids}) AND {c}").format(
        r=r, ids=sql.Literal(ROW_IDS), c=condition
    )
    with psycopg.connect(database_url) as conn:
        return {str(row[0]) for row in conn.execute(query).fetchall()}


@pytest.fixture
def consents(open_node: httpx.Client) -> Iterator[list[str]]:
    written: list[str] = []
    yield written
    for consent_id in written:
        assert open_node.delete(f"/Consent/{consent_id}").status_code in (200, 204)


def _write(open_node: httpx.Client, written: list[str], resources: list[dict[str, Any]]) -> None:
    for n, consent in enumerate(resources):
        consent_id = f"d{n}-{RUN}"
        response = open_node.put(f"/Consent/{consent_id}", json={**consent, "id": consent_id})
        assert response.status_code in (200, 201), response.text
        written.append(consent_id)


@pytest.mark.parametrize("case", list(CASES))
def test_the_decision_compares_depths_of_every_applicable_rule_of_the_patient(
    open_node: httpx.Client, database_url: str, consents: list[str], case: str
) -> None:
    resources, visible = CASES[case]
    _write(open_node, consents, resources)
    assert _rows(database_url, BACKEND) == set(visible)


@pytest.mark.parametrize("alias", ["r", "t", "v", "c", "x", "ca"])
def test_the_condition_means_the_same_under_any_alias_of_the_callers_row(
    open_node: httpx.Client, database_url: str, consents: list[str], alias: str
) -> None:
    """The condition's own sub-selects must not capture the caller's alias: the callers'
    (``r``, ``t`` in ``_include``, ``v`` in history) and short names an inner alias could
    plausibly take. The condition's own aliases (cv, cxp, cx_label, cx_plabel, cx_deny,
    cx_permit, cx_cat) are reserved."""
    resources, visible = CASES["labelled permit deeper than the deny"]
    _write(open_node, consents, resources)
    assert _rows(database_url, BACKEND, alias) == set(visible)


# --- the shortcuts agree with the full decision ---------------------------------------------
# Most rows are settled without the decision as 0024 wrote it: rows of patients no rule
# applies to get the defaults (store/consent_sql.py: the sensitive-label default as a probe
# of the row's labels), and ``consent_decides`` itself (migrations 0026, 0028) withholds a row
# a deny covers by its type alone before it looks the row's index rows up, and computes the
# depths from the patient's rules read once. The oracle is 0024's function,
# unchanged, on every row a patient owns: with no applicable rule it is the defaults too.
TREAT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
OBSERVATIONS = [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]
SHORTCUT_CASES: dict[str, list[dict[str, Any]]] = {
    **{name: consents for name, (consents, _) in CASES.items()},
    "opt-out": [_consent(ADA, {"type": "deny"})],
    "opt-out but for treatment": [
        _consent(ADA, {"type": "deny", "provision": [{"type": "permit", "purpose": [TREAT]}]})
    ],
    "opt-out but for app x": [
        _consent(ADA, {"type": "deny", "provision": [{"type": "permit", "actor": _app("x")}]})
    ],
    "opt-out but PSY for everyone": [_consent(BOB, {"type": "deny", "provision": [PERMIT_PSY]})],
    "no Observations": [_consent(BOB, {"type": "permit", "provision": [
        {"type": "deny", "class": OBSERVATIONS}]})],
    "no labs, but labs for app x": [_consent(ADA, {"type": "permit", "provision": [
        {"type": "deny", "code": LABS, "provision": [{"type": "permit", "actor": _app("x")}]}
    ]})],
    "no labs for treatment": [_consent(BOB, {"type": "permit", "provision": [
        {"type": "deny", "code": LABS, "purpose": [TREAT]}]})],
    "an opt-out that ended": [_consent(ADA, {"type": "deny", "period": {"end": "2001-01-01"}})],
    "everyone a different rule": [
        _consent(ADA, {"type": "deny", "code": LABS}),
        _consent(BOB, {"type": "deny", "actor": _app("backend")}),
    ],
}  # fmt: skip
SHORTCUT_CONTEXTS = {
    "backend": BACKEND,
    "backend, for treatment": ConsentContext(actors=("client:backend",), purpose="TREAT", rules=APPLY),
    "app x": ConsentContext(actors=("client:x",), rules=APPLY),
    "Ada's app x": ConsentContext(actors=("client:x",), patient=ADA, rules=APPLY),
    "Bob's backend app": ConsentContext(actors=("client:backend",), patient=BOB, rules=APPLY),
    "backend, opt-in network": ConsentContext(
        actors=("client:backend",), default_permit=False, rules=APPLY
    ),
    "Ada's app x, opt-in network": ConsentContext(
        actors=("client:x",), patient=ADA, default_permit=False, rules=APPLY
    ),
}  # fmt: skip


def _decision_of_0024() -> str:
    """Migration 0024's ``consent_decides``, as ``pg_temp.decides_0024``."""
    text = (MIGRATIONS / "0024_consent_functions.sql").read_text()
    function = text[text.index("CREATE OR REPLACE FUNCTION consent_decides(") :]
    return function.replace("FUNCTION consent_decides(", "FUNCTION pg_temp.decides_0024(", 1)


def _full_decision_rows(database_url: str, context: ConsentContext) -> set[str]:
    r = sql.Identifier("r")
    decides = consent_sql._decides(context, r).as_string(None)
    assert decides.startswith("consent_decides(")
    query = sql.SQL(
        "SELECT r.id FROM resource r WHERE r.id = ANY({ids})"
        " AND (r.patient_id IS NULL OR {decides})"
    ).format(ids=sql.Literal(ROW_IDS), decides=sql.SQL("pg_temp.decides_0024" + decides[15:]))
    with psycopg.connect(database_url) as conn:
        conn.execute(_decision_of_0024())
        return {str(row[0]) for row in conn.execute(query).fetchall()}


@pytest.mark.parametrize("case", list(SHORTCUT_CASES))
def test_the_shortcuts_decide_every_row_as_the_full_decision_would(
    open_node: httpx.Client, database_url: str, consents: list[str], case: str
) -> None:
    _write(open_node, consents, SHORTCUT_CASES[case])
    for name, context in SHORTCUT_CONTEXTS.items():
        expected = _full_decision_rows(database_url, context)
        assert _rows(database_url, context) == expected, name
        # A search naming a patient decides that patient's rows from the rules read once
        # per query (migration 0031), and every other row as before.
        for named in (ADA, BOB, f"nobody-{RUN}"):
            assert _rows(database_url, context, named=named) == expected, (name, named)
