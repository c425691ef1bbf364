"""Type tests and reflection: ``is``, ``as``, ``ofType`` and ``type()`` (spec §6.3 "Types",
§10 "Reflection"; R4 fhirpath.html "Type system").

FHIR data carries FHIR types (namespace ``FHIR``); literals and computed values carry System
types. A type name without namespace is looked up in FHIR first, then System (spec §10).
FHIR inheritance follows the R4 base definitions (``Age`` is a ``Quantity``; ``code`` is a
``string``; ``Patient`` is a ``DomainResource``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from .. import structure
from .errors import FhirPathEvaluationError
from .model import Node
from .quantity import Quantity
from .temporal import Temporal

SYSTEM_TYPES: Final = frozenset(
    {"Any", "Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity"}
)


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """Result of ``type()``: a SimpleTypeInfo/ClassInfo with ``namespace`` and ``name``."""

    namespace: str
    name: str
    base_type: str | None = None

    def member(self, name: str) -> Any:
        if name == "namespace":
            return self.namespace
        if name == "name":
            return self.name
        if name == "baseType":
            return self.base_type
        return None


def system_type(value: Any) -> str | None:
    """The System type name of a System value."""
    t = type(value)
    if t is bool:
        return "Boolean"
    if t is int:
        return "Integer"
    if t is Decimal:
        return "Decimal"
    if t is str:
        return "String"
    if t is Temporal:
        kind: str = value.kind
        return kind
    if t is Quantity:
        return "Quantity"
    return None


_SUBTYPE_CACHE: dict[tuple[str, str], bool] = {}


def fhir_is_a(type_name: str, target: str) -> bool:
    """True when FHIR type ``type_name`` is ``target`` or derives from it."""
    if type_name == target:
        return True
    key = (type_name, target)
    cached = _SUBTYPE_CACHE.get(key)
    if cached is not None:
        return cached
    result = False
    current: str | None = type_name
    for _ in range(16):  # inheritance chains are short; guard against cycles
        current = structure.base_type(current) if current else None
        if current is None:
            break
        if current == target:
            result = True
            break
    _SUBTYPE_CACHE[key] = result
    return result


@dataclass(frozen=True, slots=True)
class TypeTest:
    """A resolved type specifier, ready to test items."""

    name: str
    fhir: bool  # test FHIR types
    system: bool  # test System types
    exact_primitive: bool  # as()/ofType(): FHIR primitive must match exactly (see below)

    def matches(self, item: Any) -> bool:
        if type(item) is Node:
            if not self.fhir or item.fhir_type is None:
                return False
            if self.exact_primitive and type(item.value) is not dict:
                # The official R4 suite has Patient.gender.is(string) = true but
                # Patient.gender.as(string) = {} (testFHIRPathAsFunction11/16): casts between
                # FHIR primitive types require the exact type.
                return item.fhir_type == self.name
            return fhir_is_a(item.fhir_type, self.name)
        if not self.system:
            return False
        if self.name == "Any":
            return True
        return system_type(item) == self.name


def resolve_type(namespace: str | None, name: str, *, cast: bool) -> TypeTest:
    """Resolve a type specifier; unknown unqualified names are an error (spec §6.3)."""
    if namespace == "System":
        return TypeTest(name, fhir=False, system=name in SYSTEM_TYPES, exact_primitive=cast)
    if namespace == "FHIR":
        return TypeTest(name, fhir=True, system=False, exact_primitive=cast)
    if namespace is not None:
        raise FhirPathEvaluationError(f"Unknown type namespace '{namespace}'")
    known_fhir = structure.type_def(name) is not None
    if not known_fhir and name not in SYSTEM_TYPES:
        raise FhirPathEvaluationError(f"Unknown type '{name}'")
    return TypeTest(name, fhir=known_fhir, system=name in SYSTEM_TYPES, exact_primitive=cast)


def type_info(item: Any) -> TypeInfo | None:
    if type(item) is Node:
        if item.fhir_type is None:
            return None
        return TypeInfo("FHIR", item.fhir_type, structure.base_type(item.fhir_type))
    name = system_type(item)
    if name is None:
        return None
    return TypeInfo("System", name, "System.Any")
