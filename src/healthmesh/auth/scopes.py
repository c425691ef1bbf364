"""SMART scopes (App Launch 2.2 §scopes-and-launch-context), parsed into what they allow.

Resource scopes are ``<context>/<type>.<permissions>[?<query>]``:

- context ``patient`` (the launch patient's compartment), ``user`` (what the user may see),
  ``system`` (backend services: everything the client is trusted with);
- type a resource type or ``*``;
- permissions SMART v2 letters in the order ``c r u d s`` (create, read, update, delete,
  search), or SMART v1 ``read`` (= ``rs``), ``write`` (= ``cud``) and ``*`` (= ``cruds``);
- an optional query, e.g. ``?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory``,
  which narrows the scope to resources matching that search (granular scopes, §3.1.4).

Everything else (``openid``, ``fhirUser``, ``launch/patient``, ``offline_access`` …) is not
a resource scope and grants no data access by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from healthmesh.fhir.structure import is_resource_type

CONTEXTS = ("patient", "user", "system")
V2_ORDER = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"(patient|user|system)/([A-Za-z]+|\*)\.([a-z]+|\*)(?:\?(.*))?")


@dataclass(frozen=True, slots=True)
class ResourceScope:
    context: str  # patient | user | system
    res_type: str  # a resource type, or "*"
    permissions: frozenset[str]  # letters of "cruds"
    query: tuple[tuple[str, str], ...] = ()
    v1: bool = False

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


def _v2_permissions(text: str) -> frozenset[str] | None:
    """``rs`` -> {r, s}; None unless the letters are distinct, known and in c-r-u-d-s order."""
    if not text:
        return None
    positions = [V2_ORDER.find(letter) for letter in text]
    if any(p < 0 for p in positions) or positions != sorted(set(positions)):
        return None
    return frozenset(text)


def parse_resource_scope(scope: str) -> ResourceScope | None:
    """One scope string as a :class:`ResourceScope`; None for non-resource or malformed ones."""
    match = _SCOPE.fullmatch(scope)
    if match is None:
        return None
    context, res_type, perms, query = match.groups()
    if res_type != "*" and not is_resource_type(res_type):
        return None
    v1 = perms in V1_PERMISSIONS
    permissions = frozenset(V1_PERMISSIONS[perms]) if v1 else _v2_permissions(perms)
    if permissions is None:
        return None
    params: tuple[tuple[str, str], ...] = ()
    if query is not None:
        if v1 or not query:
            return None  # v1 scopes have no query form; an empty query is malformed
        params = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
        if not params or any(not name for name, _ in params):
            return None
    return ResourceScope(context, res_type, permissions, params, v1)


def resource_scopes(scope: str) -> list[ResourceScope]:
    """Every resource scope in a space-separated scope string, malformed ones dropped."""
    found = []
    for token in scope.split():
        parsed = parse_resource_scope(token)
        if parsed is not None:
            found.append(parsed)
    return found


def is_known_scope(scope: str) -> bool:
    """Whether the authorization server may grant ``scope`` (a well-formed SMART scope)."""
    if scope in ("openid", "fhirUser", "profile", "offline_access", "online_access", "launch"):
        return True
    if scope.startswith("launch/") and scope[7:] in ("patient", "encounter"):
        return True
    return parse_resource_scope(scope) is not None
