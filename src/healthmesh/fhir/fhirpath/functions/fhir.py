"""FHIR-specific functions (R4 fhirpath.html "Additional functions") and tree navigation
(spec §5.8 children/descendants)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from ... import structure
from ..collections_ import single_value
from ..env import Env
from ..errors import FhirPathEvaluationError
from ..model import Node, children_of, resource_node
from ..typesys import fhir_is_a
from ..values import to_system
from .registry import function

_REFERENCE_RE: Final = re.compile(
    r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_CORE_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/"


@function("extension", 1)
def extension(inp: list[Any], env: Env, url: list[Any]) -> list[Any]:
    """Extensions with the given URL, also on primitives via their ``_name`` sibling."""
    wanted = single_value(url, "extension()")
    if wanted is None:
        return []
    out: list[Any] = []
    for item in inp:
        if type(item) is not Node:
            continue
        data = item.value if type(item.value) is dict else item.ext
        if not data:
            continue
        extensions = data.get("extension")
        if type(extensions) is not list:
            continue
        for ext in extensions:
            if type(ext) is dict and ext.get("url") == wanted:
                out.append(Node(ext, "Extension", "Extension"))
    return out


@function("hasValue")
def has_value(inp: list[Any], env: Env) -> list[Any]:
    if len(inp) != 1:
        return [False]
    item = inp[0]
    if type(item) is Node:
        return [item.value is not None and type(item.value) is not dict]
    return [True]


@function("getValue")
def get_value(inp: list[Any], env: Env) -> list[Any]:
    if len(inp) != 1:
        return []
    item = inp[0]
    if type(item) is Node and (item.value is None or type(item.value) is dict):
        return []
    return [to_system(item)]


@function("children")
def children(inp: list[Any], env: Env) -> list[Any]:
    out: list[Any] = []
    for item in inp:
        if type(item) is Node:
            out.extend(children_of(item))
    return out


@function("descendants")
def descendants(inp: list[Any], env: Env) -> list[Any]:
    out: list[Any] = []
    level = [item for item in inp if type(item) is Node]
    while level:
        next_level: list[Node] = []
        for item in level:
            found = children_of(item)
            out.extend(found)
            next_level.extend(found)
        level = next_level
    return out


def _reference_text(item: Any) -> tuple[str | None, str | None]:
    """(reference string, declared type) of a Reference node or a uri/canonical value."""
    if type(item) is Node:
        data = item.value
        if type(data) is dict:
            ref = data.get("reference")
            declared = data.get("type")
            return (ref if type(ref) is str else None, declared if type(declared) is str else None)
        return (data if type(data) is str else None, None)
    return (item if type(item) is str else None, None)


def _stub(resource_type: str, resource_id: str | None) -> Node:
    data: dict[str, Any] = {"resourceType": resource_type}
    if resource_id is not None:
        data["id"] = resource_id
    return Node(data, resource_type, resource_type)


def _in_root(env: Env, ref: str) -> Mapping[str, Any] | None:
    """Contained resources (``#id``) and Bundle entries (by fullUrl or type/id) of %resource."""
    root = env.root.value
    if type(root) is not dict:
        return None
    if ref.startswith("#"):
        for contained in root.get("contained") or ():
            if type(contained) is dict and contained.get("id") == ref[1:]:
                return contained
        return None
    if root.get("resourceType") == "Bundle":
        for entry in root.get("entry") or ():
            if type(entry) is not dict:
                continue
            resource = entry.get("resource")
            if type(resource) is not dict:
                continue
            full_url = entry.get("fullUrl")
            if full_url == ref:
                return resource
            rt, rid = resource.get("resourceType"), resource.get("id")
            if rt and rid and (ref == f"{rt}/{rid}" or ref.endswith(f"/{rt}/{rid}")):
                return resource
    return None


@function("resolve")
def resolve(inp: list[Any], env: Env) -> list[Any]:
    """Resolve references (R4 fhirpath.html#functions resolve()).

    Order: contained/Bundle resources, then the caller's resolver, then a stub
    ``{"resourceType": T, "id": id}`` built from the reference text, so that
    ``subject.where(resolve() is Patient)`` works during search indexing without I/O.
    """
    out: list[Any] = []
    for item in inp:
        ref, declared = _reference_text(item)
        if ref is None:
            if declared and structure.is_resource_type(declared):
                out.append(_stub(declared, None))
            continue
        found = _in_root(env, ref)
        if found is None and env.resolver is not None and not ref.startswith("#"):
            found = env.resolver(ref)
        if found is not None:
            out.append(resource_node(found))
            continue
        m = _REFERENCE_RE.fullmatch(ref)
        if m is not None and structure.is_resource_type(m.group(1)):
            out.append(_stub(m.group(1), m.group(2)))
        elif declared and structure.is_resource_type(declared):
            out.append(_stub(declared, None))
    return out


@function("conformsTo", 1)
def conforms_to(inp: list[Any], env: Env, url: list[Any]) -> list[Any]:
    """Only core profiles can be checked without a profile registry: they test the type."""
    profile = single_value(url, "conformsTo()")
    if profile is None or not inp:
        return []
    if type(profile) is not str or not profile.startswith(_CORE_PROFILE):
        raise FhirPathEvaluationError(f"conformsTo(): unknown profile {profile!r}")
    type_name = profile[len(_CORE_PROFILE) :]
    if structure.type_def(type_name) is None:
        raise FhirPathEvaluationError(f"conformsTo(): unknown profile {profile!r}")
    item = single_value(inp, "conformsTo()")
    return [
        type(item) is Node and item.fhir_type is not None and fhir_is_a(item.fhir_type, type_name)
    ]


@function("memberOf", 1)
def member_of(inp: list[Any], env: Env, valueset: list[Any]) -> list[Any]:
    raise FhirPathEvaluationError("memberOf() needs a terminology service, which is not available")


@function("htmlChecks")
def html_checks(inp: list[Any], env: Env) -> list[Any]:
    """Narrative safety is enforced by the validator, not here (R4 fhirpath.html)."""
    return [True] if inp else []
