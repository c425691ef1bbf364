"""A search query parsed into clauses, checked against the parameter registry (R4 search.html).

``subject:Patient.name=peter,paul`` becomes one :class:`Clause` on ``subject`` restricted to
Patient targets whose chained clause is ``name`` with two OR values. Repeated parameters are
separate clauses (AND). Malformed names, unknown modifiers and bad chains raise
InvalidRequest naming the parameter; unknown parameters are collected for the caller to
ignore (lenient) or refuse (strict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from healthmesh.fhir.definitions import SearchParamDef, search_params_by_type
from healthmesh.fhir.errors import InvalidRequest
from healthmesh.fhir.search_values import split_or
from healthmesh.fhir.structure import is_resource_type

# Parameters that shape results rather than select them (R4 search.html#return).
RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_offset",
        "_sort",
        "_summary",
        "_elements",
        "_total",
        "_include",
        "_revinclude",
        "_format",
        "_pretty",
        "_contained",
        "_containedType",
        "_type",
        "__offset",  # the server's own paging cursors, in next/previous links
        "__after",
        "__before",
        "__until",
    }
)
# Parameters every type has, answered from the resource row itself.
COLUMN_PARAMS = {
    "_id": SearchParamDef(
        url="http://hl7.org/fhir/SearchParameter/Resource-id",
        code="_id",
        base=("Resource",),
        type="token",
        expression="Resource.id",
    ),
    "_lastUpdated": SearchParamDef(
        url="http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
        code="_lastUpdated",
        base=("Resource",),
        type="date",
        expression="Resource.meta.lastUpdated",
    ),
}
# _list has no R4 SearchParameter resource but is defined in search.html#list.
COLUMN_PARAMS["_list"] = SearchParamDef(
    url="http://hl7.org/fhir/search.html#list",
    code="_list",
    base=("Resource",),
    type="special",
    expression=None,
)
MODIFIERS: Mapping[str, frozenset[str]] = {
    "token": frozenset({"not", "text", "missing", "of-type", "in", "not-in", "above", "below"}),
    "string": frozenset({"exact", "contains", "missing"}),
    "reference": frozenset({"missing", "identifier"}),  # plus :[Type]
    "uri": frozenset({"below", "above", "missing"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "composite": frozenset({"missing"}),
    "special": frozenset({"missing"}),
}


@dataclass(frozen=True, slots=True)
class Clause:
    """One search condition: a parameter, its modifier, OR-ed values, or a chain below it."""

    name: str  # as the client wrote it, for messages
    param: SearchParamDef
    resource_type: str  # the type the parameter applies to
    modifier: str | None = None
    values: tuple[str, ...] = ()
    target_type: str | None = None  # reference :[Type] modifier or chain type
    chain: tuple[Clause, ...] = ()  # chained clause per candidate target type
    has: Clause | None = None  # _has: the clause on the referring resources
    has_type: str | None = None
    has_reference: SearchParamDef | None = None


@dataclass(slots=True)
class ParsedQuery:
    clauses: list[Clause] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def param_for(resource_type: str, code: str) -> SearchParamDef | None:
    if code in COLUMN_PARAMS:
        return COLUMN_PARAMS[code]
    table = search_params_by_type()
    for scope in (resource_type, "DomainResource", "Resource"):
        found = table.get(scope, {}).get(code)
        if found is not None:
            return found
    return None


class UnknownParameter(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _modifier(
    name: str, param: SearchParamDef, modifier: str | None
) -> tuple[str | None, str | None]:
    """(modifier, target type) after checking the modifier applies to the parameter's type."""
    if modifier is None:
        return None, None
    if param.type == "reference" and is_resource_type(modifier):
        if param.target and modifier not in param.target:
            raise InvalidRequest(
                f"{name}: {param.code} cannot refer to a {modifier}", expression=name
            )
        return None, modifier
    if modifier not in MODIFIERS.get(param.type, frozenset()):
        raise InvalidRequest(
            f"Modifier ':{modifier}' does not apply to {param.type} parameter {param.code}",
            expression=name,
        )
    return modifier, None


