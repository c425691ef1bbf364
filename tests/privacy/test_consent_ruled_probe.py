"""Whether some Consent rule may apply to a row's patient is asked correlated on the row
(store/consent_sql.py): PostgreSQL probes ``consent_rule`` per row when it expects few rows
and hashes the ruled patients once when it expects many. Both plans must decide alike.

The rules are written straight into ``consent_rule`` inside a transaction that is rolled
back, and analysed there, so that the table is large enough for the planner to tell the two
apart, as at 1M resources (the row estimate ANALYZE writes in place outlives the rollback:
it informs plans only, never what a query answers); the rows decided are a derived table of (type, id, patient),
which is all the condition reads of a row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from healthmesh.store import consent_sql
from healthmesh.store.access import APPLY, ConsentContext
from healthmesh.store.statements import bind

RUN = uuid.uuid4().hex[:8]
PATIENTS = 3000  # every even-numbered one opted out
SYSTEM = ConsentContext(actors=("client:probe-test",), rules=APPLY)
# How EXPLAIN shows the probe, the CASE's second test (other sub-plans, e.g. the label test
# of the rows no rule applies to, may be hashed or not by their own estimates).
PROBE = "WHEN (NOT ("


def _rows(count: int) -> sql.Composable:
    return sql.SQL(
        "(SELECT 'Observation'::text AS res_type, {run} || '-o' || g AS id,"
        " {run} || '-p' || (g % {n}) AS patient_id FROM generate_series(1, {count}) g) r"
    ).format(run=sql.Literal(RUN), n=sql.Literal(PATIENTS), count=sql.Literal(count))


def _decided(conn: psycopg.Connection[tuple[object, ...]], count: int) -> tuple[set[str], str]:
    condition = consent_sql.consent_condition(SYSTEM, sql.Identifier("r"))
    statement = sql.SQL("SELECT r.id FROM {rows} WHERE {c}").format(rows=_rows(count), c=condition)
    text, params = bind(statement)
    plan = "\n".join(str(p[0]) for p in conn.execute(b"EXPLAIN " + text, params).fetchall())
    visible = {str(row[0]) for row in conn.execute(text, params).fetchall()}
    return visible, plan


def _expected(count: int) -> set[str]:
    return {f"{RUN}-o{g}" for g in range(1, count + 1) if (g % PATIENTS) % 2 == 1}


@pytest.fixture
def ruled(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO consent_rule (consent_id, n, patient_id, effect, depth)"
            " SELECT %(run)s || '-c' || p, 0, %(run)s || '-p' || p, 'deny', 0"
            " FROM generate_series(0, %(n)s - 1) p WHERE p %% 2 = 0",
            {"run": RUN, "n": PATIENTS},
        )
        conn.execute("ANALYZE consent_rule")
        try:
            yield conn
        finally:
            conn.rollback()


def test_a_row_expected_alone_is_probed_per_row_and_decided_by_its_rules(
    ruled: psycopg.Connection[tuple[object, ...]],
) -> None:
    for count in (1, 2):  # patient p1 permitted by default, p2 opted out
        visible, plan = _decided(ruled, count)
        assert f"{PROBE}SubPlan" in plan and f"{PROBE}hashed SubPlan" not in plan, plan
        assert visible == _expected(count)


def test_many_rows_hash_the_ruled_patients_and_are_decided_alike(
    ruled: psycopg.Connection[tuple[object, ...]],
) -> None:
    visible, plan = _decided(ruled, 2 * PATIENTS)
    assert f"{PROBE}hashed SubPlan" in plan, plan
    assert visible == _expected(2 * PATIENTS)
    assert len(visible) == PATIENTS  # half of each patient's two rows are withheld
