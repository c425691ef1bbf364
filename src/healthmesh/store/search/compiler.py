"""Clauses to one SQL condition on a resource row; sort keys; include queries.

Each clause is ``EXISTS (SELECT 1 FROM <index table> i WHERE i.res_type = T AND i.res_id =
r.id AND i.param = P AND <value match>)``; ``:not`` negates it, ``:missing`` drops the value
match. A chain ``subject:Patient.name=x`` joins ``search_reference`` to the target's resource
row and applies the chained clause there, to any depth; ``_has`` joins the other way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from psycopg import sql

from healthmesh.fhir.errors import InvalidRequest, NotSupported
from healthmesh.fhir.search.query import Clause, param_for
from healthmesh.fhir.search.registry import component_types
from healthmesh.fhir.search_values import split_escaped
from healthmesh.store.search import date, near, number, reference, shapes, string, token, uri
from healthmesh.store.search.keyset import SortColumn, SortType
from healthmesh.store.search.sqlbits import TRUE, all_of, any_of, col, like_contains
from healthmesh.store.search.tables import SYSTEM, TABLES, packed_for, row_source, value_source
from healthmesh.store.statements import Constant, Key

if TYPE_CHECKING:
    from healthmesh.store.access import Visibility

# Parameters compiled by their own rules, not by looking up their index rows.
_NOT_INDEXED = frozenset({"_id", "_lastUpdated", "_content", "_text", "_list"})


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str
    descending: bool


class Compiler:
    """Compiles clauses for one query; numbers its table aliases so nesting never collides.

    With a ``visibility`` every row a clause reaches besides the searched one — a chain's
    target, a ``_has`` referrer — must itself be visible to the caller, so a search cannot
    probe data its scopes withhold (store/access.py).
    """

    def __init__(self, base: str = "", *, visibility: Visibility | None = None):
        self.base = base
        self.visibility = visibility
        self._aliases = 0
        self._named: set[tuple[str, str]] = set()  # (row alias, id) a reference clause names
        self._records: dict[str, str] = {}  # row alias -> the patient whose record is read

    def names(self, r: sql.Identifier, target_id: str) -> bool:
        """Whether a clause compiled so far on row ``r`` requires a reference to
        ``target_id`` (one value, positive, no chain): e.g. ``Observation?patient=P``."""
        return (r.as_string(None), target_id) in self._named

    def named_patient(self, r: sql.Identifier) -> str | None:
        """The one id the clauses compiled so far on row ``r`` require a reference to, if
        exactly one: for ``Observation?patient=P``, P, whose rows the consent condition then
        decides from P's rules read once (store/consent_sql.py). A hint, never a restriction:
        with two named ids (``patient=P&encounter=E``) which is the patient is not known."""
        alias = r.as_string(None)
        if alias in self._records:
            return self._records[alias]
        ids = [id for named_alias, id in self._named if named_alias == alias]
        return ids[0] if len(ids) == 1 else None

    def reads_record_of(self, r: sql.Identifier, patient_id: str) -> None:
        """Row ``r``'s query reads one patient's record (``$everything``, the patient
        summary), so that patient is the one :meth:`named_patient` names; the query's own
        clauses select the rows, this changes none of them."""
        self._records[r.as_string(None)] = patient_id

    def _note_reference(self, c: Clause, r: sql.Identifier) -> None:
        if len(c.values) != 1 or c.modifier not in (None, "Patient"):
            return
        value = c.values[0]
        local = (
            value[len(self.base) + 1 :]
            if self.base and value.startswith(self.base + "/")
            else value
        )
        kind, _, id = local.rpartition("/")
        if kind in ("", "Patient") and id and ":" not in local:
            self._named.add((r.as_string(None), id))

    def visible(self, permission: str, r: sql.Identifier, res_type: str | None) -> sql.Composable:
        """The caller may touch row ``r`` with ``permission`` (``true`` when unrestricted)."""
        if self.visibility is None:
            return TRUE
        # A granular scope's own criteria are the grant's definition, not a probe: compile
        # them unrestricted, with this compiler's alias numbering.
        visibility, self.visibility = self.visibility, None
        try:
            return visibility.condition(permission, r, res_type=res_type, compiler=self)
        finally:
            self.visibility = visibility

    def alias(self, prefix: str) -> sql.Identifier:
        self._aliases += 1
        return sql.Identifier(f"{prefix}{self._aliases}")

    @staticmethod
    def type_of(resource_type: str, r: sql.Identifier) -> sql.Composable:
        """The row's type: a literal for type-level search, the column for system-level."""
        if resource_type == SYSTEM:
            return sql.SQL("{}.res_type").format(r)
        return Constant(resource_type)

    def where(self, clauses: Sequence[Clause], r: sql.Identifier) -> sql.Composable:
        return all_of([self.clause(c, r) for c in clauses])

    # --- one clause ----------------------------------------------------------------------
    def clause(self, c: Clause, r: sql.Identifier) -> sql.Composable:
        if (
            c.param.type == "token"
            and c.modifier in (None, "not")
            and c.has is None
            and not c.chain
            and c.param.expression is not None
            and c.param.code not in _NOT_INDEXED
        ):
            # A plain token clause: its text depends on its shape alone (store/search/shapes.py).
            start = self._aliases
            kept = shapes.kept_token_clause(
                c,
                (c.resource_type, r._obj, c.param.code, c.modifier, token.identifies(c)),
                start,
                lambda clause: self._compiled_at(clause, r, start),
            )
            if kept is not None:
                bound, used = kept
                self._aliases = start + used
                return bound
        return self._clause(c, r)

    def _compiled_at(self, c: Clause, r: sql.Identifier, start: int) -> tuple[sql.Composable, int]:
        """``c`` compiled as if the alias counter stood at ``start``, and the aliases it used;
        the counter itself is left where it was."""
        saved, self._aliases = self._aliases, start
        try:
            return self._clause(c, r), self._aliases - start
        finally:
            self._aliases = saved

    def _clause(self, c: Clause, r: sql.Identifier) -> sql.Composable:
        if c.has is not None:
            return self._has(c, r)
        if c.param.code == "_id":
            return self._id(c, r)
        if c.param.code == "_lastUpdated":
            if c.modifier == "missing":
                return sql.SQL("false") if c.values == ("true",) else sql.SQL("true")
            stamp = col(r, "last_updated")
            # The stored instant has millisecond precision: it covers [t, t + 1 ms).
            return date.condition(
                c, stamp, sql.SQL("({} + interval '1 millisecond')").format(stamp)
            )
        if c.param.code in ("_content", "_text", "_list") or c.param.type == "special":
            return self._special(c, r)
        if c.param.expression is None:  # e.g. _query: defined, but nothing to index
            raise NotSupported(
                f"Search parameter {c.param.code} is not supported", expression=c.name
            )
        if c.chain:
            return self._chain(c, r)
        if c.param.type == "composite" and c.modifier != "missing":
            return self._composite(c, r)
        kind = c.param.type
        if kind not in TABLES:
            raise NotSupported(
                f"{kind} search parameters ({c.param.code}) are not supported yet",
                expression=c.name,
            )
        table, index_param = self._index_of(c)
        source = row_source(table, c.resource_type, index_param, r)
        if kind == "reference":
            self._note_reference(c, r)
        if c.modifier in ("above", "below") and kind == "token":
            raise NotSupported(
                f"{c.name}: :{c.modifier} needs code-system subsumption, not built yet",
                expression=c.name,
            )
        i = self.alias("i")
        scope = sql.SQL("{i}.res_type = {t} AND {i}.res_id = {r}.id AND {i}.param = {p}").format(
            i=i, t=self.type_of(c.resource_type, r), r=r, p=Constant(index_param)
        )
        if c.modifier == "missing":
            exists = sql.SQL("EXISTS (SELECT 1 FROM {tb} {i} WHERE {s})").format(
                tb=source, i=i, s=scope
            )
            return sql.SQL("NOT {}").format(exists) if c.values == ("true",) else exists
        match = self._match(c, kind, i)
        exists = sql.SQL("EXISTS (SELECT 1 FROM {tb} {i} WHERE {s} AND {m})").format(
            tb=source, i=i, s=scope, m=match
        )
        # :in arrives with its ValueSet's codes as values (interactions/valuesets.py).
        return sql.SQL("NOT {}").format(exists) if c.modifier in ("not", "not-in") else exists

    @staticmethod
    def _index_of(c: Clause) -> tuple[str, str]:
        """The index table and ``param`` value a plain clause looks up (read through
        store/search/tables.py: an AuditEvent's may be packed)."""
        kind = c.param.type
        table, index_param = TABLES[kind], c.param.code
        if kind == "token":
            index_param = token.index_param(c)
        if kind == "reference" and c.modifier == "identifier":
            table, index_param = TABLES["token"], f"{c.param.code}:identifier"
        return table, index_param

    def matching_ids(self, c: Clause) -> sql.Composable | None:
        """``SELECT DISTINCT res_id AS id`` of the resources a plain, positive clause matches,
        from its index rows alone; None for clauses that need the resource row or negate.

        Index rows exist only for live current versions (a delete clears them in the same
        transaction, store/repository.py), so these ids need no ``NOT deleted`` check: a
        count over them is an index-only scan, where joining ``resource`` visits every match.
        """
        if (
            c.has is not None
            or c.chain
            or c.param.code in ("_id", "_lastUpdated", "_content", "_text", "_list")
            or c.param.expression is None
            or c.param.type not in TABLES
            or c.modifier in ("missing", "not", "not-in", "above", "below")
            or c.resource_type == SYSTEM
        ):
            return None
        table, index_param = self._index_of(c)
        if packed_for(c.resource_type, index_param):
            return None  # packed rows are looked up by their event, not by value
        i = self.alias("i")
        return sql.SQL(
            "SELECT DISTINCT {i}.res_id AS id FROM {tb} {i}"
            " WHERE {i}.res_type = {t} AND {i}.param = {p} AND {m}"
        ).format(
            i=i,
            tb=sql.Identifier(table),
            t=Constant(c.resource_type),
            p=Constant(index_param),
            m=self._match(c, c.param.type, i),
        )

    def _match(self, c: Clause, kind: str, i: sql.Identifier) -> sql.Composable:
        match kind:
            case "token":
                return token.condition(c, i)
            case "string":
                return string.condition(c, i)
            case "date":
                return date.condition(c, col(i, "low"), col(i, "high"))
            case "number":
                return number.number_search(c, i)
            case "quantity":
                return number.quantity_search(c, i)
            case "uri":
                return uri.condition(c, i)
            case _:
                if c.modifier == "identifier":
                    return token.condition(replace(c, modifier=None), i)
                return reference.condition(c, i, self.base)

    def _composite(self, c: Clause, r: sql.Identifier) -> sql.Composable:
        """``code$value``: every component matches, on one and the same element (``elem``)."""
        kinds = component_types(c.param)
        if kinds is None:
            raise NotSupported(
                f"Composite parameter {c.param.code} cannot be searched here", expression=c.name
            )
        options = []
        for raw in c.values:
            parts = split_composite(raw)
            if len(parts) != len(kinds):
                raise InvalidRequest(
                    f"{c.name} takes {len(kinds)} values joined by '$', got '{raw}'",
                    expression=c.name,
                )
            options.append(self._components(c, r, list(zip(kinds, parts, strict=True))))
        return any_of(options)

    def _components(
        self, c: Clause, r: sql.Identifier, parts: list[tuple[str, str]]
    ) -> sql.Composable:
        aliases = [self.alias("c") for _ in parts]
        first = aliases[0]
        conditions: list[sql.Composable] = []
        tables = [
            row_source(TABLES[kind], c.resource_type, f"{c.param.code}${n}", r)
            for n, (kind, _) in enumerate(parts)
        ]
        for n, ((kind, raw), i) in enumerate(zip(parts, aliases, strict=True)):
            component = replace(c, values=(raw,), modifier=None)
            scope = sql.SQL(
                "{i}.res_type = {t} AND {i}.res_id = {r}.id AND {i}.param = {p}"
            ).format(
                i=i, t=self.type_of(c.resource_type, r), r=r, p=Constant(f"{c.param.code}${n}")
            )
            if n > 0:
                scope = sql.SQL("{} AND {}.elem = {}.elem").format(scope, i, first)
            conditions.append(sql.SQL("{} AND {}").format(scope, self._match(component, kind, i)))
        # Innermost first: each later component must exist for the element the first found.
        inner: sql.Composable = sql.SQL("true")
        for n in range(len(parts) - 1, 0, -1):
            inner = sql.SQL("EXISTS (SELECT 1 FROM {tb} {i} WHERE {c} AND {rest})").format(
                tb=tables[n], i=aliases[n], c=conditions[n], rest=inner
            )
        return sql.SQL("EXISTS (SELECT 1 FROM {tb} {i} WHERE {c} AND {rest})").format(
            tb=tables[0], i=first, c=conditions[0], rest=inner
        )

    def _special(self, c: Clause, r: sql.Identifier) -> sql.Composable:
        code = c.param.code
        if code == "near":
            return any_of(
                [near.condition(c, raw, self.alias("c"), self.alias("c"), r) for raw in c.values]
            )
        if code == "_list":
            # Resources that List/[id] names in its entries (R4 search.html#list).
            i = self.alias("i")
            return sql.SQL(
                "EXISTS (SELECT 1 FROM search_reference {i} WHERE {i}.res_type = 'List' AND {i}.res_id = ANY({ids})"
                " AND {i}.param = 'item' AND {i}.target_type = {t} AND {i}.target_id = {r}.id)"
            ).format(i=i, ids=sql.Literal(list(c.values)), t=self.type_of(c.resource_type, r), r=r)
        if code in ("_content", "_text"):
            # Basic full text (R4 allows it): a case-insensitive substring of the whole resource
            # (_content) or of its narrative (_text); each comma-separated value is an OR.
            target = (
                sql.SQL("{}.content").format(r)
                if code == "_content"
                else sql.SQL("({}.content::jsonb -> 'text' ->> 'div')").format(r)
            )
            return any_of(
                [
                    sql.SQL("{} ILIKE {}").format(target, sql.Literal(like_contains(v)))
                    for v in c.values
                ]
            )
        raise NotSupported(f"Search parameter {code} is not supported", expression=c.name)

    def _id(self, c: Clause, r: sql.Identifier) -> sql.Composable:
        if c.modifier == "missing":
            return sql.SQL("false") if c.values == ("true",) else sql.SQL("true")
        ids = list(c.values)
        # Ids select one resource each: a key, unless negated (store/statements.py). One id
        # is compared as one value: PostgreSQL's generic plan for ``id = ANY($1)`` expects an
        # array of several, costs more than the custom plans for one, and so was never kept:
        # ``Patient?_id`` was planned on every execution (docs/PERFORMANCE.md).
        if c.modifier is None and len(ids) == 1:
            found = sql.SQL("{}.id = {}").format(r, Key(ids[0]))
        else:
            found = sql.SQL("{}.id = ANY({})").format(
                r, Key(ids) if c.modifier is None else sql.Literal(ids)
            )
        return sql.SQL("NOT {}").format(found) if c.modifier == "not" else found

    def _chain(self, c: Clause, r: sql.Identifier) -> sql.Composable:
        """The reference rows whose target is in the set the chained clause selects.

        The targets are an uncorrelated ``IN`` (one ``SELECT`` per target type, UNION ALL), not
        an ``EXISTS`` per type ORed together: PostgreSQL turns the ``IN`` into a semi-join it
        can start from the selective end (``encounter.patient.identifier=x`` finds the patient,
        its encounters, then their observations), where the OR left it one plan: walk every
        candidate in id order and test each (10.9 s against 12 ms at 1M resources;
        docs/PERFORMANCE.md#search).
        """
        i = self.alias("i")
        per_type: list[sql.Composable] = []
        for sub in c.chain:
            t = self.alias("t")
            per_type.append(
                sql.SQL(
                    "SELECT {tt}::text, {t}.id FROM resource {t} WHERE {t}.res_type = {tt}"
                    " AND NOT {t}.deleted AND {inner} AND {v}"
                ).format(
                    t=t,
                    tt=Constant(sub.resource_type),
                    inner=self.clause(sub, t),
                    # A chain cannot probe what the caller may not search (store/access.py).
                    v=self.visible("s", t, sub.resource_type),
                )
            )
        if not per_type:
            return sql.SQL("false")
        return sql.SQL(
            "EXISTS (SELECT 1 FROM {tb} {i} WHERE {i}.res_type = {rt} AND {i}.res_id = {r}.id"
            " AND {i}.param = {p} AND ({i}.target_type, {i}.target_id) IN ({targets}))"
        ).format(
            tb=row_source(TABLES["reference"], c.resource_type, c.param.code, r),
            i=i,
            rt=self.type_of(c.resource_type, r),
            r=r,
            p=Constant(c.param.code),
            targets=sql.SQL(" UNION ALL ").join(per_type),
        )

    def _has(self, c: Clause, r: sql.Identifier) -> sql.Composable:
        assert c.has is not None
        assert c.has_type is not None
        assert c.has_reference is not None
        i, t = self.alias("i"), self.alias("t")
        return sql.SQL(
            "EXISTS (SELECT 1 FROM {tb} {i} JOIN resource {t} ON {t}.res_type = {i}.res_type"
            " AND {t}.id = {i}.res_id WHERE {i}.res_type = {ht} AND {i}.param = {p}"
            " AND {i}.target_type = {rt} AND {i}.target_id = {r}.id AND NOT {t}.deleted AND {inner}"
            " AND {v})"
        ).format(
            v=self.visible("s", t, c.has_type),
            # Looked up by target: the view, whose packed half scans the trail.
            tb=sql.Identifier(value_source(TABLES["reference"], c.has_type, c.has_reference.code)),
            i=i,
            t=t,
            ht=Constant(c.has_type),
            p=Constant(c.has_reference.code),
            rt=self.type_of(c.resource_type, r),
            r=r,
            inner=self.clause(c.has, t),
        )

    # --- sorting -------------------------------------------------------------------------
    def sort_columns(
        self, resource_type: str, keys: Sequence[SortKey], r: sql.Identifier
    ) -> list[SortColumn]:
        """Each key's value on row ``r``, its SQL type and direction: the ORDER BY is these,
        NULLS LAST, then (res_type, id) (store/search/keyset.py)."""
        return [
            SortColumn(*self._sort_value(resource_type, key, r), key.descending) for key in keys
        ]

    def _sort_value(
        self, resource_type: str, key: SortKey, r: sql.Identifier
    ) -> tuple[sql.Composable, SortType, bool]:
        """(value, its type, whether it is a subquery on the index rows)."""
        if key.code == "_id":
            return sql.SQL("{}.id").format(r), "text", False
        if key.code == "_lastUpdated":
            return sql.SQL("{}.last_updated").format(r), "timestamp", False
        param = param_for(resource_type, key.code)
        if param is None:
            raise InvalidRequest(
                f"_sort: {resource_type} has no search parameter '{key.code}'", expression="_sort"
            )
        column = {
            "token": "code",
            "string": "norm",
            "date": "high" if key.descending else "low",
            "number": "value",
            "quantity": "value",
            "uri": "uri",
            "reference": "target_id",
        }.get(param.type)
        if column is None:
            raise InvalidRequest(
                f"_sort: {param.type} parameter {key.code} cannot be sorted on", expression="_sort"
            )
        kind: SortType = (
            "timestamp"
            if param.type == "date"
            else "numeric"
            if param.type in ("number", "quantity")
            else "text"
        )
        aggregate = sql.SQL("max" if key.descending else "min")
        i = self.alias("s")
        value = sql.SQL(
            "(SELECT {agg}({i}.{c}) FROM {tb} {i} WHERE {i}.res_type = {t} AND {i}.res_id = {r}.id AND {i}.param = {p})"
        ).format(
            agg=aggregate,
            i=i,
            c=sql.Identifier(column),
            tb=row_source(TABLES[param.type], resource_type, key.code, r),
            t=self.type_of(resource_type, r),
            r=r,
            p=Constant(key.code),
        )
        return value, kind, True


def split_composite(value: str) -> list[str]:
    """``a$b`` -> [a, b]; ``\\$`` is a literal dollar."""
    return split_escaped(value, "$")


def parse_sort(value: str | None) -> list[SortKey]:
    if not value:
        return []
    keys = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            raise InvalidRequest("_sort has an empty key", expression="_sort")
        keys.append(SortKey(part.lstrip("-"), part.startswith("-")))
    return keys
