"""The consent condition is composed once per access context and alias, then reused: the
reused text must be exactly what composing it afresh against a real connection gives."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from healthmesh.store import consent_sql
from healthmesh.store.access import ConsentContext

CONTEXTS = [
    ConsentContext(actors=("client:app-1",)),
    ConsentContext(actors=("client:app-1", "Practitioner/p-2"), purpose="TREAT", patient="ada"),
    ConsentContext(actors=("organization:ö-3",), default_permit=False),
    ConsentContext(actors=("client:app-1",), purpose="HMARKT"),
]


@pytest.mark.parametrize("context", CONTEXTS, ids=lambda c: ",".join(c.actors))
@pytest.mark.parametrize("alias", ["r", "inc"])
def test_the_reused_consent_condition_is_the_freshly_composed_one(
    database_url: str, context: ConsentContext, alias: str
) -> None:
    r = sql.Identifier(alias)
    with psycopg.connect(database_url) as conn:
        fresh = consent_sql._consent_condition(context, r).as_string(conn)
        first = consent_sql.consent_condition(context, r).as_string(conn)
        again = consent_sql.consent_condition(context, r).as_string(conn)
    assert first == fresh
    assert again == fresh
    assert f'"{alias}".' in fresh


def test_different_patients_never_share_a_condition() -> None:
    r = sql.Identifier("r")
    ada = consent_sql.consent_condition(ConsentContext(actors=("client:a",), patient="ada"), r)
    bea = consent_sql.consent_condition(ConsentContext(actors=("client:a",), patient="bea"), r)
    assert "'ada'" in ada.as_string(None) and "'bea'" not in ada.as_string(None)
    assert "'bea'" in bea.as_string(None)