def _targets(
    name: str, param: SearchParamDef, target_type: str | None, chained_code: str
) -> list[str]:
    candidates = (
        [target_type] if target_type else [t for t in param.target if t != "Resource"] or []
    )
    usable = [t for t in candidates if param_for(t, chained_code) is not None]
    if not usable:
        raise InvalidRequest(
            f"{name}: no target of {param.code} has a search parameter '{chained_code}'",
            expression=name,
        )
    return usable


def parse_clause(
    resource_type: str, name: str, value: str, *, full_name: str | None = None
) -> Clause:
    """One ``name=value`` pair on ``resource_type``; raises UnknownParameter or InvalidRequest."""
    where = full_name or name
    if name.startswith("_has:"):
        return _parse_has(resource_type, name, value, where)
    head, dot, rest = name.partition(".")
    code, _, modifier = head.partition(":")
    param = param_for(resource_type, code)
    if param is None:
        raise UnknownParameter(where)
    modifier_name, target_type = _modifier(where, param, modifier or None)
    if dot:
        if param.type != "reference":
            raise InvalidRequest(
                f"{where}: only reference parameters can be chained; {code} is a {param.type}",
                expression=where,
            )
        if modifier_name:
            raise InvalidRequest(
                f"{where}: a chained parameter takes no :{modifier_name} modifier", expression=where
            )
        chained_code = rest.partition(".")[0].partition(":")[0]
        chain = tuple(
            parse_clause(target, rest, value, full_name=where)
            for target in _targets(where, param, target_type, chained_code)
        )
        return Clause(where, param, resource_type, target_type=target_type, chain=chain)
    values = tuple(split_or(value))
    if modifier_name == "missing" and value not in ("true", "false"):
        raise InvalidRequest(f"{where} takes true or false, not '{value}'", expression=where)
    if any(v == "" for v in values) and modifier_name != "missing":
        raise InvalidRequest(f"{where} has an empty value", expression=where)
    return Clause(
        where, param, resource_type, modifier=modifier_name, values=values, target_type=target_type
    )


def _parse_has(resource_type: str, name: str, value: str, where: str) -> Clause:
    """``_has:Observation:patient:code=1234`` — resources referred to by matching Observations."""
    parts = name.split(":", 3)
    if len(parts) < 4 or not parts[3]:
        raise InvalidRequest(f"{where}: _has takes _has:Type:reference:parameter", expression=where)
    _, referring_type, reference_code, inner = parts
    if not is_resource_type(referring_type):
        raise InvalidRequest(
            f"{where}: '{referring_type}' is not a resource type", expression=where
        )
    reference = param_for(referring_type, reference_code)
    if reference is None or reference.type != "reference":
        raise InvalidRequest(
            f"{where}: {referring_type} has no reference parameter '{reference_code}'",
            expression=where,
        )
    if (
        reference.target
        and resource_type not in reference.target
        and "Resource" not in reference.target
    ):
        raise InvalidRequest(
            f"{where}: {referring_type}.{reference_code} never refers to a {resource_type}",
            expression=where,
        )
    try:
        inner_clause = parse_clause(referring_type, inner, value, full_name=where)
    except UnknownParameter:
        raise InvalidRequest(
            f"{where}: {referring_type} has no search parameter '{inner}'", expression=where
        ) from None
    return Clause(
        where,
        reference,
        resource_type,
        has=inner_clause,
        has_type=referring_type,
        has_reference=reference,
    )


def parse_query(resource_type: str, params: Sequence[tuple[str, str]]) -> ParsedQuery:
    parsed = ParsedQuery()
    for name, value in params:
        if name.partition(":")[0] in RESULT_PARAMETERS:
            continue
        try:
            parsed.clauses.append(parse_clause(resource_type, name, value))
        except UnknownParameter as unknown:
            parsed.unknown.append(unknown.name)
    return parsed
