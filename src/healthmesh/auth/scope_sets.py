"""Which requested scopes a client may have: containment between SMART scopes (SMART 2.2 §3).

Only what issuance needs: is every requested scope covered by one the client is allowed, or
(on refresh) by one that was granted? ``system/*.rs`` covers ``system/Observation.rs`` and
``system/Observation.r``; v1 ``read`` means v2 ``rs``, ``write`` means ``cud``, ``*`` all five;
a granular scope (``…?category=…``) is covered by itself or by the same scope without the
query. Enforcement of scopes in queries is elsewhere (the resource server's scopes module).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RESOURCE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)"
    r"\.(?P<perms>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>\S+))?"
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True, slots=True)
class ResourceScope:
    context: str  # patient | user | system
    type: str  # a resource type or "*"
    perms: frozenset[str]  # of c r u d s
    query: str | None


def parse_scope(scope: str) -> list[str]:
    """The scope string's distinct scopes, in order (RFC 6749 §3.3: space-delimited)."""
    return list(dict.fromkeys(scope.split()))


def resource_scope(scope: str) -> ResourceScope | None:
    match = _RESOURCE.fullmatch(scope)
    if match is None or not match["perms"]:
        return None
    perms = _V1.get(match["perms"], match["perms"])
    return ResourceScope(match["context"], match["type"], frozenset(perms), match["query"])


def covers(allowed: str, requested: str) -> bool:
    """True when the single scope ``allowed`` includes everything ``requested`` grants."""
    if allowed == requested:
        return True
    a, r = resource_scope(allowed), resource_scope(requested)
    if a is None or r is None:
        return False
    return (
        a.context == r.context
        and a.type in ("*", r.type)
        and r.perms <= a.perms
        and (a.query is None or a.query == r.query)
    )


def not_covered(allowed: str, requested: str) -> list[str]:
    """The requested scopes that no allowed scope covers (empty: the request may be granted)."""
    have = parse_scope(allowed)
    return [r for r in parse_scope(requested) if not any(covers(a, r) for a in have)]
